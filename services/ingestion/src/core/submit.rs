//! Submitting documents: the pure checks, the collection the key may write, the address rules
//! for a URL, admission (room in the queue and in the tenant's share of it, Redis memory, the
//! daily LLM budget) and the job's creation in the caller's tenant, or its completion at once
//! when the document is unchanged.

use std::time::Duration;

use futures::StreamExt as _;
use millrace_auth::Caller;
use millrace_common::{ApiError, ErrorCode};
use millrace_fetch::FetchError;
use millrace_pipeline::{Backlog, Job, JobStatus, NewJob};
use millrace_proto::v1::Document;
use serde::Serialize;

use super::{Core, store_error};
use crate::admission::{self, Capacity};
use crate::validate::{self, Submission, ValidDocument};

/// Window over which finished jobs are counted to estimate throughput for `Retry-After`.
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(60);

/// Items of a batch validated at once (their URL checks wait on DNS lookups).
const BATCH_VALIDATION_CONCURRENCY: usize = 16;

/// A job accepted for processing.
#[derive(Debug, Clone, Serialize)]
pub struct Accepted {
    pub job_id: String,
    pub document_id: String,
    pub status: JobStatus,
    pub status_url: String,
}

impl Core {
    /// Checks one submission and, if there is room, creates its job in the caller's tenant.
    pub async fn submit(&self, caller: &Caller, submission: Submission) -> Result<Accepted, ApiError> {
        let result = async {
            let document = self.validate(caller, submission).await?;
            self.capacity(&caller.tenant).await?.admit(document.content.len() as u64)?;
            self.create(caller, document, None).await
        }
        .await;
        if let Err(err) = &result {
            count_rejection(err);
        }
        result
    }

    /// Checks a batch of submissions (already read, each `Ok` or its own error) and creates a
    /// job for each valid one while there is room; the others get their own error.
    pub async fn submit_batch(
        &self,
        caller: &Caller,
        items: Vec<Result<Submission, ApiError>>,
    ) -> Result<Vec<Result<Accepted, ApiError>>, ApiError> {
        let mut capacity = self.capacity(&caller.tenant).await?;
        if let Err(err) = capacity.check_any() {
            count_rejection(&err);
            return Err(err);
        }
        // URL checks wait on DNS: run a few at once (in order) rather than one after another.
        let documents: Vec<Result<ValidDocument, ApiError>> = futures::stream::iter(items)
            .map(|item| async move {
                match item {
                    Ok(submission) => self.validate(caller, submission).await,
                    Err(err) => Err(err),
                }
            })
            .buffered(BATCH_VALIDATION_CONCURRENCY)
            .collect()
            .await;
        let mut results = Vec::with_capacity(documents.len());
        for document in documents {
            let result = match document {
                Err(err) => Err(err),
                Ok(document) => match capacity.admit(document.content.len() as u64) {
                    Ok(()) => self.create(caller, document, None).await,
                    Err(err) => Err(err),
                },
            };
            if let Err(err) = &result {
                count_rejection(err);
            }
            results.push(result);
        }
        Ok(results)
    }

    /// Submits one item of a run (the feeder): as [`Core::submit`], the job counted in the run.
    pub async fn submit_in_run(
        &self,
        caller: &Caller,
        submission: Submission,
        run_id: &str,
    ) -> Result<Accepted, ApiError> {
        let result = async {
            let document = self.validate(caller, submission).await?;
            self.capacity(&caller.tenant).await?.admit(document.content.len() as u64)?;
            self.create(caller, document, Some(run_id.to_owned())).await
        }
        .await;
        if let Err(err) = &result {
            count_rejection(err);
        }
        result
    }

