//! What the storage stage does with one stream entry (one batch whose metadata and
//! embeddings are both done): upsert it, count it, and finish the job with its last batch.

use std::sync::Arc;

use millrace_pipeline::runtime::{fail_job, finished_without_payload, foreign_entry};
use millrace_pipeline::{BatchRef, Job, JobStatus, JobStore, Stage, StoredCounts, entry};
use millrace_streams::{Handler, HandlerError, Message};
use serde_json::{Map, Value, json};
use tracing::{info, warn};

use crate::store::{ChunkRow, DocumentVersion, PgStore, StoreError};

pub struct StorageHandler {
    jobs: JobStore,
    store: Arc<PgStore>,
}

impl StorageHandler {
    pub fn new(jobs: JobStore, store: Arc<PgStore>) -> Self {
        Self { jobs, store }
    }

    /// Makes the new version visible (one transaction in PostgreSQL), then completes the job.
    /// Safe to repeat: the version switch is guarded and finishing a finished job is a no-op.
    /// The caller has just seen (from `record_stored`) that the job is not cancelled or failed,
    /// and `record_stored` marked it committing, so a cancel can no longer come between. A
    /// document deleted after this version was submitted is not brought back: the job ends
    /// cancelled.
    async fn finish_job(&self, job: &Job) -> Result<(), HandlerError> {
        let job_id = job.job_id.as_str();
        let outcome = self
            .store
            .commit_version(&DocumentVersion {
                tenant_id: job.tenant_id.clone(),
                collection: job.collection.clone(),
                document_id: job.document_id.clone(),
                version: job.version as i64,
                content_hash: job.content_hash.clone(),
                chunk_count: job.chunks.total as i32,
                metadata: job.metadata.clone(),
                source: job.source.clone(),
                content_type: job.content_type.clone(),
                fingerprint: job.fingerprint.clone(),
            })
            .await
            .map_err(store_error)?;
        if outcome.document_deleted {
            let reason = "the document was deleted while this job ran";
            if self.jobs.finish(job_id, JobStatus::Cancelled, Some(("storage", reason))).await? {
                info!(job_id, document_id = %job.document_id, version = job.version, "document deleted meanwhile; job cancelled");
            }
        } else if self.jobs.finish(job_id, JobStatus::Completed, None).await? {
            metrics::counter!(crate::metrics::DOCUMENTS_COMMITTED).increment(1);
            info!(job_id, document_id = %job.document_id, version = job.version, switched = outcome.switched, chunks = job.chunks.total, "job completed");
        }
        if let Err(err) = self.jobs.delete_payloads(job_id, job.batches_total).await {
            warn!(job_id, error = %err, "could not delete job payloads; they expire with the retention period");
        }
        Ok(())
    }

    /// Deletes what the job's current attempt stored (rows a later attempt wrote stay).
    async fn discard(&self, job: &Job) -> Result<(), HandlerError> {
        self.store
            .discard_version(&job.tenant_id, &job.document_id, job.version as i64, job.generation as i64)
            .await
            .map_err(store_error)?;
        Ok(())
    }
}

fn store_error(err: StoreError) -> HandlerError {
    if err.is_retryable() { HandlerError::Retry(err.to_string()) } else { HandlerError::Fatal(err.to_string()) }
}

