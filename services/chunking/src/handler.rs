//! What the chunking stage does with one stream entry (one job).

use std::time::Duration;

use millrace_pipeline::runtime::fail_job;
use millrace_pipeline::{ChunkingOutcome, JobStore, Stage};
use millrace_proto::{Chunk, ChunkBatch};
use millrace_streams::{Handler, HandlerError, Message};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use millrace_pipeline::content::media_type;

use crate::parse::parse_document;
use crate::split::{SplitConfig, split_text};

pub struct ChunkingHandler {
    store: JobStore,
    split: SplitConfig,
    batch_size: usize,
    parse_timeout: Duration,
}

impl ChunkingHandler {
    pub fn new(store: JobStore, split: SplitConfig, batch_size: usize, parse_timeout: Duration) -> Self {
        Self { store, split, batch_size, parse_timeout }
    }
}

impl Handler for ChunkingHandler {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
        let job_id = message.field("job_id")?;
        let Some(job) = self.store.get(job_id).await? else {
            warn!(job_id, "job record is gone (expired?); skipping");
            return Ok(());
        };
        if job.status.is_terminal() {
            info!(job_id, status = job.status.as_str(), "job already finished; skipping");
            return Ok(());
        }
        let content = self
            .store
            .content(job_id)
            .await?
            .ok_or_else(|| HandlerError::Fatal("document content is missing (expired?)".into()))?;

        // Parsing and splitting are CPU work on untrusted input: off the async runtime, under
        // a time limit, and a panic in them fails this job only.
        let content_type = job.content_type.clone();
        let split = self.split.clone();
        let work = tokio::task::spawn_blocking(move || {
            let text = parse_document(&content_type, &content).map_err(|err| err.to_string())?;
            let markdown = media_type(&content_type) == "text/markdown";
            split_text(&text, markdown, &split)
        });
        let chunks = match tokio::time::timeout(self.parse_timeout, work).await {
            Err(_) => return Err(HandlerError::Fatal(format!("parsing took longer than {:?}", self.parse_timeout))),
            Ok(Err(join)) => return Err(HandlerError::Fatal(format!("parser crashed: {join}"))),
            Ok(Ok(Err(reason))) => return Err(HandlerError::Fatal(reason)),
            Ok(Ok(Ok(chunks))) => chunks,
        };
        if chunks.is_empty() {
            return Err(HandlerError::Fatal("document has no text to index".into()));
        }

        let batches: Vec<ChunkBatch> = chunks
            .chunks(self.batch_size)
            .enumerate()
            .map(|(batch_index, group)| ChunkBatch {
                job_id: job.job_id.clone(),
                tenant_id: job.tenant_id.clone(),
                document_id: job.document_id.clone(),
                version: job.version,
                batch_index: batch_index as u32,
                chunks: group
                    .iter()
                    .enumerate()
                    .map(|(i, chunk)| Chunk {
                        index: (batch_index * self.batch_size + i) as u32,
                        content_hash: hex::encode(Sha256::digest(chunk.text.as_bytes())),
                        text: chunk.text.clone(),
                        char_start: chunk.char_start as u32,
                        char_end: chunk.char_end as u32,
                    })
                    .collect(),
            })
            .collect();
        let outcome = self.store.commit_chunks(job_id, &batches).await?;
        match outcome {
            ChunkingOutcome::Enqueued(count) => {
                metrics::counter!("millrace_chunking_chunks_total").increment(chunks.len() as u64);
                metrics::counter!("millrace_chunking_documents_total").increment(1);
                info!(job_id, chunks = chunks.len(), batches = count, "chunked document");
            }
            ChunkingOutcome::AlreadyDone => info!(job_id, "already chunked by an earlier delivery"),
            ChunkingOutcome::JobFinished => info!(job_id, "job finished while chunking; dropped"),
        }
        Ok(())
    }

    async fn give_up(&self, message: &Message, reason: &str) {
        fail_job(&self.store, message, Stage::Chunking, reason).await;
    }
}
