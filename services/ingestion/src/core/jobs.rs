//! Reading, listing and cancelling jobs, each confined to the caller's tenant and collections.

use millrace_auth::Caller;
use millrace_common::ApiError;
use millrace_pipeline::{CancelOutcome, Job, JobStatus};
use millrace_proto::v1::DiscardVersionRequest;

use std::collections::BTreeMap;

use serde_json::Value;

use super::runs::Page;
use super::{Core, store_error, tenant_for};
use crate::history::jobs::JobQuery;
use crate::history::store::encode_cursor;
use crate::validate;

/// What `GET /v1/jobs` asks for (already checked, but for the times' format).
#[derive(Debug, Clone, Default)]
pub struct JobListing {
    pub tenant: Option<String>,
    pub status: Option<JobStatus>,
    pub run_id: Option<String>,
    pub collection: Option<String>,
    pub created_after: Option<String>,
    pub created_before: Option<String>,
    pub cursor: Option<String>,
    pub limit: usize,
}

fn is_final(status: &str) -> bool {
    JobStatus::parse(status).is_some_and(JobStatus::is_terminal)
}

impl Core {
    /// A job the caller may see: its tenant's (any, for admin) and of a collection it may use.
    /// Any other is the same 404 as an unknown id.
    pub async fn get_job(&self, caller: &Caller, job_id: &str) -> Result<Job, ApiError> {
        if job_id.is_empty() || job_id.len() > 128 {
            return Err(unknown_job(job_id));
        }
        self.jobs
            .get(job_id)
            .await
            .map_err(store_error)?
            .filter(|job| job_visible(caller, job))
            .ok_or_else(|| unknown_job(job_id))
    }

    /// The jobs of the caller's tenant (an admin may name another with `tenant`), newest
    /// first, of the collections the key may use.
    pub async fn list_jobs(
        &self,
        caller: &Caller,
        tenant: Option<&str>,
        status: Option<JobStatus>,
        limit: usize,
    ) -> Result<Vec<Job>, ApiError> {
        let tenant = tenant_for(caller, tenant)?;
        let mut jobs = self.jobs.list(&tenant, status, limit).await.map_err(store_error)?;
        jobs.retain(|job| caller.may_use(&job.collection));
        Ok(jobs)
    }

    /// A page of the jobs of the caller's tenant (an admin may name another), newest first, of
    /// the collections the key may use, from the history (so jobs Redis has expired are listed
    /// too). Unfinished jobs are shown as they are now (their live record), and the first page
    /// also takes the newest jobs from Redis, so a job just submitted is listed before the
    /// history has recorded it. With the history down, the first page comes from Redis alone
    /// (and has no `next_cursor`); later pages are a 503.
    pub async fn list_job_page(&self, caller: &Caller, listing: JobListing) -> Result<Page<Value>, ApiError> {
        let tenant = tenant_for(caller, listing.tenant.as_deref())?;
        if listing.run_id.as_deref().is_some_and(|run| run.contains('\0')) {
            // No run id holds a NUL (and PostgreSQL text cannot): no job is of such a run.
            return Ok(Page { items: Vec::new(), next_cursor: None });
        }
        let limit = listing.limit;
        let bounds = (
            listing.created_after.as_deref().map(|t| validate::unix_ms_from_rfc3339(t, "created_after")).transpose()?,
            listing
                .created_before
                .as_deref()
                .map(|t| validate::unix_ms_from_rfc3339(t, "created_before"))
                .transpose()?,
        );
        let matches = |job: &Job| {
            let created = validate::unix_ms_from_rfc3339(&job.created_at, "created_at").unwrap_or(0);
            caller.may_use(&job.collection)
                && listing.status.is_none_or(|status| job.status == status)
                && listing.run_id.as_deref().is_none_or(|run| job.run_id.as_deref() == Some(run))
                && listing.collection.as_deref().is_none_or(|c| job.collection == c)
                && bounds.0.is_none_or(|after| created >= after)
                && bounds.1.is_none_or(|before| created < before)
        };
        let query = JobQuery {
            tenant: tenant.clone(),
            status: listing
                .status
                .map(|status| if status.is_terminal() { status.as_str().to_owned() } else { "unfinished".to_owned() }),
            run_id: listing.run_id.clone(),
            collection: listing.collection.clone(),
            created_after: bounds.0,
            created_before: bounds.1,
            collections: caller.collections.clone(),
            after: listing.cursor.clone(),
            limit: limit + 1,
        };
        let (mut rows, history_up) = match self.history.list_jobs(&query).await {
            Ok(rows) => (rows, true),
            Err(err) if listing.cursor.is_none() && err.is_outage() => {
                tracing::debug!(error = %err, "history unavailable: listing the newest jobs from Redis");
                (Vec::new(), false)
            }
            Err(err) => return Err(err.into()),
        };
        let more_in_history = rows.len() > limit;
        rows.truncate(limit);
        let last_scanned = rows.last().map(|row| row.id.clone());
        let mut page: BTreeMap<String, Value> = BTreeMap::new();
        let unfinished: Vec<String> =
            rows.iter().filter(|row| !is_final(&row.status)).map(|row| row.id.clone()).collect();
        let mut live = self.jobs.get_many(&unfinished).await.map_err(store_error)?.into_iter();
        for row in rows {
            if is_final(&row.status) {
                page.insert(row.id, row.record);
            } else if let Some(job) = live.next().flatten() {
                if matches(&job) {
                    page.insert(row.id, serde_json::to_value(&job).unwrap_or(Value::Null));
                }
            } else if listing.status.is_none() {
                page.insert(row.id, row.record);
            }
        }
        if listing.cursor.is_none() {
            let live = self.jobs.list(&tenant, listing.status, limit).await.map_err(store_error)?;
            for job in live.into_iter().filter(|job| matches(job)) {
                page.insert(job.job_id.clone(), serde_json::to_value(&job).unwrap_or(Value::Null));
            }
        }
        let truncated = page.len() > limit;
        let items: Vec<(String, Value)> = page.into_iter().rev().take(limit).collect();
        let next_cursor = if !history_up {
            None
        } else if truncated {
            items.last().map(|(id, _)| encode_cursor(id))
        } else if more_in_history {
            last_scanned.map(|id| encode_cursor(&id))
        } else {
            None
        };
        Ok(Page { items: items.into_iter().map(|(_, job)| job).collect(), next_cursor })
    }

