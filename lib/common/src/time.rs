//! Wall-clock helpers: job records carry RFC 3339 timestamps and millisecond scores; daily
//! budgets reset at 00:00 UTC; `Retry-After` is given in whole seconds.

use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub fn now_millis() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// RFC 3339 text for a millisecond timestamp.
pub fn rfc3339_from_millis(millis: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// How long until the next 00:00 UTC (when a daily budget resets).
pub fn until_utc_midnight() -> Duration {
    let now = OffsetDateTime::now_utc();
    let elapsed = now - now.replace_time(time::Time::MIDNIGHT);
    Duration::from_secs(86_400).saturating_sub(Duration::try_from(elapsed).unwrap_or_default())
}

/// A wait as `Retry-After` seconds: rounded up and at least 1, so a client that waits that
/// long finds capacity.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_at_least_a_second() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        let left = until_utc_midnight();
        assert!(left > Duration::ZERO && left <= Duration::from_secs(86_400), "{left:?}");
    }
}
