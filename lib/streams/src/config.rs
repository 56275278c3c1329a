//! Knobs of a stream worker, all configurable so tests can run with short timeouts.

use std::time::Duration;

use millrace_common::{ConfigError, Settings};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub stream: String,
    pub group: String,
    pub consumer: String,
    pub dead_letter_stream: String,
    /// Entries processed at once by this replica.
    pub concurrency: usize,
    /// How long one `XREADGROUP` blocks waiting for new entries.
    pub block: Duration,
    /// An entry pending this long without a heartbeat is presumed lost and reclaimed.
    pub visibility_timeout: Duration,
    pub reclaim_interval: Duration,
    /// Deliveries after which an entry is dead-lettered instead of handled again.
    pub max_deliveries: u64,
    pub trim_interval: Duration,
    /// How long a deferred entry ([`HandlerError::Deferred`](crate::HandlerError::Deferred)) is
    /// held before it goes back to the end of the stream, so that a stage whose downstream is
    /// down does not spin re-reading it (a gate stops the reads themselves).
    pub defer_delay: Duration,
    /// How long shutdown waits for in-flight entries before leaving them to be reclaimed.
    pub drain_deadline: Duration,
    /// How often the stream's length, lag and pending entries and the permits in use are
    /// sampled into gauges (`MILLRACE_METRICS_INTERVAL_MS`).
    pub metrics_interval: Duration,
    /// Consumers of the group idle this long with nothing pending are removed, at each trim:
    /// replicas that went away (a Kubernetes pod's name changes with every restart) would
    /// otherwise stay in the group for good.
    pub retire_idle_consumers: Duration,
}

impl WorkerConfig {
    /// Reads `MILLRACE_CONCURRENCY`, `MILLRACE_BLOCK_MS`, `MILLRACE_VISIBILITY_TIMEOUT_MS`,
    /// `MILLRACE_RECLAIM_INTERVAL_MS`, `MILLRACE_MAX_DELIVERIES`, `MILLRACE_TRIM_INTERVAL_MS`,
    /// `MILLRACE_DEFER_DELAY_MS`, `MILLRACE_METRICS_INTERVAL_MS`,
    /// `MILLRACE_RETIRE_IDLE_CONSUMERS_MS` (all optional).
    pub fn from_settings(
        settings: &Settings,
        stream: String,
        group: String,
        dead_letter_stream: String,
        consumer: String,
        drain_deadline: Duration,
        default_concurrency: usize,
    ) -> Result<Self, ConfigError> {
        let config = Self {
            stream,
            group,
            consumer,
            dead_letter_stream,
            concurrency: settings.positive("CONCURRENCY", default_concurrency)?,
            block: settings.duration_ms("BLOCK_MS", 2_000)?,
            visibility_timeout: settings.duration_ms("VISIBILITY_TIMEOUT_MS", 60_000)?,
            reclaim_interval: settings.duration_ms("RECLAIM_INTERVAL_MS", 5_000)?,
            max_deliveries: settings.positive("MAX_DELIVERIES", 5)?,
            trim_interval: settings.duration_ms("TRIM_INTERVAL_MS", 30_000)?,
            defer_delay: settings.duration_ms("DEFER_DELAY_MS", 1_000)?,
            drain_deadline,
            metrics_interval: millrace_common::metrics::sample_interval(settings)?,
            retire_idle_consumers: settings.duration_ms("RETIRE_IDLE_CONSUMERS_MS", 3_600_000)?,
        };
        if config.visibility_timeout < Duration::from_millis(100) {
            return Err(ConfigError::new("VISIBILITY_TIMEOUT_MS", "must be at least 100"));
        }
        if config.reclaim_interval.is_zero() {
            return Err(ConfigError::new("RECLAIM_INTERVAL_MS", "must be greater than zero"));
        }
        Ok(config)
    }
}
