//! The operations of the job API, written once and called by both the HTTP handlers and the
//! gRPC service: submit (with admission control, the daily LLM budget and, for a URL, the
//! address rules), get, list and cancel jobs, search, and read or delete documents through the
//! storage service; and, for HTTP only, gather the stats of every service of the pipeline.

use millrace_common::telemetry::{GrpcChannel, PropagateContext};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use millrace_common::{ApiError, ErrorCode};
use millrace_fetch::{FetchError, UrlGuard};
use millrace_pipeline::dead_letters::{RetryReport, StageDeadLetters};
use millrace_pipeline::{Backlog, CancelOutcome, Job, JobStatus, JobStore, JobStoreError, NewJob, Stage};
use millrace_proto::v1::embeddings_client::EmbeddingsClient;
use millrace_proto::v1::storage_client::StorageClient;
use millrace_proto::v1::{
    DeleteDocumentRequest, DiscardVersionRequest, EmbedRequest, GetDocumentRequest, SearchFilter, VectorSearchRequest,
};
use serde::Serialize;
use tonic::transport::Channel;

use crate::admission::{self, Capacity, RedisMemory};
use crate::budget::BudgetGuard;
use crate::config::Config;
use crate::stats::{Pipeline, PipelineStats};
use crate::validate::{self, Submission, ValidDocument, ValidSearch};

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

/// One search hit.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    pub document_id: String,
    pub chunk_index: u32,
    pub text: String,
    pub score: f32,
    pub metadata: serde_json::Value,
}

/// A stored document, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DocumentInfo {
    pub document_id: String,
    pub version: u64,
    pub chunk_count: u32,
    pub content_hash: String,
    pub metadata: serde_json::Value,
    pub source: String,
    pub content_type: String,
    pub updated_at: String,
}

/// Everything the operations need; cheap to clone.
#[derive(Clone)]
pub struct Core {
    config: Config,
    jobs: JobStore,
    storage: StorageClient<GrpcChannel>,
    embeddings: EmbeddingsClient<GrpcChannel>,
    pipeline: Pipeline,
    budget: Arc<BudgetGuard>,
    urls: UrlGuard,
    redis_memory: Arc<RedisMemory>,
}

