//! Reading, listing and cancelling jobs, each confined to the caller's tenant and collections.

use millrace_auth::Caller;
use millrace_common::ApiError;
use millrace_pipeline::{CancelOutcome, Job, JobStatus};
use millrace_proto::v1::DiscardVersionRequest;

use super::{Core, store_error, tenant_for};

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
