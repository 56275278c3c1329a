//! Reading, listing and cancelling jobs.

use millrace_common::ApiError;
use millrace_pipeline::{CancelOutcome, Job, JobStatus};
use millrace_proto::v1::DiscardVersionRequest;

use super::{Core, store_error};

impl Core {
    pub async fn get_job(&self, job_id: &str) -> Result<Job, ApiError> {
        if job_id.is_empty() || job_id.len() > 128 {
            return Err(unknown_job(job_id));
        }
        self.jobs.get(job_id).await.map_err(store_error)?.ok_or_else(|| unknown_job(job_id))
    }

    pub async fn list_jobs(&self, status: Option<JobStatus>, limit: usize) -> Result<Vec<Job>, ApiError> {
        self.jobs.list(status, limit).await.map_err(store_error)
    }

    /// Cancels a job; a job already finished is returned as it is, and one whose last batch is
    /// stored and being made visible is a 409 (it will complete). The chunks of a cancelled
    /// version that storage may already hold are discarded in the background, best-effort
    /// (storage discards them too when it next meets the job's batches).
    pub async fn cancel_job(&self, job_id: &str) -> Result<Job, ApiError> {
        let job = self.get_job(job_id).await?;
        let outcome = self.jobs.cancel(job_id).await.map_err(store_error)?;
        if outcome == CancelOutcome::Committing {
            return Err(ApiError::conflict(format!(
                "job {job_id:?} has stored every batch and is making its version visible; it can no longer be cancelled"
            )));
        }
        if outcome == CancelOutcome::Cancelled {
            tracing::info!(job_id, document_id = %job.document_id, version = job.version, "job cancelled");
            let mut storage = self.storage.clone();
            let request = DiscardVersionRequest {
                tenant_id: job.tenant_id.clone(),
                document_id: job.document_id.clone(),
                version: job.version,
                generation: job.generation,
            };
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
        self.get_job(job_id).await
    }
}

fn unknown_job(job_id: &str) -> ApiError {
    ApiError::not_found(format!("no job {job_id:?}"))
}
