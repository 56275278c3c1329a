//! Runs: many documents as one piece of work. A run is recorded in the history (PostgreSQL:
//! the run, its items) and live in Redis (`millrace_pipeline::run`: what is left to do); its
//! items are submitted by the feeder as admission allows, a crawl's pages by the crawler.
//! Every operation is confined to the caller's tenant: another tenant's run is the same 404 as
//! a missing one.

use millrace_auth::Caller;
use millrace_common::ApiError;
use millrace_pipeline::{JobStatus, NewRun, RunStatus};
use serde_json::{Value, json};

use super::{Core, store_error, tenant_for};
use crate::history::hooks;
use crate::history::runs::{ItemRow, NewItem, NewRunRecord, RunRow, summary};
use crate::history::store::encode_cursor;
use crate::validate::ValidRun;

/// A run accepted: where to follow it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunAccepted {
    pub run_id: String,
    pub status_url: String,
}

/// A page of a listing and the cursor of the next one (`None` at the end).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl Core {
    /// Records a run (the history first, then its live state) and answers at once: items are
    /// submitted by the feeder, a crawl's start page is already on the crawl stream.
    pub async fn create_run(&self, caller: &Caller, run: ValidRun) -> Result<RunAccepted, ApiError> {
        if !caller.may_use(&run.collection) {
            return Err(ApiError::permission_denied(format!("this key may not use collection {:?}", run.collection)));
        }
        if let Some(crawl) = &run.crawl {
            self.urls
                .check(&crawl.url)
                .await
                .map_err(|err| ApiError::invalid(format!("`crawl.url` is refused: {err}")))?;
        }
        if let Some(webhook) = &run.webhook {
            hooks::check_spec(webhook, &self.urls).await?;
        }
        let run_id = format!("run_{}", uuid::Uuid::now_v7().simple());
        let items = run
            .items
            .iter()
            .map(|item| {
                let field = |name: &str| item.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
                NewItem { spec: item.to_string(), url: field("url"), document_id: field("document_id") }
            })
            .collect::<Vec<_>>();
        let record = NewRunRecord {
            id: run_id.clone(),
            tenant: caller.tenant.clone(),
            name: run.name,
            collection: run.collection.clone(),
            crawl: run.crawl.as_ref().and_then(|crawl| serde_json::to_value(crawl).ok()),
            webhook: run.webhook.as_ref().and_then(|hook| serde_json::to_value(hook).ok()),
            key_id: caller.key_id.clone(),
            key_collections: caller.collections.clone(),
            items,
        };
        // `starting` until the live state exists: the feeder and the history worker must not
        // act on the run before it does.
        self.history.create_run(&record).await?;
        let live = NewRun {
            run_id: run_id.clone(),
            tenant: caller.tenant.clone(),
            collection: run.collection,
            items: record.items.len() as u64,
            crawl: run.crawl,
        };
        if let Err(err) = self.jobs.create_run(&live).await {
            if let Err(abandoned) = self.history.set_run_status(&run_id, "cancelled").await {
                tracing::warn!(run_id, error = %abandoned, "could not mark an abandoned run cancelled");
            }
            return Err(store_error(err));
        }
        self.history.set_run_status(&run_id, "running").await?;
        tracing::info!(run_id, tenant = %caller.tenant, items = record.items.len(), crawl = live.crawl.is_some(), "run created");
        Ok(RunAccepted { status_url: self.config.run_url(&run_id), run_id })
    }

    /// The run if the caller may see it (its tenant's, any for admin; a collection it may use).
    pub(super) async fn visible_run(&self, caller: &Caller, run_id: &str) -> Result<RunRow, ApiError> {
        let unknown = || ApiError::not_found(format!("no run {run_id:?}"));
        if run_id.is_empty() || run_id.len() > 128 {
            return Err(unknown());
        }
        self.history
            .run(run_id)
            .await?
            .filter(|run| {
                caller.sees_tenant(&run.tenant) && caller.may_use(&run.collection) && run.status != "starting"
            })
            .ok_or_else(unknown)
    }

    /// The run's summary: counts by status, progress, tokens, cost, failures by reason, times.
    pub async fn get_run(&self, caller: &Caller, run_id: &str) -> Result<Value, ApiError> {
        let run = self.visible_run(caller, run_id).await?;
        self.run_summary(&run).await
    }

    async fn run_summary(&self, run: &RunRow) -> Result<Value, ApiError> {
        let totals = self.history.run_totals(&run.run_id).await?;
        let live = self.jobs.run_state(&run.run_id).await.map_err(store_error)?;
        // The history learns that a run is done from the history stream, a moment later, and
        // reads its last jobs again then: until it has, the run is shown running, so that a
        // `done` run's counts are final. A cancel shows at once.
        let status = match live.as_ref().map(|state| state.status) {
            Some(RunStatus::Cancelled) => Some("cancelled"),
            Some(RunStatus::Done) if run.status == "running" => Some("running"),
            Some(RunStatus::Running) => Some("running"),
            _ => None,
        };
        let pending = live.as_ref().map_or(0, |state| state.pending);
        Ok(summary(run, &totals, status, pending))
    }

    /// The tenant's runs, newest first.
    pub async fn list_runs(
        &self,
        caller: &Caller,
        tenant: Option<&str>,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<Page<RunRow>, ApiError> {
        let tenant = tenant_for(caller, tenant)?;
        let mut runs = self.history.list_runs(&tenant, cursor.as_deref(), limit + 1).await?;
        let next_cursor = (runs.len() > limit).then(|| {
            runs.truncate(limit);
            runs.last().map(|run| encode_cursor(&run.run_id))
        });
        runs.retain(|run| caller.may_use(&run.collection) && run.status != "starting");
        Ok(Page { items: runs, next_cursor: next_cursor.flatten() })
    }

    /// A page of the run's items, in order; unfinished ones with their job's live status.
    pub async fn run_items(
        &self,
        caller: &Caller,
        run_id: &str,
        status: Option<String>,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<Page<ItemRow>, ApiError> {
        let run = self.visible_run(caller, run_id).await?;
        let after = match cursor {
            None => None,
            Some(text) => {
                Some(text.parse::<i64>().map_err(|_| ApiError::invalid("`cursor` is not a cursor this API gave"))?)
            }
        };
        let mut items = self.history.items(&run.run_id, status.as_deref(), after, Some(limit + 1)).await?;
        let next_cursor = (items.len() > limit).then(|| {
            items.truncate(limit);
            items.last().map(|item| encode_cursor(&item.item_id.to_string()))
        });
        let unfinished: Vec<usize> = (0..items.len())
            .filter(|&i| {
                matches!(items[i].status.as_str(), "submitted" | "queued" | "running") && items[i].job_id.is_some()
            })
            .collect();
        let ids: Vec<String> = unfinished.iter().filter_map(|&i| items[i].job_id.clone()).collect();
        let live = self.jobs.live_many(&ids).await.map_err(store_error)?;
        for (&i, job) in unfinished.iter().zip(live) {
            if let Some(job) = job {
                let item = &mut items[i];
                item.status = job.status.as_str().to_owned();
                item.attempts = item.attempts.max(job.attempts.min(i32::MAX as u64) as i32);
                item.last_attempt_at = Some(job.last_attempt_at);
            }
        }
        Ok(Page { items, next_cursor: next_cursor.flatten() })
    }

    /// The run's report: one CSV row per item (RFC 4180).
    pub async fn run_report(&self, caller: &Caller, run_id: &str) -> Result<String, ApiError> {
        let run = self.visible_run(caller, run_id).await?;
        let mut csv = String::from(REPORT_HEADER);
        csv.push_str("\r\n");
        self.history.for_each_item(&run.run_id, |item| push_report_row(&mut csv, &item)).await?;
        Ok(csv)
    }

    /// Cancels the run: its live state (the crawler takes no more pages), its items not yet
    /// submitted, and its unfinished jobs. A run already over is answered as it is.
    pub async fn cancel_run(&self, caller: &Caller, run_id: &str) -> Result<Value, ApiError> {
        let run = self.visible_run(caller, run_id).await?;
        self.jobs.cancel_run(&run.run_id).await.map_err(store_error)?;
        if let Some(jobs) = self.history.cancel_run(&run.run_id).await? {
            let mut cancelled = 0;
            for job_id in jobs {
                match self.cancel_job(caller, &job_id).await {
                    Ok(job) if job.status == JobStatus::Cancelled => cancelled += 1,
                    Ok(_) => {}
                    Err(err) => tracing::debug!(run_id, job_id, error = %err.message, "run job not cancelled"),
                }
            }
            let detail = json!({ "jobs_cancelled": cancelled });
            self.audit.record(caller, "run.cancelled", &run.tenant, run_id, detail).await;
            tracing::info!(run_id, key_id = %caller.key_id, cancelled, "run cancelled");
        }
        let run = self.visible_run(caller, run_id).await?;
        self.run_summary(&run).await
    }

    /// Submits each failed item of the run again, as a new job (its attempts go on counting),
    /// and reopens the run. A cancelled run is not retried (409).
    pub async fn retry_failed(&self, caller: &Caller, run_id: &str) -> Result<Value, ApiError> {
        let run = self.visible_run(caller, run_id).await?;
        if run.status == "cancelled" {
            return Err(ApiError::conflict(format!("run {run_id:?} is cancelled")));
        }
        let jobs = self.jobs.clone();
        let (tenant, collection) = (run.tenant.clone(), run.collection.clone());
        let reopen = |n: u64| async move {
            if jobs.reopen_run(run_id, n).await? {
                return Ok(());
            }
            // The live state expired: start it again with just these items.
            let live = NewRun { run_id: run_id.to_owned(), tenant, collection, items: n, crawl: None };
            jobs.create_run(&live).await
        };
        let retried = self.history.retry_failed(run_id, reopen).await?.map_err(store_error)?;
        if retried > 0 {
            tracing::info!(run_id, retried, key_id = %caller.key_id, "run's failed items retried");
        }
        Ok(json!({ "run_id": run_id, "retried": retried, "status_url": self.config.run_url(run_id) }))
    }
}

/// The columns of a run's report.
pub const REPORT_HEADER: &str =
    "url,document_id,status,http_status,chunks,tokens,cost_usd,attempts,last_attempt_at,error";

fn push_report_row(csv: &mut String, item: &ItemRow) {
    let fields = [
        item.url.clone(),
        item.document_id.clone(),
        item.status.clone(),
        item.http_status.map(|s| s.to_string()).unwrap_or_default(),
        item.chunks.to_string(),
        item.tokens.to_string(),
        format!("{:.6}", item.cost_usd),
        item.attempts.to_string(),
        item.last_attempt_at.clone().unwrap_or_default(),
        item.error.clone().unwrap_or_default(),
    ];
    for (index, field) in fields.iter().enumerate() {
        if index > 0 {
            csv.push(',');
        }
        push_csv_field(csv, field);
    }
    csv.push_str("\r\n");
}

/// A field quoted as RFC 4180 says: in double quotes (doubled inside) when it holds a comma,
/// a quote or a line break.
pub fn push_csv_field(csv: &mut String, field: &str) {
    if field.contains([',', '"', '\r', '\n']) {
        csv.push('"');
        csv.push_str(&field.replace('"', "\"\""));
        csv.push('"');
    } else {
        csv.push_str(field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_they_must_be() {
        let mut csv = String::new();
        for field in ["plain", "a,b", "say \"hi\"", "two\nlines", ""] {
            push_csv_field(&mut csv, field);
            csv.push('|');
        }
        assert_eq!(csv, "plain|\"a,b\"|\"say \"\"hi\"\"\"|\"two\nlines\"||");
    }
}
