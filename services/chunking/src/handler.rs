//! What the chunking stage does with one stream entry (one job): parse and split the document
//! safely, then hand the chunks on in batches.
//!
//! Parsing is CPU work on untrusted input, so it runs on a blocking thread under
//! `MILLRACE_PARSE_TIMEOUT_MS`, and a panic fails this job only. A blocking thread cannot be
//! stopped, so a parse that times out keeps running: each parse holds a permit until it really
//! ends, and at most `MILLRACE_MAX_CONCURRENT_PARSES` run at once, so runaway parses cannot use
//! up the blocking pool (or the CPUs) however many jobs arrive.

use std::sync::Arc;
use std::time::{Duration, Instant};

use millrace_pipeline::runtime::fail_job;
use millrace_pipeline::{ChunkingOutcome, EntryRef, JobStore, Stage};
use millrace_proto::{Chunk, ChunkBatch};
use millrace_streams::{Handler, HandlerError, Message};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::parse::{ParseLimits, parse_document};
use crate::reuse::StoredChunks;
use crate::split::{ChunkSizes, Sizer, TextChunk, split_document};

pub struct ChunkingHandler {
    store: JobStore,
    sizer: Sizer,
    sizes: ChunkSizes,
    limits: ParseLimits,
    batch_size: usize,
    parse_timeout: Duration,
    parses: Arc<Semaphore>,
    fetcher: millrace_fetch::Fetcher,
    stored: StoredChunks,
}

impl ChunkingHandler {
    pub fn new(
        store: JobStore,
        config: &crate::Config,
        fetcher: millrace_fetch::Fetcher,
        stored: StoredChunks,
    ) -> Self {
        Self {
            store,
            fetcher,
            stored,
            sizer: config.sizer.clone(),
            sizes: config.sizes,
            limits: config.limits,
            batch_size: config.batch_size,
            parse_timeout: config.parse_timeout,
            parses: Arc::new(Semaphore::new(config.max_concurrent_parses)),
        }
    }
}

impl Handler for ChunkingHandler {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
        let entry = EntryRef::from_fields(&message.fields).map_err(HandlerError::Fatal)?;
        let job_id = entry.job_id.as_str();
        let Some(job) = self.store.get(job_id).await? else {
            warn!(job_id, "job record is gone (expired?); skipping");
            return Ok(());
        };
        if job.status.is_terminal() || entry.is_stale(&job) {
            info!(job_id, status = job.status.as_str(), "job already finished or retried; skipping");
            return Ok(());
        }
        let sizes = self
            .sizes
            .with_options(job.options.chunk_size, job.options.chunk_overlap, self.sizer.model_limit())
            .map_err(|err| HandlerError::Fatal(err.to_string()))?;
        let crate::source::Document { bytes: content, content_type } =
            crate::source::load(&self.store, &self.fetcher, &job).await?;

