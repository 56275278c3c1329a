//! What the embeddings stage does with one stream entry (one batch).

use std::sync::Arc;

use millrace_pipeline::runtime::{fail_job, running_batch};
use millrace_pipeline::{HalfOutcome, JobStore, Stage};
use millrace_proto::{EmbeddingBatch, Vector};
use millrace_streams::{Handler, HandlerError, Message};
use tracing::debug;

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

impl Handler for EmbeddingsHandler {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
        let Some((job, chunks)) = running_batch(&self.store, message).await? else { return Ok(()) };
        let texts: Vec<String> = chunks.chunks.iter().map(|c| c.text.clone()).collect();
        let vectors = self.embedder.embed(&texts, &job.job_id).await.map_err(|err| match err {
            EmbedError::Retryable(reason) => HandlerError::Retry(reason),
            EmbedError::Fatal(reason) => HandlerError::Fatal(reason),
        })?;
        let result = EmbeddingBatch {
            model: self.embedder.model(),
            dimensions: self.embedder.dimensions() as u32,
            vectors: vectors.into_iter().map(|values| Vector { values }).collect(),
        };
        let batch = chunks.batch_index;
        let outcome = self.store.complete_embeddings(&job.job_id, batch, texts.len(), &result).await?;
        metrics::counter!("millrace_embeddings_chunks_total", "embedder" => self.embedder.name())
            .increment(texts.len() as u64);
        debug!(job_id = %job.job_id, batch, enqueued_storage = outcome == HalfOutcome::EnqueuedStorage, "embeddings done");
        Ok(())
    }

    async fn give_up(&self, message: &Message, reason: &str) {
        fail_job(&self.store, message, Stage::Embeddings, reason).await;
    }
}
