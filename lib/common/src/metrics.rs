//! Metric descriptions and periodic sampling, so that every crate names its metrics in one
//! list (which `/metrics` turns into `# HELP` lines) and every service samples slow-moving
//! state (queue lengths, job counts, spend) the same way.
//!
//! Names follow Prometheus conventions: `millrace_<stage>_<thing>_<unit>`, counters end in
//! `_total`, durations are histograms in `_seconds`, labels are low-cardinality (never a job
//! or document id). docs/observability.md lists them all.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{ConfigError, Settings};

/// How often a service samples what it reports as gauges, unless `MILLRACE_METRICS_INTERVAL_MS`
/// says otherwise.
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric: its name, its type and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

impl Metric {
    pub const fn counter(name: &'static str, help: &'static str) -> Self {
        Self { name, kind: Kind::Counter, help }
    }

    pub const fn gauge(name: &'static str, help: &'static str) -> Self {
        Self { name, kind: Kind::Gauge, help }
    }

    pub const fn histogram(name: &'static str, help: &'static str) -> Self {
        Self { name, kind: Kind::Histogram, help }
    }
}

/// Declares a crate's metrics, each written once: a `pub const` holding its name (for the
/// `metrics::counter!` calls) and an entry of `METRICS`, the table [`describe`] registers.
///
/// ```
/// millrace_common::declare_metrics! {
///     /// Documents parsed.
///     DOCUMENTS: counter("millrace_example_documents_total", "Documents parsed.");
///     PARSE_DURATION: histogram("millrace_example_parse_duration_seconds", "Time one parse took, in seconds.");
/// }
/// assert_eq!(DOCUMENTS, "millrace_example_documents_total");
/// assert_eq!(METRICS.len(), 2);
/// ```
#[macro_export]
macro_rules! declare_metrics {
    ($($(#[$attr:meta])* $name:ident : $kind:ident($metric:literal, $help:literal);)*) => {
        $($(#[$attr])* pub const $name: &str = $metric;)*

        /// Every metric declared here, with its type and help text.
        pub const METRICS: &[$crate::metrics::Metric] = &[$($crate::metrics::Metric::$kind($name, $help),)*];
    };
}

/// Registers the descriptions of `metrics` with the process's Prometheus recorder. The recorder
/// is installed first if it is not yet: a description given to no recorder would be lost.
pub fn describe(metrics: &[Metric]) {
    let _ = crate::server::metrics_handle();
    for metric in metrics {
        match metric.kind {
            Kind::Counter => metrics::describe_counter!(metric.name, metric.help),
            Kind::Gauge => metrics::describe_gauge!(metric.name, metric.help),
            Kind::Histogram => metrics::describe_histogram!(metric.name, metric.help),
        }
    }
}

/// `MILLRACE_METRICS_INTERVAL_MS`: how often sampled gauges are refreshed.
pub fn sample_interval(settings: &Settings) -> Result<Duration, ConfigError> {
    let default = u64::try_from(DEFAULT_SAMPLE_INTERVAL.as_millis()).unwrap_or(u64::MAX);
    Ok(Duration::from_millis(settings.positive("METRICS_INTERVAL_MS", default)?))
}

/// Runs `sample` at once and then every `interval` until `stop` is cancelled, on a task of its
/// own. A slow sample delays the next one rather than piling up.
pub fn spawn_sampler<F, Fut>(interval: Duration, stop: CancellationToken, mut sample: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                () = sample() => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_is_configurable_and_must_be_positive() {
        assert_eq!(sample_interval(&Settings::default()).unwrap(), DEFAULT_SAMPLE_INTERVAL);
        let settings = Settings::from_pairs([("METRICS_INTERVAL_MS", "250")]);
        assert_eq!(sample_interval(&settings).unwrap(), Duration::from_millis(250));
        let settings = Settings::from_pairs([("METRICS_INTERVAL_MS", "0")]);
        assert_eq!(sample_interval(&settings).unwrap_err().variable, "MILLRACE_METRICS_INTERVAL_MS");
    }
}
