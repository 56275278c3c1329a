//! The durable history: runs, their items and every job, in PostgreSQL, so that a day's work
//! can be listed and reported after Redis has expired its keys. Written by the [`worker`] from
//! the history stream; runs' items are submitted by the [`feeder`]; webhooks of runs are handed
//! over by [`hooks`].

pub mod feeder;
pub mod hooks;
pub mod jobs;
pub mod runs;
pub mod store;
pub mod worker;

use std::time::Duration;

use millrace_common::ServiceConfig;
use millrace_pipeline::JobStore;
use millrace_streams::{StreamWorker, WorkerConfig};
use tokio_util::sync::CancellationToken;

pub use self::store::{HistoryError, HistoryStore};

/// Starts the history worker on this replica (until `stop`), once the database answers.
/// Without a database it does not start: entries wait on the stream for a replica that has one.
pub fn spawn_worker(
    service: &ServiceConfig,
    jobs: JobStore,
    history: HistoryStore,
    hooks: hooks::Hooks,
    redis: redis::Client,
    metrics_interval: Duration,
    stop: CancellationToken,
) {
    if !history.is_configured() {
        return;
    }
    let keys = jobs.keys().clone();
    let config = WorkerConfig {
        stream: keys.history_stream(),
        group: worker::GROUP.to_owned(),
        consumer: service.consumer_name.clone(),
        dead_letter_stream: format!("{}:dlq", keys.history_stream()),
        concurrency: worker::CONCURRENCY,
        block: Duration::from_secs(2),
        visibility_timeout: Duration::from_secs(60),
        reclaim_interval: Duration::from_secs(5),
        max_deliveries: 20,
        trim_interval: Duration::from_secs(30),
        defer_delay: Duration::from_secs(1),
        drain_deadline: service.shutdown_deadline,
        metrics_interval,
        retire_idle_consumers: Duration::from_secs(3600),
    };
    let pool = jobs.pool().clone();
    let handler = worker::HistoryHandler { jobs, history, hooks };
    tokio::spawn(async move {
        // Entries wait on the stream while the database is away: reading them now would only
        // defer them again and again.
        let mut logged = false;
        while let Err(err) = handler.history.client().await {
            if !logged {
                tracing::warn!(error = %err, "history unavailable; the history worker waits for it");
                logged = true;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        let worker = StreamWorker::new(config, redis, pool, handler);
        if let Err(err) = worker.run(stop).await {
            tracing::error!(error = %err, "history worker stopped");
        }
    });
}
