//! The stage worker's metrics, labelled by `stage` (the consumer group: chunking, metadata,
//! embeddings, storage), and the sampler that reports the state of the stage's stream.
//!
//! The stream figures are the same for every replica of a stage (they are Redis' view of the
//! group), so each replica reports them and dashboards take `max by (stage)`; the permits are
//! each replica's own, so dashboards sum them.

use std::sync::Arc;

use millrace_common::metrics::{describe, spawn_sampler};
use redis::streams::StreamPendingReply;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::{StreamError, WorkerConfig};

millrace_common::declare_metrics! {
    /// Entries handled, by `outcome`: `ok`, `retry` (failed, will be redelivered), `deferred`
    /// (downstream unavailable, re-queued) or `dead_letter` (given up).
    MESSAGES: counter("millrace_stage_messages_total", "Stream entries handled by a stage, by outcome (ok, retry, deferred, dead_letter). An entry is a job for chunking and a batch for the other stages.");
    HANDLER_DURATION: histogram("millrace_stage_handler_duration_seconds", "Time a stage's handler took for one stream entry, in seconds.");
    DEAD_LETTERS: counter("millrace_stage_dead_letters_total", "Entries moved to the stage's dead-letter stream (their job failed).");
    RECLAIMED: counter("millrace_stage_reclaimed_total", "Entries taken over from a consumer that stopped answering (idle past the visibility timeout).");
    PAUSED: gauge("millrace_stage_paused", "1 while the stage's breaker toward its downstream keeps it from reading its stream.");
    STREAM_LENGTH: gauge("millrace_stage_stream_length", "Entries in the stage's stream (XLEN), acknowledged ones not yet trimmed included.");
    STREAM_LAG: gauge("millrace_stage_stream_lag", "Entries of the stage's stream not yet delivered to its consumer group.");
    STREAM_PENDING: gauge("millrace_stage_stream_pending", "Entries delivered to the stage's consumers and not yet acknowledged.");
    DEAD_LETTER_STREAM_LENGTH: gauge("millrace_stage_dead_letter_stream_length", "Entries in the stage's dead-letter stream.");
    PERMITS_IN_USE: gauge("millrace_stage_permits_in_use", "Concurrency permits of this replica's worker held by entries in flight (its pending entries in the group).");
    PERMITS_AVAILABLE: gauge("millrace_stage_permits_available", "Concurrency permits of this replica's worker free for new entries.");
}

/// The outcomes of [`MESSAGES`].
pub const OUTCOMES: [&str; 4] = ["ok", "retry", "deferred", "dead_letter"];

/// Describes the worker's metrics, registers its counters at zero (so that rates and alerts see
/// a series before the first event) and samples the stream and this consumer's entries in flight
/// every `config.metrics_interval` until `stop`.
///
/// Entries in flight are read from Redis (this consumer's count in the group's pending entries)
/// rather than from the semaphore, whose free permits the read loop holds while it blocks
/// waiting for new entries: an idle worker's semaphore looks full.
pub(crate) fn start(config: &WorkerConfig, pool: deadpool_redis::Pool, stop: CancellationToken) {
    describe(METRICS);
    let stage = config.group.clone();
    for outcome in OUTCOMES {
        metrics::counter!(MESSAGES, "stage" => stage.clone(), "outcome" => outcome).increment(0);
    }
    metrics::counter!(DEAD_LETTERS, "stage" => stage.clone()).increment(0);
    metrics::counter!(RECLAIMED, "stage" => stage.clone()).increment(0);

    let config = Arc::new(config.clone());
    spawn_sampler(config.metrics_interval, stop, move || {
        let (pool, config) = (pool.clone(), config.clone());
        async move {
            if let Err(error) = sample(&pool, &config).await {
                // Stale gauges are better than none; the worker itself logs Redis trouble.
                debug!(stream = %config.stream, %error, "cannot sample the stream's state");
            }
        }
    });
}

async fn sample(pool: &deadpool_redis::Pool, config: &WorkerConfig) -> Result<(), StreamError> {
    let stage = config.group.clone();
    let mut conn = pool.get().await?;
    let queue = crate::queue_stats(&mut conn, &config.stream, &config.group, &config.dead_letter_stream).await?;
    metrics::gauge!(STREAM_LENGTH, "stage" => stage.clone()).set(queue.length as f64);
    metrics::gauge!(STREAM_LAG, "stage" => stage.clone()).set(queue.lag as f64);
    metrics::gauge!(STREAM_PENDING, "stage" => stage.clone()).set(queue.pending as f64);
    metrics::gauge!(DEAD_LETTER_STREAM_LENGTH, "stage" => stage.clone()).set(queue.dead_letters as f64);

    let in_flight = if queue.pending == 0 {
        0
    } else {
        let summary: StreamPendingReply =
            redis::cmd("XPENDING").arg(&config.stream).arg(&config.group).query_async(&mut conn).await?;
        match summary {
            StreamPendingReply::Data(data) => {
                data.consumers.iter().find(|c| c.name == config.consumer).map_or(0, |c| c.pending)
            }
            _ => 0,
        }
    };
    let in_use = in_flight.min(config.concurrency);
    metrics::gauge!(PERMITS_IN_USE, "stage" => stage.clone()).set(in_use as f64);
    metrics::gauge!(PERMITS_AVAILABLE, "stage" => stage).set((config.concurrency - in_use) as f64);
    Ok(())
}
