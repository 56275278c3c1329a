//! How long to pause before retrying a failure that another attempt can fix: exponential
//! backoff with full jitter (a pause drawn uniformly from zero to
//! `min(max_delay, base · 2^retry)`), or exactly the downstream's `Retry-After` when it gave one.
//!
//! A `Retry-After` longer than `max_delay` is not shortened: a retry before the downstream's
//! quota returns is a sure failure that also spends quota. [`RetryPolicy::pause`] says to give
//! up instead, so the caller (who knows whether the work can wait) decides. The loop itself is
//! the caller's (the gateway's moves the next attempt to another upstream without a pause).

use std::time::{Duration, SystemTime};

use millrace_common::{ConfigError, Settings};
use rand::Rng as _;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts after the first.
    pub max_retries: u32,
    /// The ceiling of the first backoff pause; it doubles with each retry.
    pub base_delay: Duration,
    /// The longest pause, and the longest `Retry-After` waited out.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_retries: 3, base_delay: Duration::from_millis(250), max_delay: Duration::from_secs(10) }
    }
}

impl RetryPolicy {
    /// Reads `{prefix}MAX_RETRIES` (0 or more), `{prefix}RETRY_BASE_MS` and
    /// `{prefix}RETRY_MAX_MS` (not below the base), defaults as [`Default`]. An error names
    /// the variable.
    pub fn from_settings(settings: &Settings, prefix: &str) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let ms = |default: Duration| u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
        let base_name = format!("{prefix}RETRY_BASE_MS");
        let max_name = format!("{prefix}RETRY_MAX_MS");
        let policy = Self {
            max_retries: settings.get_or(&format!("{prefix}MAX_RETRIES"), defaults.max_retries)?,
            base_delay: Duration::from_millis(settings.positive(&base_name, ms(defaults.base_delay))?),
            max_delay: Duration::from_millis(settings.positive(&max_name, ms(defaults.max_delay))?),
        };
        if policy.max_delay < policy.base_delay {
            return Err(ConfigError::new(&max_name, format!("must not be below MILLRACE_{base_name}")));
        }
        Ok(policy)
    }

    /// The pause before retry number `retry` (0 for the first). With `after` (the downstream's
    /// `Retry-After`) that exact pause if it is within `max_delay`, else None: give up now.
    /// Without it, full jitter: uniform in `[0, min(max_delay, base_delay · 2^retry)]`.
    pub fn pause(&self, retry: u32, after: Option<Duration>) -> Option<Duration> {
        if let Some(wait) = after {
            return (wait <= self.max_delay).then_some(wait);
        }
        let ceiling = self.base_delay.saturating_mul(2u32.saturating_pow(retry)).min(self.max_delay);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Some(Duration::from_millis(rand::rng().random_range(0..=millis)))
    }
}

/// A `Retry-After` value relative to `now`: delta-seconds (`"120"`, or fractional `"1.5"` as
/// some APIs send) or an HTTP-date (RFC 9110's three forms). A date in the past is
/// `Duration::ZERO`; anything else (negative, garbage) is None.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        let secs: f64 = value.parse().ok()?;
        return Duration::try_from_secs_f64(secs).ok();
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_and_defaults() {
        assert_eq!(RetryPolicy::from_settings(&Settings::default(), "").unwrap(), RetryPolicy::default());
        let settings = Settings::from_pairs([
            ("MILLRACE_LLM_MAX_RETRIES", "0"),
            ("MILLRACE_LLM_RETRY_BASE_MS", "100"),
            ("MILLRACE_LLM_RETRY_MAX_MS", "2000"),
        ]);
        assert_eq!(
            RetryPolicy::from_settings(&settings, "LLM_").unwrap(),
            RetryPolicy { max_retries: 0, base_delay: Duration::from_millis(100), max_delay: Duration::from_secs(2) }
        );
        let below = Settings::from_pairs([("RETRY_BASE_MS", "500"), ("RETRY_MAX_MS", "100")]);
        assert_eq!(RetryPolicy::from_settings(&below, "").unwrap_err().variable, "MILLRACE_RETRY_MAX_MS");
        let negative = Settings::from_pairs([("MAX_RETRIES", "-1")]);
        assert_eq!(RetryPolicy::from_settings(&negative, "").unwrap_err().variable, "MILLRACE_MAX_RETRIES");
        let zero = Settings::from_pairs([("RETRY_BASE_MS", "0")]);
        assert_eq!(RetryPolicy::from_settings(&zero, "").unwrap_err().variable, "MILLRACE_RETRY_BASE_MS");
    }

    #[test]
    fn backoff_is_capped_and_jittered_within_its_ceiling() {
        let policy =
            RetryPolicy { max_retries: 10, base_delay: Duration::from_millis(100), max_delay: Duration::from_secs(1) };
        for retry in 0..10 {
            let ceiling = Duration::from_millis(100 * 2u64.pow(retry)).min(Duration::from_secs(1));
            for _ in 0..20 {
                assert!(policy.pause(retry, None).unwrap() <= ceiling);
            }
        }
        assert!(policy.pause(u32::MAX, None).unwrap() <= Duration::from_secs(1));
        // Jittered: not always the ceiling.
        let pauses: std::collections::BTreeSet<_> = (0..50).map(|_| policy.pause(3, None)).collect();
        assert!(pauses.len() > 1);
    }

    #[test]
    fn retry_after_is_honoured_exactly_or_not_at_all() {
        let policy = RetryPolicy { max_delay: Duration::from_secs(10), ..RetryPolicy::default() };
        assert_eq!(policy.pause(0, Some(Duration::from_secs(3))), Some(Duration::from_secs(3)));
        assert_eq!(policy.pause(5, Some(Duration::from_secs(10))), Some(Duration::from_secs(10)));
        assert_eq!(policy.pause(0, Some(Duration::from_secs(11))), None);
    }

    #[test]
    fn retry_after_in_seconds_fractions_and_dates() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("1.5", now), Some(Duration::from_millis(1500)));
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));

        // An HTTP-date has whole seconds: 5 s ahead of `now` is between 4 and 5 s away.
        let ahead = httpdate::fmt_http_date(now + Duration::from_secs(5));
        let wait = parse_retry_after(&ahead, now).unwrap();
        assert!(wait > Duration::from_secs(4) && wait <= Duration::from_secs(5), "{ahead}: {wait:?}");
        let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let ahead = httpdate::fmt_http_date(whole + Duration::from_secs(5));
        assert_eq!(parse_retry_after(&ahead, whole), Some(Duration::from_secs(5)));
        // RFC 9110's obsolete forms too.
        assert_eq!(parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Sun Nov  6 08:49:37 1994", now), Some(Duration::ZERO));

        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now), Some(Duration::ZERO));
        for garbage in ["soon", "", "-1", "1e400", "NaN", "inf", "3 seconds", "12abc"] {
            assert_eq!(parse_retry_after(garbage, now), None, "{garbage:?}");
        }
    }
}
