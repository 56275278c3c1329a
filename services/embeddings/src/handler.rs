//! What the embeddings stage does with one stream entry (one batch).

use std::sync::Arc;

use millrace_pipeline::{BatchRef, HalfOutcome, JobStatus, JobStore, Stage};
use millrace_proto::{EmbeddingBatch, Vector};
use millrace_streams::{Handler, HandlerError, Message};
use tracing::{debug, warn};

use crate::embedders::{EmbedError, Embedder};

pub struct EmbeddingsHandler {
    store: JobStore,
    embedder: Arc<Embedder>,
}

impl EmbeddingsHandler {
    pub fn new(store: JobStore, embedder: Arc<Embedder>) -> Self {
        Self { store, embedder }
    }
}

fn retry(err: impl std::fmt::Display) -> HandlerError {
    HandlerError::Retry(err.to_string())
}

impl Handler for EmbeddingsHandler {
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
        let texts: Vec<String> = chunks.chunks.iter().map(|c| c.text.clone()).collect();
        let vectors = self.embedder.embed(&texts, &job_id).await.map_err(|err| match err {
            EmbedError::Retryable(reason) => HandlerError::Retry(reason),
            EmbedError::Fatal(reason) => HandlerError::Fatal(reason),
        })?;
        let result = EmbeddingBatch {
            model: self.embedder.model(),
            dimensions: self.embedder.dimensions() as u32,
            vectors: vectors.into_iter().map(|values| Vector { values }).collect(),
        };
        let outcome = self.store.complete_embeddings(&job_id, batch, texts.len(), &result).await.map_err(retry)?;
        metrics::counter!("millrace_embeddings_chunks_total", "embedder" => self.embedder.name())
            .increment(texts.len() as u64);
        debug!(job_id, batch, enqueued_storage = outcome == HalfOutcome::EnqueuedStorage, "embeddings done");
        Ok(())
    }

    async fn give_up(&self, message: &Message, reason: &str) {
        let Ok(BatchRef { job_id, .. }) = BatchRef::from_fields(&message.fields) else { return };
        if let Err(err) = self.store.finish(&job_id, JobStatus::Failed, Some((Stage::Embeddings.name(), reason))).await
        {
            warn!(job_id, error = %err, "could not mark job failed");
        }
    }
}
