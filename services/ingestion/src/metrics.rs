//! The ingestion service's metrics, named once here, and the sampler of jobs by status.
//!
//! Jobs by status come from the counts the job scripts keep in Redis (`JobStore::status_counts`,
//! one HGETALL per sample), so they describe the whole deployment: every ingestion replica
//! reports the same figures, and dashboards take `max`, not `sum`.

use std::time::Duration;

use millrace_common::metrics::{Metric, describe, spawn_sampler};
use millrace_pipeline::{JobStatus, JobStore};
use tokio_util::sync::CancellationToken;

pub const JOBS_SUBMITTED: &str = "millrace_ingestion_jobs_submitted_total";
pub const JOBS_UNCHANGED: &str = "millrace_ingestion_jobs_unchanged_total";
/// Submissions refused, by `reason` (the error code a client saw, `queue_full` or
/// `llm_budget_spent`).
pub const REQUESTS_REJECTED: &str = "millrace_ingestion_requests_rejected_total";
pub const URLS_REFUSED: &str = "millrace_ingestion_urls_refused_total";
/// Jobs queued or running now, by `status`.
pub const JOBS_ACTIVE: &str = "millrace_ingestion_jobs_active";
/// Jobs that finished, by `status` (`completed`, `failed`, `cancelled`).
pub const JOBS_FINISHED: &str = "millrace_ingestion_jobs_finished_total";
/// Dead-lettered entries retried and refused through the dead-letter API, by `stage`.
pub const DEAD_LETTERS_RETRIED: &str = "millrace_ingestion_dead_letters_retried_total";
pub const DEAD_LETTERS_REFUSED: &str = "millrace_ingestion_dead_letters_refused_total";

pub const ACTIVE_STATUSES: [JobStatus; 2] = [JobStatus::Queued, JobStatus::Running];
pub const FINAL_STATUSES: [JobStatus; 3] = [JobStatus::Completed, JobStatus::Failed, JobStatus::Cancelled];

pub const METRICS: &[Metric] = &[
    Metric::counter(JOBS_SUBMITTED, "Jobs accepted and queued for chunking by this replica."),
    Metric::counter(
        JOBS_UNCHANGED,
        "Submissions identical to the document's visible version, completed at once by this replica.",
    ),
    Metric::counter(REQUESTS_REJECTED, "Submissions refused by this replica, by reason."),
    Metric::counter(URLS_REFUSED, "Submitted URLs refused by the address rules (SSRF guard)."),
    Metric::gauge(JOBS_ACTIVE, "Jobs queued or running now, in the whole deployment, by status."),
    Metric::counter(
        JOBS_FINISHED,
        "Jobs that finished, in the whole deployment, by status (completed, failed, cancelled).",
    ),
    Metric::counter(DEAD_LETTERS_RETRIED, "Dead-lettered entries retried through the dead-letter API, by stage."),
    Metric::counter(
        DEAD_LETTERS_REFUSED,
        "Dead-lettered entries a retry refused (job cancelled, completed or expired), by stage.",
    ),
];

/// Describes the service's metrics and registers its counters at zero.
pub fn register() {
    describe(METRICS);
    metrics::counter!(JOBS_SUBMITTED).increment(0);
    metrics::counter!(JOBS_UNCHANGED).increment(0);
    metrics::counter!(URLS_REFUSED).increment(0);
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
