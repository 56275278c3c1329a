//! What the chunking stage does with one stream entry (one job): parse and split the document
//! safely, then hand the chunks on in batches.
//!
//! Parsing and splitting are CPU work on untrusted input, so they run in a child process
//! ([`crate::parse_child`]) limited in memory (`MILLRACE_PARSE_MEMORY_BYTES`) and CPU, and
//! killed at `MILLRACE_PARSE_TIMEOUT_MS`. A child that is killed or crashes fails its own job
//! at once with the reason; the service goes on. At most `MILLRACE_MAX_CONCURRENT_PARSES`
//! children run at once; a killed child's permit is free as soon as it is reaped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use millrace_pipeline::runtime::{fail_job, foreign_entry};
use millrace_pipeline::{ChunkingOutcome, EntryRef, JobStore, Stage};
use millrace_proto::{Chunk, ChunkBatch};
use millrace_streams::{Handler, HandlerError, Message};
use tokio::sync::Semaphore;
use tracing::{Instrument, info, warn};

use crate::parse_child::ParseChild;
use crate::reuse::StoredChunks;
use crate::split::{ChunkSizes, Sizer};

pub struct ChunkingHandler {
    store: JobStore,
    sizer: Sizer,
    sizes: ChunkSizes,
    child: ParseChild,
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
            child: ParseChild {
                program: config.parse_child.clone(),
                memory_bytes: config.parse_memory_bytes,
                timeout: config.parse_timeout,
                limits: config.limits,
                unit: config.sizer.unit(),
                model_dir: config.model_dir.clone(),
            },
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
        // The job's record says whose document this is (and so whose stored chunks to reuse).
        if entry.foreign(&job) {
            return Err(foreign_entry(&entry.tenant, &job));
        }
        let sizes = self
            .sizes
            .with_options(job.options.chunk_size, job.options.chunk_overlap, self.sizer.model_limit())
            .map_err(|err| HandlerError::Fatal(err.to_string()))?;
        let Some(crate::source::Document { bytes: content, content_type }) =
            crate::source::load(&self.store, &self.fetcher, &job).await?
        else {
            info!(job_id, "job finished while its document was loaded; skipping");
            return Ok(());
        };

        // Waiting for a slot is bounded too: if every slot is busy, the entry is retried later
        // rather than failed (the document may be fine).
        let permit = match tokio::time::timeout(self.parse_timeout, Arc::clone(&self.parses).acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) | Err(_) => {
                return Err(HandlerError::Retry("every parse slot is busy (MILLRACE_MAX_CONCURRENT_PARSES)".into()));
            }
        };
        let started = Instant::now();
        let span = tracing::info_span!(
            "parse",
            otel.name = format!("parse {content_type}"),
            millrace.content_type = content_type.as_str(),
            millrace.bytes = content.len(),
            millrace.chunks = tracing::field::Empty,
        );
        let running = crate::metrics::ParseRunning::start();
        let parsed = self.child.run(&content_type, content, sizes).instrument(span.clone()).await;
        // The child has exited (or was killed and reaped): its slot is free.
        drop((permit, running));
        let crate::parse_child::ChildOutput { title, chunks } = parsed?;
        span.record("millrace.chunks", chunks.len());
        metrics::histogram!(crate::metrics::PARSE_DURATION).record(started.elapsed().as_secs_f64());
        if chunks.is_empty() {
            return Err(HandlerError::Fatal("document has no text to index".into()));
        }

        let mut batches = batches(&job, title.unwrap_or_default(), &chunks, self.batch_size);
        // A document's first version has nothing stored to reuse.
        let reusable =
            if job.version > 1 { self.stored.attach(&job.tenant_id, &job.document_id, &mut batches).await? } else { 0 };
        let outcome = self.store.commit_chunks(&entry, message.read_ms, &batches).await?;
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

