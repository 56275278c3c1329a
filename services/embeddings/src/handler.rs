//! What the embeddings stage does with one stream entry (one batch): for each chunk, the vector
//! stored for an identical chunk of the document's visible version (incremental re-ingest),
//! else a cached vector of the same text, else a new one from the embedder — so only texts never
//! seen under this model cost a model call.

use std::sync::Arc;

use millrace_pipeline::runtime::{fail_job, running_batch};
use millrace_pipeline::{HalfOutcome, JobStore, Stage};
use millrace_proto::{Chunk, EmbeddingBatch, Vector};
use millrace_streams::{Handler, HandlerError, Message};
use tracing::debug;

use crate::cache::EmbeddingCache;
use crate::embedders::Embedder;

pub struct EmbeddingsHandler {
    store: JobStore,
    embedder: Arc<Embedder>,
    cache: EmbeddingCache,
}

impl EmbeddingsHandler {
    pub fn new(store: JobStore, embedder: Arc<Embedder>, cache: EmbeddingCache) -> Self {
        Self { store, embedder, cache }
    }

    /// The stored vector of an identical chunk, if this model made it.
    fn reusable(&self, chunk: &Chunk, model: &str) -> Option<Vec<f32>> {
        let stored = chunk.stored.as_ref()?;
        let vector = stored.embedding.as_ref()?;
        (stored.embedding_model == model && vector.values.len() == self.embedder.dimensions())
            .then(|| vector.values.clone())
    }
}

impl Handler for EmbeddingsHandler {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
        let Some((entry, job, chunks)) = running_batch(&self.store, message).await? else { return Ok(()) };
        let model = self.embedder.model();
        let mut vectors: Vec<Option<Vec<f32>>> = chunks.chunks.iter().map(|c| self.reusable(c, &model)).collect();
        let reused: Vec<bool> = vectors.iter().map(Option::is_some).collect();

        let missing: Vec<usize> = (0..vectors.len()).filter(|&i| vectors[i].is_none()).collect();
        let hashes: Vec<&str> = missing.iter().map(|&i| chunks.chunks[i].content_hash.as_str()).collect();
        let cached = self
            .cache
            .get_many(&model, &hashes, self.embedder.dimensions())
            .await
            .map_err(|err| HandlerError::Retry(err.to_string()))?;
        let mut cache_hits = 0usize;
        for (&i, hit) in missing.iter().zip(cached) {
            if hit.is_some() {
                cache_hits += 1;
            }
            vectors[i] = hit;
        }

        let todo: Vec<usize> = (0..vectors.len()).filter(|&i| vectors[i].is_none()).collect();
        if !todo.is_empty() {
            let texts: Vec<String> = todo.iter().map(|&i| chunks.chunks[i].text.clone()).collect();
            let fresh = self.embedder.embed(&texts, &job.job_id).await?;
            let entries: Vec<(&str, &[f32])> =
                todo.iter().zip(&fresh).map(|(&i, v)| (chunks.chunks[i].content_hash.as_str(), v.as_slice())).collect();
            self.cache.put_many(&model, &entries).await.map_err(|err| HandlerError::Retry(err.to_string()))?;
            for (&i, vector) in todo.iter().zip(fresh) {
                vectors[i] = Some(vector);
            }
        }

        let count = chunks.chunks.len();
        let reused_count = reused.iter().filter(|r| **r).count();
        let result = EmbeddingBatch {
            model,
            dimensions: self.embedder.dimensions() as u32,
            vectors: vectors.into_iter().map(|v| Vector { values: v.unwrap_or_default() }).collect(),
            reused,
        };
        let batch = entry.batch;
        let outcome = self.store.complete_embeddings(&entry, message.read_ms, count, &result).await?;
        // Counted as the job counts them: not for a job that finished meanwhile.
        if outcome != HalfOutcome::JobFinished {
            crate::metrics::batch(self.embedder.name(), todo.len(), cache_hits, reused_count);
        }
        debug!(job_id = %job.job_id, batch, embedded = todo.len(), reused = reused_count, cache_hits, enqueued_storage = outcome == HalfOutcome::EnqueuedStorage, "embeddings done");
        Ok(())
    }

    async fn give_up(&self, message: &Message, reason: &str) {
        fail_job(&self.store, message, Stage::Embeddings, reason).await;
    }
}
