//! The ingestion service's metrics, named once here, and the sampler of jobs by status.
//!
//! Jobs by status come from the counts the job scripts keep in Redis (`JobStore::status_counts`,
//! one HGETALL per sample), so they describe the whole deployment: every ingestion replica
//! reports the same figures, and dashboards take `max`, not `sum`.

use std::time::Duration;

use millrace_common::metrics::{describe, spawn_sampler};
use millrace_pipeline::{JobStatus, JobStore};
use tokio_util::sync::CancellationToken;

millrace_common::declare_metrics! {
    JOBS_SUBMITTED: counter("millrace_ingestion_jobs_submitted_total", "Jobs accepted and queued for chunking by this replica.");
    JOBS_UNCHANGED: counter("millrace_ingestion_jobs_unchanged_total", "Submissions identical to the document's visible version, completed at once by this replica.");
    /// Submissions refused, by `reason` (the error code a client saw, `queue_full` or
    /// `llm_budget_spent`).
    REQUESTS_REJECTED: counter("millrace_ingestion_requests_rejected_total", "Submissions refused by this replica, by reason.");
    URLS_REFUSED: counter("millrace_ingestion_urls_refused_total", "Submitted URLs refused by the address rules (SSRF guard).");
    /// Jobs queued or running now, by `status`.
    JOBS_ACTIVE: gauge("millrace_ingestion_jobs_active", "Jobs queued or running now, in the whole deployment, by status.");
    /// Jobs that finished, by `status` (`completed`, `failed`, `cancelled`).
    JOBS_FINISHED: counter("millrace_ingestion_jobs_finished_total", "Jobs that finished, in the whole deployment, by status (completed, failed, cancelled).");
    /// Dead-lettered entries retried and refused through the dead-letter API, by `stage`.
    DEAD_LETTERS_RETRIED: counter("millrace_ingestion_dead_letters_retried_total", "Dead-lettered entries retried through the dead-letter API, by stage.");
    WEBHOOKS_DELIVERED: counter("millrace_ingestion_webhooks_delivered_total", "Webhook deliveries a receiver answered with 2xx, made by this replica.");
    WEBHOOKS_RETRIED: counter("millrace_ingestion_webhook_retries_total", "Webhook attempts that failed (no 2xx, time-out, refused address) and will be retried, made by this replica.");
    WEBHOOKS_FAILED: counter("millrace_ingestion_webhooks_failed_total", "Webhook deliveries given up after the retry window (MILLRACE_WEBHOOK_RETRY_FOR_SECS), by this replica.");
    WEBHOOK_DELIVERY_LAG: histogram("millrace_ingestion_webhook_delivery_lag_seconds", "Time from an event to its webhook's successful delivery, retries included, in seconds.");
    WEBHOOKS_PENDING: gauge("millrace_ingestion_webhooks_pending", "Webhook deliveries not yet delivered nor given up, in the whole deployment.");
    WEBHOOK_OLDEST_PENDING: gauge("millrace_ingestion_webhook_oldest_pending_seconds", "Age of the oldest webhook delivery not yet delivered nor given up, in seconds.");
    DEAD_LETTERS_REFUSED: counter("millrace_ingestion_dead_letters_refused_total", "Dead-lettered entries a retry refused (job cancelled, completed or expired), by stage.");
    /// Reranked searches' calls to the reranker, by `outcome` (`ok`, or `error`: the gateway
    /// failed, its breaker was open or the model's answer was unusable).
    RERANK_DURATION: histogram("millrace_ingestion_rerank_duration_seconds", "Time the LLM reranker took to order a search's results (one llm-gateway call and reading its answer), in seconds, by outcome.");
}

pub const ACTIVE_STATUSES: [JobStatus; 2] = [JobStatus::Queued, JobStatus::Running];
pub const FINAL_STATUSES: [JobStatus; 3] = [JobStatus::Completed, JobStatus::Failed, JobStatus::Cancelled];

/// Describes the service's metrics (and the `millrace_breaker_*` of the reranker's breaker toward
/// the gateway, made after this) and registers its counters at zero.
pub fn register() {
    describe(METRICS);
    describe(millrace_resilience::metrics::METRICS);
    metrics::counter!(JOBS_SUBMITTED).increment(0);
    metrics::counter!(JOBS_UNCHANGED).increment(0);
    metrics::counter!(URLS_REFUSED).increment(0);
    metrics::counter!(WEBHOOKS_DELIVERED).increment(0);
    metrics::counter!(WEBHOOKS_RETRIED).increment(0);
    metrics::counter!(WEBHOOKS_FAILED).increment(0);
}

/// Samples jobs by status every `interval` until `stop`.
pub fn sample_jobs(jobs: JobStore, interval: Duration, stop: CancellationToken) {
    spawn_sampler(interval, stop, move || {
        let jobs = jobs.clone();
        async move {
            match jobs.status_counts().await {
                Ok(counts) => {
                    for status in ACTIVE_STATUSES {
                        metrics::gauge!(JOBS_ACTIVE, "status" => status.as_str()).set(counts.get(status) as f64);
                    }
                    for status in FINAL_STATUSES {
                        metrics::counter!(JOBS_FINISHED, "status" => status.as_str()).absolute(counts.get(status));
                    }
                }
                Err(err) => tracing::debug!(error = %err, "cannot sample jobs by status"),
            }
        }
    });
}