impl Handler for StorageHandler {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
        let entry = BatchRef::from_fields(&message.fields).map_err(HandlerError::Fatal)?;
        let (job_id, batch) = (entry.job_id.clone(), entry.batch);
        let Some(job) = self.jobs.get(&job_id).await? else { return Ok(()) };
        if entry.is_stale(&job) {
            // A dead-letter retry reopened the job and put this batch back with its new
            // generation; that entry stores it.
            return Ok(());
        }
        if entry.foreign(&job) {
            return Err(foreign_entry(&entry.tenant, &job));
        }
        match job.status {
            JobStatus::Cancelled | JobStatus::Failed => return self.discard(&job).await,
            JobStatus::Completed => return Ok(()),
            JobStatus::Queued | JobStatus::Running => {}
        }
        let (chunks, metadata, embeddings) = match tokio::try_join!(
            self.jobs.load_batch(&job_id, batch),
            self.jobs.load_metadata(&job_id, batch),
            self.jobs.load_embeddings(&job_id, batch),
        )? {
            (Some(chunks), Some(metadata), Some(embeddings)) => (chunks, metadata, embeddings),
            _ => {
                // Cancelled meanwhile (its payloads went at once): take out what it stored.
                let what = format!("batch {batch} payload or a stage result");
                if let Some(job) = finished_without_payload(&self.jobs, &job_id, &what).await?
                    && matches!(job.status, JobStatus::Cancelled | JobStatus::Failed)
                {
                    self.discard(&job).await?;
                }
                return Ok(());
            }
        };
        // Rows go to the tenant and document of the job's record, whatever a payload says; one
        // that says otherwise was not written by millrace's chunking stage.
        if (!chunks.tenant_id.is_empty() && chunks.tenant_id != job.tenant_id)
            || (!chunks.document_id.is_empty() && chunks.document_id != job.document_id)
        {
            return Err(HandlerError::Fatal(format!(
                "batch {batch} payload is for {:?}/{:?}, its job's record for {:?}/{:?}",
                chunks.tenant_id, chunks.document_id, job.tenant_id, job.document_id
            )));
        }
        let count = chunks.chunks.len();
        if metadata.chunk_metadata_json.len() != count || embeddings.vectors.len() != count {
            return Err(HandlerError::Fatal(format!(
                "batch {batch}: {count} chunks but {} metadata and {} vectors",
                metadata.chunk_metadata_json.len(),
                embeddings.vectors.len()
            )));
        }
        let reused = (0..count)
            .filter(|&i| {
                metadata.reused.get(i).copied().unwrap_or(false) && embeddings.reused.get(i).copied().unwrap_or(false)
            })
            .count();
        let counts = StoredCounts { chunks: count, reused, metadata_failed: metadata.failed as usize };
        let rows: Vec<ChunkRow> = chunks
            .chunks
            .into_iter()
            .zip(metadata.chunk_metadata_json)
            .zip(embeddings.vectors)
            .map(|((chunk, chunk_metadata), vector)| {
                // What the stages found, then where the chunk sits (always this version's, also
                // for metadata reused from an older version). The caller's document metadata is
                // kept once, in the documents table, and merged under these keys by search.
                let mut merged = match serde_json::from_str::<Value>(&chunk_metadata) {
                    Ok(Value::Object(extracted)) => extracted,
                    _ => Map::new(),
                };
                merged.insert("char_start".into(), json!(chunk.char_start));
                merged.insert("char_end".into(), json!(chunk.char_end));
                merged.insert("heading_path".into(), json!(chunk.heading_path));
                if chunk.page_start > 0 {
                    merged.insert("page_start".into(), json!(chunk.page_start));
                    merged.insert("page_end".into(), json!(chunk.page_end));
                } else {
                    merged.remove("page_start");
                    merged.remove("page_end");
                }
                merged.insert("embedding_model".into(), json!(embeddings.model));
                ChunkRow {
                    tenant_id: job.tenant_id.clone(),
                    collection: job.collection.clone(),
                    document_id: job.document_id.clone(),
                    version: job.version as i64,
                    chunk_index: chunk.index as i32,
                    text: chunk.text,
                    content_hash: chunk.content_hash,
                    metadata: Value::Object(merged),
                    embedding: vector.values,
                    generation: entry.generation as i64,
                }
            })
            .collect();
        let started = std::time::Instant::now();
        self.store.upsert_chunks(&rows).await.map_err(store_error)?;
        metrics::histogram!(crate::metrics::UPSERT_DURATION).record(started.elapsed().as_secs_f64());
        metrics::counter!(crate::metrics::CHUNKS).increment(count as u64);
        metrics::counter!(crate::metrics::BATCHES).increment(1);
        let stored = self.jobs.record_stored(&entry, message.read_ms, counts).await?;
        if stored.stale {
            return Ok(());
        }
        if matches!(stored.status, Some(JobStatus::Cancelled | JobStatus::Failed)) {
            // Cancelled while this batch was being written: take it out again.
            return self.discard(&job).await;
        }
        if stored.all_stored() {
            self.finish_job(&job).await?;
        }
        Ok(())
    }

    async fn give_up(&self, message: &Message, reason: &str) {
        fail_job(&self.jobs, message, Stage::Storage, reason).await;
        let Some(job_id) = entry::job_id(&message.fields) else { return };
        // Only a failed job's: a stale entry given up on must not discard the reopened attempt.
        if let Ok(Some(job)) = self.jobs.get(job_id).await
            && job.status == JobStatus::Failed
            && let Err(err) = self.discard(&job).await
        {
            warn!(job_id, error = %err, "could not discard the failed version's chunks");
        }
    }
}