    /// The pure checks, whether the key may write the collection (403), then, for a URL, the
    /// address rules on what its name resolves to now (a name that does not resolve is
    /// accepted: the job fails when the chunking stage fetches it, and the chunking stage
    /// applies the same rules again when it connects).
    async fn validate(&self, caller: &Caller, submission: Submission) -> Result<ValidDocument, ApiError> {
        let document = validate::validate_submission(submission, self.config.max_document_bytes)?;
        if !caller.may_use(&document.collection) {
            return Err(ApiError::permission_denied(format!(
                "this key may not use collection {:?}",
                document.collection
            )));
        }
        if let Some(url) = &document.url {
            self.urls.check(url).await.map_err(|err| {
                let reason = match err {
                    FetchError::Refused { reason } | FetchError::InvalidUrl { reason } => reason,
                    other => other.to_string(),
                };
                tracing::info!(url = %millrace_fetch::loggable(url), reason = %reason, "url refused");
                metrics::counter!(crate::metrics::URLS_REFUSED).increment(1);
                ApiError::invalid(format!("`url` is refused: {reason}"))
            })?;
        }
        Ok(document)
    }

    async fn create(
        &self,
        caller: &Caller,
        document: ValidDocument,
        run_id: Option<String>,
    ) -> Result<Accepted, ApiError> {
        // A URL's content is not known yet: no fingerprint, so it is always processed.
        let fingerprint = if document.url.is_some() {
            String::new()
        } else {
            millrace_pipeline::fingerprint(
                &document.content_hash,
                &document.content_type,
                &document.metadata,
                &document.source,
                &document.options,
            )
        };
        let new = NewJob {
            tenant_id: caller.tenant.clone(),
            collection: document.collection,
            document_id: document.document_id,
            content_type: document.content_type,
            source: document.source,
            metadata: document.metadata,
            content_hash: document.content_hash,
            content: document.content,
            url: document.url,
            options: document.options,
            fingerprint,
            run_id,
            http_status: None,
        };
        let visible = self.visible_version(caller, &new).await?;
        if let Some((version, chunks)) = unchanged(&new, visible.as_ref())
            && let Some(job) = self.jobs.create_unchanged(&new, version, chunks).await.map_err(store_error)?
        {
            metrics::counter!(crate::metrics::JOBS_UNCHANGED).increment(1);
            tracing::info!(job_id = %job.job_id, document_id = %job.document_id, version, "identical to the stored version; completed at once");
            return Ok(self.accepted(job));
        }
        // Only work that reaches the stages needs the LLM: an identical resubmission passes.
        self.budget.check().await?;
        let job = self.jobs.create(new).await.map_err(store_error)?;
        metrics::counter!(crate::metrics::JOBS_SUBMITTED).increment(1);
        tracing::info!(
            job_id = %job.job_id,
            document_id = %job.document_id,
            version = job.version,
            tenant = %job.tenant_id,
            collection = %job.collection,
            bytes = job.content_bytes,
            url = %millrace_fetch::loggable(&job.url),
            "job queued"
        );
        Ok(self.accepted(job))
    }

    fn accepted(&self, job: Job) -> Accepted {
        Accepted {
            status_url: self.config.status_url(&job.job_id),
            job_id: job.job_id,
            document_id: job.document_id,
            status: job.status,
        }
    }

    /// The document's visible version in the caller's tenant, when it matters: to tell an
    /// identical resubmission (a known fingerprint), and, for a key limited to some collections,
    /// to refuse (403) a new version of a document that lies in a collection the key may not use
    /// (it would replace it there): its visible version's, or that of its last submitted version
    /// (which wins when it completes). A storage service that does not answer means "not known":
    /// the submission is processed as usual, except for a limited key, which gets the 503 (it
    /// must not write past a collection it cannot see).
    async fn visible_version(&self, caller: &Caller, new: &NewJob) -> Result<Option<Document>, ApiError> {
        let limited = caller.collections.is_some();
        if new.fingerprint.is_empty() && !limited {
            return Ok(None);
        }
        let elsewhere = || {
            ApiError::permission_denied(format!(
                "document {:?} lies in a collection this key may not use",
                new.document_id
            ))
        };
        if limited {
            let submitted =
                self.jobs.document_jobs(&new.tenant_id, &new.document_id, u64::MAX).await.map_err(store_error)?;
            if submitted.iter().max_by_key(|job| job.version).is_some_and(|last| !caller.may_use(&last.collection)) {
                return Err(elsewhere());
            }
        }
        let visible = match self.stored_document(&new.tenant_id, &new.document_id).await {
            Ok(visible) => visible,
            Err(err) if limited => return Err(err),
            Err(err) => {
                tracing::warn!(document_id = %new.document_id, error = %err.message, "storage did not answer; cannot tell an identical resubmission");
                return Ok(None);
            }
        };
        if let Some(document) = &visible
            && !caller.may_use(&document.collection)
        {
            return Err(elsewhere());
        }
        Ok(visible)
    }

