//! `MILLRACE_WEBHOOK_*`: how long and how often deliveries are retried, how many are made at
//! once, and how long finished ones stay in the log.

use std::time::Duration;

use millrace_common::{ConfigError, Settings};

/// A century: PostgreSQL's intervals and timestamps hold it, and nobody keeps a log longer.
const MAX_RETENTION_DAYS: u64 = 36_500;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// How long after an event its delivery is retried before it is marked failed
    /// (`MILLRACE_WEBHOOK_RETRY_FOR_SECS`, a day).
    pub retry_for: Duration,
    /// The first retry's delay; each next one doubles it, with jitter
    /// (`MILLRACE_WEBHOOK_RETRY_BASE_MS`).
    pub retry_base: Duration,
    /// The longest delay between two attempts (`MILLRACE_WEBHOOK_RETRY_MAX_MS`).
    pub retry_max: Duration,
    /// Time limit of one POST, connect to last byte (`MILLRACE_WEBHOOK_TIMEOUT_MS`).
    pub timeout: Duration,
    /// How often a replica looks for due deliveries when it found none
    /// (`MILLRACE_WEBHOOK_POLL_MS`).
    pub poll: Duration,
    /// Deliveries one replica makes at once (`MILLRACE_WEBHOOK_CONCURRENCY`).
    pub concurrency: usize,
    /// How long a claimed delivery stays this replica's: the POST's time limit and 30 s, so a
    /// replica that dies mid-delivery leaves the row to the others once it runs out, and one
    /// that is merely slow has recorded its attempt long before.
    pub lease: Duration,
    /// How long a finished delivery (delivered or given up) and its attempts stay in the run's
    /// log before the delivery loop deletes them (`MILLRACE_WEBHOOK_RETENTION_DAYS`, 30).
    pub retention: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            retry_for: Duration::from_secs(86_400),
            retry_base: Duration::from_secs(10),
            retry_max: Duration::from_secs(3600),
            timeout: Duration::from_secs(10),
            poll: Duration::from_secs(1),
            concurrency: 16,
            lease: Duration::from_secs(40),
            retention: Duration::from_secs(30 * 86_400),
        }
    }
}

impl WebhookConfig {
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let ms = |duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        let retry_for = Duration::from_secs(settings.positive("WEBHOOK_RETRY_FOR_SECS", defaults.retry_for.as_secs())?);
        let retry_base = Duration::from_millis(settings.positive("WEBHOOK_RETRY_BASE_MS", ms(defaults.retry_base))?);
        let retry_max = Duration::from_millis(settings.positive("WEBHOOK_RETRY_MAX_MS", ms(defaults.retry_max))?);
        if retry_max < retry_base {
            return Err(ConfigError::new(
                "WEBHOOK_RETRY_MAX_MS",
                format!("must be at least MILLRACE_WEBHOOK_RETRY_BASE_MS ({})", ms(retry_base)),
            ));
        }
        let timeout = Duration::from_millis(settings.positive("WEBHOOK_TIMEOUT_MS", ms(defaults.timeout))?);
        let poll = Duration::from_millis(settings.positive("WEBHOOK_POLL_MS", ms(defaults.poll))?);
        let concurrency = settings.positive("WEBHOOK_CONCURRENCY", defaults.concurrency)?;
        let lease = timeout + Duration::from_secs(30);
        let days: u64 = settings.positive("WEBHOOK_RETENTION_DAYS", defaults.retention.as_secs() / 86_400)?;
        if days > MAX_RETENTION_DAYS {
            return Err(ConfigError::new("WEBHOOK_RETENTION_DAYS", format!("must be at most {MAX_RETENTION_DAYS}")));
        }
        let retention = Duration::from_secs(days * 86_400);
        Ok(Self { retry_for, retry_base, retry_max, timeout, poll, concurrency, lease, retention })
    }

    /// The wait after the `attempts`-th failed attempt: `base · 2^(attempts−1)` capped at `max`,
    /// of which a random half is taken off ("equal jitter"), so that retries of many deliveries
    /// to one receiver spread out but never come sooner than half the backoff.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let exponent = attempts.saturating_sub(1).min(30);
        let full = self.retry_base.saturating_mul(1 << exponent).min(self.retry_max);
        let half = full / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_retry_for_a_day() {
        let config = WebhookConfig::from_settings(&Settings::default()).unwrap();
        assert_eq!(config, WebhookConfig::default());
        assert_eq!(config.retry_for, Duration::from_secs(86_400));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let config = WebhookConfig {
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_millis(1000),
            ..WebhookConfig::default()
        };
        for _ in 0..50 {
            let first = config.backoff(1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100), "{first:?}");
            let third = config.backoff(3);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400), "{third:?}");
            let late = config.backoff(40);
            assert!(late >= Duration::from_millis(500) && late <= Duration::from_millis(1000), "{late:?}");
        }
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (name, value) in [
            ("MILLRACE_WEBHOOK_RETRY_FOR_SECS", "0"),
            ("MILLRACE_WEBHOOK_RETRY_BASE_MS", "soon"),
            ("MILLRACE_WEBHOOK_RETRY_MAX_MS", "1"),
            ("MILLRACE_WEBHOOK_TIMEOUT_MS", "0"),
            ("MILLRACE_WEBHOOK_POLL_MS", "0"),
            ("MILLRACE_WEBHOOK_CONCURRENCY", "0"),
            ("MILLRACE_WEBHOOK_RETENTION_DAYS", "0"),
            ("MILLRACE_WEBHOOK_RETENTION_DAYS", "36501"),
        ] {
            let err = WebhookConfig::from_settings(&Settings::from_pairs([(name, value)])).unwrap_err();
            assert_eq!(err.variable, name, "{value}");
        }
    }
}