impl Core {
    pub fn new(
        config: Config,
        jobs: JobStore,
        storage: Channel,
        embeddings: Channel,
        pipeline: Pipeline,
        urls: UrlGuard,
    ) -> Self {
        Self {
            config,
            jobs,
            storage: StorageClient::with_interceptor(storage, PropagateContext),
            embeddings: EmbeddingsClient::with_interceptor(embeddings, PropagateContext),
            budget: Arc::new(BudgetGuard::new(pipeline.clone())),
            pipeline,
            urls,
            redis_memory: Arc::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn jobs(&self) -> &JobStore {
        &self.jobs
    }

    /// Checks one submission and, if there is room, creates its job.
    pub async fn submit(&self, submission: Submission) -> Result<Accepted, ApiError> {
        let result = async {
            let document = self.validate(submission).await?;
            self.capacity().await?.admit(document.content.len() as u64)?;
            self.create(document).await
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
        items: Vec<Result<Submission, ApiError>>,
    ) -> Result<Vec<Result<Accepted, ApiError>>, ApiError> {
        let mut capacity = self.capacity().await?;
        if let Err(err) = capacity.check_any() {
            count_rejection(&err);
            return Err(err);
        }
        // URL checks wait on DNS: run a few at once (in order) rather than one after another.
        let documents: Vec<Result<ValidDocument, ApiError>> = futures::stream::iter(items)
            .map(|item| async move {
                match item {
                    Ok(submission) => self.validate(submission).await,
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
                    Ok(()) => self.create(document).await,
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

    /// The pure checks, then, for a URL, the address rules on what its name resolves to now
    /// (a name that does not resolve is accepted: the job fails when the chunking stage fetches
    /// it, and the chunking stage applies the same rules again when it connects).
    async fn validate(&self, submission: Submission) -> Result<ValidDocument, ApiError> {
        let document = validate::validate_submission(submission, self.config.max_document_bytes)?;
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

    async fn create(&self, document: ValidDocument) -> Result<Accepted, ApiError> {
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
            tenant_id: self.config.tenant_id.clone(),
            document_id: document.document_id,
            content_type: document.content_type,
            source: document.source,
            metadata: document.metadata,
            content_hash: document.content_hash,
            content: document.content,
            url: document.url,
            options: document.options,
            fingerprint,
        };
        if let Some((version, chunks)) = self.unchanged_version(&new).await
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

    /// The visible version and chunk count of the document if it was stored from a submission
    /// with the same fingerprint (so this one would store the same thing). A storage service
    /// that does not answer means "not known": the submission is processed as usual.
    async fn unchanged_version(&self, new: &NewJob) -> Option<(u64, u64)> {
        if new.fingerprint.is_empty() {
            return None;
        }
        let request = GetDocumentRequest { tenant_id: new.tenant_id.clone(), document_id: new.document_id.clone() };
        match self.storage.clone().get_document(request).await {
            Ok(found) => {
                let document = found.into_inner();
                (document.fingerprint == new.fingerprint).then_some((document.version, u64::from(document.chunk_count)))
            }
            Err(status) if status.code() == tonic::Code::NotFound => None,
            Err(status) => {
                tracing::warn!(document_id = %new.document_id, error = %status.message(), "storage did not answer; cannot tell an identical resubmission");
                None
            }
        }
    }

    /// Room left under `MAX_QUEUED_JOBS` and `MAX_QUEUED_BYTES`, and how long to wait when
    /// there is none; a 503 at once while Redis is near its memory limit (see `admission`).
    pub async fn capacity(&self) -> Result<Capacity, ApiError> {
        let Backlog { jobs: active, bytes } = self.jobs.backlog().await.map_err(store_error)?;
        let (max_jobs, max_bytes) = (self.config.max_queued_jobs, self.config.max_queued_bytes);
        let mut capacity = Capacity {
            free_jobs: max_jobs.saturating_sub(active),
            free_bytes: max_bytes.saturating_sub(bytes),
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
        }
        match memory_full {
            Some(memory) => Err(admission::memory_full(memory, capacity.retry_after_secs)),
            None => Ok(capacity),
        }
    }

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

    /// Embeds the query through the embeddings service and searches through the storage service.
    pub async fn search(&self, search: ValidSearch) -> Result<Vec<Hit>, ApiError> {
        let embedded = self
            .embeddings
            .clone()
            .embed(EmbedRequest { texts: vec![search.query], job_id: String::new() })
            .await
            .map_err(|status| downstream("embeddings", status))?
            .into_inner();
        let vector = embedded
            .vectors
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::internal("the embeddings service returned no vector for the query"))?;
        let metadata_json = match &search.metadata {
            serde_json::Value::Object(map) if map.is_empty() => String::new(),
            other => other.to_string(),
        };
        let response = self
            .storage
            .clone()
            .search(VectorSearchRequest {
                tenant_id: self.config.tenant_id.clone(),
                vector: vector.values,
                top_k: search.top_k,
                filter: Some(SearchFilter { document_id: search.document_id, metadata_json }),
            })
            .await
            .map_err(|status| downstream("storage", status))?
            .into_inner();
        Ok(response
            .results
            .into_iter()
            .map(|hit| Hit {
                document_id: hit.document_id,
                chunk_index: hit.chunk_index,
                text: hit.text,
                score: hit.score,
                metadata: json_object(&hit.metadata_json),
            })
            .collect())
    }

    pub async fn get_document(&self, document_id: &str) -> Result<DocumentInfo, ApiError> {
        validate::validate_document_id(document_id).map_err(|_| unknown_document(document_id))?;
        let document = self
            .storage
            .clone()
            .get_document(GetDocumentRequest {
                tenant_id: self.config.tenant_id.clone(),
                document_id: document_id.to_owned(),
            })
            .await
            .map_err(|status| match status.code() {
                tonic::Code::NotFound => unknown_document(document_id),
                _ => downstream("storage", status),
            })?
            .into_inner();
        Ok(DocumentInfo {
            metadata: json_object(&document.metadata_json),
            document_id: document.document_id,
            version: document.version,
            chunk_count: document.chunk_count,
            content_hash: document.content_hash,
            source: document.source,
            content_type: document.content_type,
            updated_at: document.updated_at,
        })
    }

    /// Deletes a document: its visible version, the chunks of every version submitted so far,
    /// and its jobs still running, which end cancelled. Storage keeps a tombstone up to the last
    /// version submitted before the delete, so a job that is already past the cancel check
    /// cannot bring the document back; a submission after the delete is a new document.
    /// Returns how many chunks went; a 404 when there was neither a visible version nor a job
    /// still running.
    pub async fn delete_document(&self, document_id: &str) -> Result<u32, ApiError> {
        validate::validate_document_id(document_id).map_err(|_| unknown_document(document_id))?;
        let tenant_id = self.config.tenant_id.clone();
        let through_version = self.jobs.latest_version(&tenant_id, document_id).await.map_err(store_error)?;
        let deleted = self
            .storage
            .clone()
            .delete_document(DeleteDocumentRequest {
                tenant_id: tenant_id.clone(),
                document_id: document_id.to_owned(),
                through_version,
            })
            .await
            .map(|response| Some(response.into_inner()).filter(|response| response.deleted))
            .or_else(|status| match status.code() {
                tonic::Code::NotFound => Ok(None),
                _ => Err(downstream("storage", status)),
            })?;
        let cancelled = self
            .jobs
            .cancel_document_jobs(&tenant_id, document_id, through_version, "the document was deleted")
            .await
            .map_err(store_error)?;
        if deleted.is_none() && cancelled == 0 {
            return Err(unknown_document(document_id));
        }
        let chunks_deleted = deleted.map_or(0, |response| response.chunks_deleted);
        tracing::info!(document_id, chunks_deleted, jobs_cancelled = cancelled, through_version, "document deleted");
        Ok(chunks_deleted)
    }

    /// The newest `limit` dead letters of `stage` (or of every stage, in pipeline order), with
    /// how many each stage holds.
    pub async fn dead_letters(&self, stage: Option<Stage>, limit: usize) -> Result<Vec<StageDeadLetters>, ApiError> {
        let stages = stage.map_or(Stage::ALL.to_vec(), |stage| vec![stage]);
        let mut found = Vec::with_capacity(stages.len());
        for stage in stages {
            found.push(self.jobs.dead_letters(stage, limit).await.map_err(store_error)?);
        }
        Ok(found)
    }

    /// Retries dead letters of `stage` (those named, else all): see
    /// [`millrace_pipeline::dead_letters`]. What cannot be retried is refused entry by entry.
    /// Like a submission, a retry puts work back on the streams: it is refused while the queue
    /// is full (503) or the day's LLM budget is spent (429; the work would only fail again).
    pub async fn retry_dead_letters(&self, stage: Stage, ids: Option<Vec<String>>) -> Result<RetryReport, ApiError> {
        self.capacity().await?.check_any()?;
        self.budget.check().await?;
        let report = self.jobs.retry_dead_letters(stage, ids.as_deref()).await.map_err(store_error)?;
        metrics::counter!(crate::metrics::DEAD_LETTERS_RETRIED, "stage" => stage.name())
            .increment(report.retried.len() as u64);
        metrics::counter!(crate::metrics::DEAD_LETTERS_REFUSED, "stage" => stage.name())
            .increment(report.refused.len() as u64);
        tracing::info!(
            stage = stage.name(),
            retried = report.retried.len(),
            refused = report.refused.len(),
            superseded = report.superseded.len(),
            "dead letters retried"
        );
        Ok(report)
    }

    /// The stats of every service of the pipeline; one that does not answer is shown
    /// unreachable, so this never fails.
    pub async fn pipeline_stats(&self) -> PipelineStats {
        self.pipeline.collect().await
    }
}

/// The stage of a name, or a 404 naming the stages there are.
pub fn stage(name: &str) -> Result<Stage, ApiError> {
    Stage::parse(name).ok_or_else(|| {
        let names: Vec<&str> = Stage::ALL.iter().map(|stage| stage.name()).collect();
        ApiError::not_found(format!("no stage {name:?}; the stages are {}", names.join(", ")))
    })
}

fn unknown_job(job_id: &str) -> ApiError {
    ApiError::not_found(format!("no job {job_id:?}"))
}

fn unknown_document(document_id: &str) -> ApiError {
    ApiError::not_found(format!("no document {document_id:?}"))
}

/// Redis being away is a 503 (retry later); a corrupt record is ours to fix.
pub fn store_error(err: JobStoreError) -> ApiError {
    if err.is_retryable() {
        tracing::warn!(error = %err, "job store unavailable");
        ApiError::unavailable(format!("job store unavailable: {err}"))
    } else {
        tracing::error!(error = %err, "job store error");
        ApiError::internal(err.to_string())
    }
}

/// A failed call to another service keeps its code and says which service failed.
fn downstream(service: &str, status: tonic::Status) -> ApiError {
    let mut err = ApiError::from(status);
    if err.code == ErrorCode::Unavailable || err.code == ErrorCode::Internal || err.code == ErrorCode::DeadlineExceeded
    {
        tracing::warn!(service, code = ?err.code, error = %err.message, "downstream call failed");
    }
    err.message = format!("{service} service: {}", err.message);
    err
}

fn json_object(text: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| serde_json::json!({}))
}

/// Counts a rejected submission by the reason a client sees.
pub fn count_rejection(err: &ApiError) {
    let reason = match err.code {
        ErrorCode::Unavailable if err.retry_after_secs.is_some() => "queue_full",
        ErrorCode::RateLimited => "llm_budget_spent",
        code => code.as_str(),
    };
    metrics::counter!(crate::metrics::REQUESTS_REJECTED, "reason" => reason).increment(1);
}