    /// Room left under `MAX_QUEUED_JOBS`, `MAX_QUEUED_BYTES` and, for `tenant_id`,
    /// `MAX_QUEUED_JOBS_PER_TENANT`, and how long to wait when there is none; a 503 at once
    /// while Redis is near its memory limit (see `admission`).
    pub async fn capacity(&self, tenant_id: &str) -> Result<Capacity, ApiError> {
        let Backlog { jobs: active, bytes, tenant_jobs } = self.jobs.backlog(tenant_id).await.map_err(store_error)?;
        let (max_jobs, max_bytes) = (self.config.max_queued_jobs, self.config.max_queued_bytes);
        let max_tenant_jobs = self.config.max_queued_jobs_per_tenant;
        let mut capacity = Capacity {
            free_jobs: max_jobs.saturating_sub(active),
            free_bytes: max_bytes.saturating_sub(bytes),
            free_tenant_jobs: max_tenant_jobs.saturating_sub(tenant_jobs),
            max_tenant_jobs,
            retry_after_secs: 0,
        };
        let memory_full = self
            .redis_memory
            .reading(self.jobs.pool())
            .await
            .filter(|m| m.over(self.config.redis_memory_high_watermark));
        // The wait is estimated only when some bound is close: it costs a Redis call.
        if capacity.free_jobs == 0
            || capacity.free_bytes < self.config.max_document_bytes as u64
            || memory_full.is_some()
        {
            let finished = self.jobs.finished_within(THROUGHPUT_WINDOW).await.map_err(store_error)?;
            capacity.retry_after_secs = admission::retry_after_secs(active, max_jobs.min(active), finished);
        } else if capacity.free_tenant_jobs == 0 {
            // Jobs finish at the pipeline's rate whoever they belong to; the tenant's own share of
            // it is not counted, so this is the shortest plausible wait.
            let finished = self.jobs.finished_within(THROUGHPUT_WINDOW).await.map_err(store_error)?;
            capacity.retry_after_secs =
                admission::retry_after_secs(tenant_jobs, max_tenant_jobs.min(tenant_jobs), finished);
        }
        match memory_full {
            Some(memory) => Err(admission::memory_full(memory, capacity.retry_after_secs)),
            None => Ok(capacity),
        }
    }
}

/// The visible version and chunk count of the document if it was stored from a submission
/// with the same fingerprint in the same collection (so this one would store the same thing).
fn unchanged(new: &NewJob, visible: Option<&Document>) -> Option<(u64, u64)> {
    let document = visible?;
    (!new.fingerprint.is_empty() && document.fingerprint == new.fingerprint && document.collection == new.collection)
        .then_some((document.version, u64::from(document.chunk_count)))
}

/// Counts a rejected submission by the reason a client sees.
pub fn count_rejection(err: &ApiError) {
    let reason = match err.code {
        ErrorCode::RateLimited if err.message.contains(admission::PER_TENANT_LIMIT) => "tenant_queue_full",
        ErrorCode::Unavailable if err.retry_after_secs.is_some() => "queue_full",
        ErrorCode::RateLimited => "llm_budget_spent",
        code => code.as_str(),
    };
    metrics::counter!(crate::metrics::REQUESTS_REJECTED, "reason" => reason).increment(1);
}
