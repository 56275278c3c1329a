//! What the metadata stage does with one stream entry (one batch).

use millrace_pipeline::{BatchRef, HalfOutcome, JobStatus, JobStore, Stage};
use millrace_proto::MetadataBatch;
use millrace_streams::{Handler, HandlerError, Message};
use tracing::{debug, warn};

use crate::extractors::{ExtractError, Extractor};

pub struct MetadataHandler {
    store: JobStore,
    extractor: Extractor,
}

impl MetadataHandler {
    pub fn new(store: JobStore, extractor: Extractor) -> Self {
        Self { store, extractor }
    }
}

fn retry(err: impl std::fmt::Display) -> HandlerError {
    HandlerError::Retry(err.to_string())
}

impl Handler for MetadataHandler {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
        let BatchRef { job_id, batch } = BatchRef::from_fields(&message.fields).map_err(HandlerError::Fatal)?;
        let Some(job) = self.store.get(&job_id).await.map_err(retry)? else { return Ok(()) };
        if job.status.is_terminal() {
            debug!(job_id, batch, "job finished; skipping batch");
            return Ok(());
        }
        let chunks = self
            .store
            .load_batch(&job_id, batch)
            .await
            .map_err(retry)?
            .ok_or_else(|| HandlerError::Fatal(format!("batch {batch} payload is missing")))?;
        let metadata = self.extractor.extract(&chunks).await.map_err(|err| match err {
            ExtractError::Retryable(reason) => HandlerError::Retry(reason),
            ExtractError::Fatal(reason) => HandlerError::Fatal(reason),
        })?;
        let result = MetadataBatch { chunk_metadata_json: metadata.iter().map(ToString::to_string).collect() };
        let outcome =
            self.store.complete_metadata(&job_id, batch, chunks.chunks.len(), &result).await.map_err(retry)?;
        metrics::counter!("millrace_metadata_chunks_total", "extractor" => self.extractor.name())
            .increment(chunks.chunks.len() as u64);
        debug!(job_id, batch, enqueued_storage = outcome == HalfOutcome::EnqueuedStorage, "metadata done");
        Ok(())
    }

    async fn give_up(&self, message: &Message, reason: &str) {
        let Ok(BatchRef { job_id, .. }) = BatchRef::from_fields(&message.fields) else { return };
        if let Err(err) = self.store.finish(&job_id, JobStatus::Failed, Some((Stage::Metadata.name(), reason))).await {
            warn!(job_id, error = %err, "could not mark job failed");
        }
    }
}