    /// Cancels a job; a job already finished is returned as it is, and one whose last batch is
    /// stored and being made visible is a 409 (it will complete). The chunks of a cancelled
    /// version that storage may already hold are discarded in the background, best-effort
    /// (storage discards them too when it next meets the job's batches). Another tenant's job
    /// is a 404 (an admin may cancel any).
    pub async fn cancel_job(&self, caller: &Caller, job_id: &str) -> Result<Job, ApiError> {
        let job = self.get_job(caller, job_id).await?;
        let outcome = self.jobs.cancel(job_id).await.map_err(store_error)?;
        if outcome == CancelOutcome::Committing {
            return Err(ApiError::conflict(format!(
                "job {job_id:?} has stored every batch and is making its version visible; it can no longer be cancelled"
            )));
        }
        if outcome == CancelOutcome::Cancelled {
            tracing::info!(job_id, key_id = %caller.key_id, tenant = %job.tenant_id, document_id = %job.document_id, version = job.version, "job cancelled");
            let mut storage = self.storage.clone();
            let request = DiscardVersionRequest {
                tenant_id: job.tenant_id.clone(),
                document_id: job.document_id.clone(),
                version: job.version,
                generation: job.generation,
            };
            let detail = serde_json::json!({ "document_id": job.document_id, "version": job.version });
            self.audit.record(caller, "job.cancelled", &job.tenant_id, job_id, detail).await;
            let job_id = job_id.to_owned();
            tokio::spawn(async move {
                match storage.discard_version(request).await {
                    Ok(response) => {
                        tracing::info!(
                            job_id,
                            chunks_deleted = response.get_ref().chunks_deleted,
                            "discarded cancelled version"
                        )
                    }
                    Err(status) => {
                        tracing::warn!(job_id, error = %status, "could not discard the cancelled version's chunks")
                    }
                }
            });
        }
        self.get_job(caller, job_id).await
    }
}

/// Whether `caller` may see `job`: of its own tenant (any tenant for admin) and of a
/// collection its key may use.
pub fn job_visible(caller: &Caller, job: &Job) -> bool {
    caller.sees_tenant(&job.tenant_id) && caller.may_use(&job.collection)
}

/// The answer for a job id that is unknown, expired, or not the caller's: always the same.
pub fn unknown_job(job_id: &str) -> ApiError {
    ApiError::not_found(format!("no job {job_id:?}"))
}