        // Waiting for a slot is bounded too: if every slot is held by a runaway parse, the
        // entry is retried later rather than failed (the document may be fine).
        let permit = match tokio::time::timeout(self.parse_timeout, Arc::clone(&self.parses).acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) | Err(_) => {
                return Err(HandlerError::Retry("every parse slot is busy (MILLRACE_MAX_CONCURRENT_PARSES)".into()));
            }
        };
        let (sizer, limits) = (self.sizer.clone(), self.limits);
        let started = Instant::now();
        let span = tracing::info_span!(
            "parse",
            otel.name = format!("parse {content_type}"),
            millrace.content_type = content_type.as_str(),
            millrace.bytes = content.len(),
            millrace.chunks = tracing::field::Empty,
        );
        let running = crate::metrics::ParseRunning::start();
        let work = tokio::task::spawn_blocking(move || {
            let _permit = (permit, running);
            let _span = span.enter();
            let doc = parse_document(&content_type, &content, &limits).map_err(|err| err.to_string())?;
            let chunks = split_document(&doc, &sizer, sizes).map_err(|err| err.to_string())?;
            span.record("millrace.chunks", chunks.len());
            Ok::<_, String>((doc.title, chunks))
        });
        let (title, chunks) = match tokio::time::timeout(self.parse_timeout, work).await {
            Err(_) => {
                return Err(HandlerError::Fatal(format!(
                    "parsing took longer than {:?} (MILLRACE_PARSE_TIMEOUT_MS)",
                    self.parse_timeout
                )));
            }
            Ok(Err(join)) => return Err(HandlerError::Fatal(format!("parser crashed: {join}"))),
            Ok(Ok(Err(reason))) => return Err(HandlerError::Fatal(reason)),
            Ok(Ok(Ok(parsed))) => parsed,
        };
        metrics::histogram!(crate::metrics::PARSE_DURATION).record(started.elapsed().as_secs_f64());
        if chunks.is_empty() {
            return Err(HandlerError::Fatal("document has no text to index".into()));
        }

        let mut batches = batches(&job, title.unwrap_or_default(), &chunks, self.batch_size);
        // A document's first version has nothing stored to reuse.
        let reusable =
            if job.version > 1 { self.stored.attach(&job.tenant_id, &job.document_id, &mut batches).await? } else { 0 };
        let outcome = self.store.commit_chunks(&entry, &batches).await?;
        match outcome {
            ChunkingOutcome::Enqueued(count) => {
                metrics::counter!(crate::metrics::CHUNKS).increment(chunks.len() as u64);
                metrics::counter!(crate::metrics::DOCUMENTS).increment(1);
                metrics::counter!(crate::metrics::CHUNKS_UNCHANGED).increment(reusable as u64);
                metrics::counter!(crate::metrics::BATCHES).increment(u64::from(count));
                info!(job_id, chunks = chunks.len(), batches = count, unchanged = reusable, "chunked document");
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

fn batches(job: &millrace_pipeline::Job, title: String, chunks: &[TextChunk], batch_size: usize) -> Vec<ChunkBatch> {
    chunks
        .chunks(batch_size)
        .enumerate()
        .map(|(batch_index, group)| ChunkBatch {
            job_id: job.job_id.clone(),
            tenant_id: job.tenant_id.clone(),
            document_id: job.document_id.clone(),
            version: job.version,
            batch_index: batch_index as u32,
            document_title: title.clone(),
            chunks: group
                .iter()
                .enumerate()
                .map(|(i, chunk)| Chunk {
                    index: (batch_index * batch_size + i) as u32,
                    content_hash: hex::encode(Sha256::digest(chunk.text.as_bytes())),
                    text: chunk.text.clone(),
                    char_start: chunk.char_start as u32,
                    char_end: chunk.char_end as u32,
                    heading_path: chunk.heading_path.clone(),
                    page_start: chunk.page_start,
                    page_end: chunk.page_end,
                    stored: None,
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn batches_carry_the_title_and_each_chunk_its_place() {
        let fields: HashMap<String, String> =
            [("job_id", "j1"), ("status", "running"), ("tenant_id", "t"), ("document_id", "d"), ("version", "3")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        let job = millrace_pipeline::Job::from_hash(&fields).unwrap();
        let chunk = |i: usize| TextChunk {
            text: format!("chunk {i}"),
            char_start: i * 10,
            char_end: i * 10 + 7,
            byte_start: i * 10,
            byte_end: i * 10 + 7,
            heading_path: vec!["Guide".into(), format!("Part {i}")],
            page_start: i as u32 + 1,
            page_end: i as u32 + 2,
        };
        let chunks: Vec<TextChunk> = (0..5).map(chunk).collect();
        let batches = batches(&job, "The Guide".into(), &chunks, 2);
        assert_eq!(batches.len(), 3);
        assert!(batches.iter().all(|b| b.document_title == "The Guide" && b.version == 3 && b.job_id == "j1"));
        let last = &batches[2].chunks[0];
        assert_eq!((last.index, last.char_start, last.char_end), (4, 40, 47));
        assert_eq!(last.heading_path, ["Guide", "Part 4"]);
        assert_eq!((last.page_start, last.page_end), (5, 6));
        assert_eq!(last.content_hash, hex::encode(Sha256::digest(b"chunk 4")));
        assert!(last.stored.is_none());
    }
}
