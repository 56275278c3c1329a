//! The history worker: reads the history stream (`Keys::history_stream`, consumer group
//! `history`, on every replica) and writes what each entry names into PostgreSQL. Entries only
//! say what to look at: a job's row is written from its record as it is when the entry is
//! handled, so an entry handled twice or late changes nothing (`upsert_job` never moves a row
//! back), and a job whose record has expired is left as it was last recorded.

use millrace_pipeline::{HistoryEntry, Job, JobStatus, JobStore};
use millrace_streams::{Handler, HandlerError, Message};
use serde_json::json;

use super::hooks::{self, Hooks};
use super::runs::summary;
use super::store::{HistoryError, HistoryStore};

/// The consumer group of the history stream.
pub const GROUP: &str = "history";
/// Entries handled at once per replica (each holds a database connection).
pub const CONCURRENCY: usize = 4;

#[derive(Clone)]
pub struct HistoryHandler {
    pub jobs: JobStore,
    pub history: HistoryStore,
    pub hooks: Hooks,
}

fn failed(err: HistoryError) -> HandlerError {
    if err.is_outage() { HandlerError::Deferred(err.to_string()) } else { HandlerError::Retry(err.to_string()) }
}

fn redis_failed(err: millrace_pipeline::JobStoreError) -> HandlerError {
    if err.is_retryable() { HandlerError::Deferred(err.to_string()) } else { HandlerError::Retry(err.to_string()) }
}

impl HistoryHandler {
    async fn job(&self, job_id: &str, finished: bool) -> Result<(), HandlerError> {
        let Some(job) = self.jobs.get(job_id).await.map_err(redis_failed)? else {
            tracing::debug!(job_id, "job record gone before its history entry was read");
            return Ok(());
        };
        self.history.upsert_job(&job).await.map_err(failed)?;
        if let Some(run_id) = job.run_id.as_deref().filter(|id| !id.is_empty()) {
            // A crawler's page job carries its page in `source` (the crawler fetched it); one
            // that `retry-failed` made again is a URL job.
            let page = if job.url.is_empty() { &job.source } else { &job.url };
            if !page.is_empty() {
                self.history.record_crawl_page(run_id, page, &job.document_id, &job.job_id).await.map_err(failed)?;
            }
            if finished {
                self.job_hook(run_id, &job).await?;
            }
        }
        Ok(())
    }

    /// `job.completed` / `job.failed` for a run that asked for them.
    async fn job_hook(&self, run_id: &str, job: &Job) -> Result<(), HandlerError> {
        let event = match job.status {
            JobStatus::Completed => hooks::Event::JobCompleted,
            JobStatus::Failed => hooks::Event::JobFailed,
            _ => return Ok(()),
        };
        let Some(run) = self.history.run(run_id).await.map_err(failed)? else { return Ok(()) };
        let Some(spec) = hooks::spec_of(&run) else { return Ok(()) };
        if !spec.events.contains(&event) {
            return Ok(());
        }
        let body = json!({ "event": event.as_str(), "run_id": run_id, "job": job });
        let event_id = format!("{}:{}:{}", job.job_id, job.attempts, event.as_str());
        self.hooks.enqueue(&run, &spec, event, event_id, body).await.map_err(HandlerError::Retry)
    }

    async fn run_done(&self, run_id: &str) -> Result<(), HandlerError> {
        // Entries of its last jobs may still be on their way: read those jobs first, so that
        // the summary counts them as they ended.
        for job_id in self.history.unfinished_jobs(run_id).await.map_err(failed)? {
            if let Some(job) = self.jobs.get(&job_id).await.map_err(redis_failed)? {
                self.history.upsert_job(&job).await.map_err(failed)?;
            }
        }
        let Some(run) = self.history.finish_run(run_id).await.map_err(failed)? else {
            return Ok(());
        };
        tracing::info!(run_id, tenant = %run.tenant, "run done");
        let Some(spec) = hooks::spec_of(&run) else { return Ok(()) };
        if !spec.events.contains(&hooks::Event::RunCompleted) {
            return Ok(());
        }
        let totals = self.history.run_totals(run_id).await.map_err(failed)?;
        let body = summary(&run, &totals, Some("done"), 0);
        let event_id = format!("{run_id}:{}:run.completed", run.completions);
        self.hooks.enqueue(&run, &spec, hooks::Event::RunCompleted, event_id, body).await.map_err(HandlerError::Retry)
    }
}

impl Handler for HistoryHandler {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
        let entry = HistoryEntry::from_fields(&message.fields).map_err(HandlerError::Fatal)?;
        match entry {
            HistoryEntry::JobQueued { job_id, .. } => self.job(&job_id, false).await,
            HistoryEntry::JobFinished { job_id, .. } => self.job(&job_id, true).await,
            HistoryEntry::PageSkipped { run_id, url, reason, http_status, depth, .. } => {
                self.history.record_skipped(&run_id, &url, &reason, http_status, depth).await.map_err(failed)
            }
            HistoryEntry::RunDone { run_id, .. } => self.run_done(&run_id).await,
        }
    }

    async fn give_up(&self, message: &Message, reason: &str) {
        tracing::warn!(entry = %message.id, reason, "history entry given up");
    }
}