/// The document's chunks (in order, indexed and hashed by the parse child) in batches of
/// `batch_size`, each carrying the job and the title.
fn batches(job: &millrace_pipeline::Job, title: String, chunks: &[Chunk], batch_size: usize) -> Vec<ChunkBatch> {
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
            chunks: group.to_vec(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use millrace_common::Settings;
    use millrace_pipeline::{JobOptions, Keys, NewJob};

    use super::*;

    /// The service binary next to this test binary (`target/<profile>/deps/..`): cargo builds
    /// it with the crate's integration tests.
    fn service_binary() -> String {
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
        dir.join("millrace-chunking").display().to_string()
    }

    async fn submit(store: &JobStore, text: Vec<u8>) -> Message {
        let new = NewJob {
            tenant_id: "t".into(),
            collection: "default".into(),
            document_id: format!("doc-{}", text.len()),
            content_type: "text/plain".into(),
            source: "test".into(),
            metadata: serde_json::json!({}),
            content: text,
            content_hash: String::new(),
            url: None,
            options: JobOptions::default(),
            fingerprint: String::new(),
            run_id: None,
            http_status: None,
        };
        let job = store.create(new).await.unwrap();
        let entry =
            EntryRef { job_id: job.job_id.clone(), generation: 0, tenant: "t".into(), collection: "default".into() };
        let fields = entry.to_fields(None).into_iter().map(|(name, value)| (name.to_owned(), value)).collect();
        Message { id: "1-0".into(), fields, delivery: 1, read_ms: millrace_common::time::now_millis() }
    }

    #[tokio::test]
    async fn a_parse_past_its_time_frees_its_slot_at_once() {
        let redis = millrace_testkit::RedisServer::start().unwrap();
        let pool = millrace_common::redis_conn::pool(&redis.url, 4).unwrap();
        let store = JobStore::new(pool, Keys::new("test"), Duration::from_secs(3600));
        let settings = Settings::from_pairs([
            ("CHUNK_TOKENIZER", "chars".to_owned()),
            ("PARSE_TIMEOUT_MS", "300".to_owned()),
            ("MAX_CONCURRENT_PARSES", "1".to_owned()),
            ("PARSE_CHILD", service_binary()),
        ]);
        let config = crate::Config::from_settings(&settings).unwrap();
        let fetcher = millrace_fetch::Fetcher::new(config.fetch.clone()).unwrap();
        let storage = millrace_common::grpc_client::lazy_channel(
            "STORAGE_URL",
            &config.storage_url,
            None,
            &config.service.grpc_tls,
        )
        .unwrap();
        let handler = ChunkingHandler::new(store.clone(), &config, fetcher, StoredChunks::new(storage));

        // Seconds of splitting: far past the 300 ms limit.
        let slow = submit(&store, "word".repeat(5_000_000).into_bytes()).await;
        match handler.handle(&slow).await {
            Err(HandlerError::Fatal(reason)) => assert!(reason.contains("MILLRACE_PARSE_TIMEOUT_MS"), "{reason}"),
            other => panic!("expected the slow parse to time out, got {other:?}"),
        }
        // The only slot is free again at once: the next document does not wait for the first.
        let small = submit(&store, b"a small document".to_vec()).await;
        let started = Instant::now();
        let result = handler.handle(&small).await;
        assert!(result.is_ok(), "{result:?}");
        assert!(started.elapsed() < Duration::from_millis(300), "{:?}", started.elapsed());
    }

    #[test]
    fn batches_carry_the_title_and_each_chunk_its_place() {
        let fields: HashMap<String, String> =
            [("job_id", "j1"), ("status", "running"), ("tenant_id", "t"), ("document_id", "d"), ("version", "3")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        let job = millrace_pipeline::Job::from_hash(&fields).unwrap();
        let chunk = |i: u32| Chunk {
            index: i,
            text: format!("chunk {i}"),
            content_hash: format!("hash {i}"),
            char_start: i * 10,
            char_end: i * 10 + 7,
            heading_path: vec!["Guide".into(), format!("Part {i}")],
            page_start: i + 1,
            page_end: i + 2,
            stored: None,
        };
        let chunks: Vec<Chunk> = (0..5).map(chunk).collect();
        let batches = batches(&job, "The Guide".into(), &chunks, 2);
        assert_eq!(batches.len(), 3);
        assert!(batches.iter().all(|b| b.document_title == "The Guide" && b.version == 3 && b.job_id == "j1"));
        let last = &batches[2].chunks[0];
        assert_eq!((last.index, last.char_start, last.char_end), (4, 40, 47));
        assert_eq!(last.heading_path, ["Guide", "Part 4"]);
        assert_eq!((last.page_start, last.page_end), (5, 6));
        assert_eq!((last.text.as_str(), last.content_hash.as_str()), ("chunk 4", "hash 4"));
        assert!(last.stored.is_none());
    }
}
