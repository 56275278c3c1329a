//! Job records and payloads in Redis, and the atomic steps that move a job along.

use std::collections::HashMap;
use std::time::Duration;

use millrace_common::telemetry::context;
use millrace_common::time::now_millis;
use millrace_proto::{ChunkBatch, EmbeddingBatch, MetadataBatch};
use prost::Message as _;
use redis::AsyncCommands;

use crate::scripts::{COMMIT_CHUNKS, COMPLETE_HALF, FINISH, RECORD_STORED};
use crate::{BatchRef, EntryRef, HistoryEntry, Job, JobOptions, JobStatus, Keys, Stage};

#[derive(Debug, thiserror::Error)]
pub enum JobStoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis pool: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
    #[error("corrupt payload {key}: {source}")]
    Decode { key: String, source: prost::DecodeError },
}

impl JobStoreError {
    /// Redis being away is worth a retry; a corrupt payload is not.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Decode { .. })
    }
}

/// A stage handler that cannot reach the job store tries the entry again later. (Every job
/// store error is retried this way, a corrupt payload included, until `max_deliveries`.)
impl From<JobStoreError> for millrace_streams::HandlerError {
    fn from(err: JobStoreError) -> Self {
        Self::Retry(err.to_string())
    }
}

/// A document as submitted.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The tenant of the key that submitted it: the job's, its stream entries' and its chunks'.
    pub tenant_id: String,
    /// The collection the document goes to.
    pub collection: String,
    pub document_id: String,
    pub content_type: String,
    pub source: String,
    pub metadata: serde_json::Value,
    /// The document's bytes; empty when it is fetched from `url` by the chunking stage.
    pub content: Vec<u8>,
    /// Hex SHA-256 of `content` (empty for a URL, whose content is not known yet).
    pub content_hash: String,
    /// Where to fetch the document, for a submission by URL.
    pub url: Option<String>,
    pub options: JobOptions,
    /// See [`crate::fingerprint`]; empty for a URL (its content is not known yet).
    pub fingerprint: String,
    /// The run the job is part of (see [`crate::run`]): the job counts in its `open` jobs.
    pub run_id: Option<String>,
    /// The HTTP status of the fetch that gave `content`, when the submitter fetched it (a crawl).
    pub http_status: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkingOutcome {
    /// The batches were stored and enqueued now.
    Enqueued(u32),
    /// A previous delivery already did it.
    AlreadyDone,
    /// The job is finished (cancelled or failed) or gone: nothing to do.
    JobFinished,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HalfOutcome {
    /// Recorded; the other half is still running.
    Recorded,
    /// Recorded, and this call enqueued the batch for storage.
    EnqueuedStorage,
    /// The job finished, or is gone, or a retry replaced the entry's attempt: nothing recorded.
    JobFinished,
}

/// The two halves of a batch that `COMPLETE_HALF` joins.
#[derive(Debug, Clone, Copy)]
enum Half {
    Metadata,
    Embeddings,
}

impl Half {
    /// The half's letter in the job's join hash.
    fn flag(self) -> &'static str {
        match self {
            Half::Metadata => "m",
            Half::Embeddings => "e",
        }
    }

    /// The job record's count of chunks this half has done.
    fn counter(self) -> &'static str {
        match self {
            Half::Metadata => "metadata_done",
            Half::Embeddings => "embedded",
        }
    }

    fn stage(self) -> Stage {
        match self {
            Half::Metadata => Stage::Metadata,
            Half::Embeddings => Stage::Embeddings,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOutcome {
    pub batches_stored: u32,
    pub batches_total: u32,
    pub status: Option<JobStatus>,
    /// A dead-letter retry replaced the entry's attempt: nothing was counted.
    pub stale: bool,
}

/// What a cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    Cancelled,
    /// The job had already finished (or is gone): nothing changed.
    AlreadyFinished,
    /// Every batch is stored and the version is being made visible: too late to cancel.
    Committing,
}

impl StoredOutcome {
    pub fn all_stored(&self) -> bool {
        self.batches_total > 0 && self.batches_stored >= self.batches_total
    }
}

/// What a stored batch adds to its job's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoredCounts {
    pub chunks: usize,
    /// Chunks whose stored metadata and embedding were both reused.
    pub reused: usize,
    pub metadata_failed: usize,
}

#[derive(Clone)]
pub struct JobStore {
    pool: deadpool_redis::Pool,
    keys: Keys,
    retention: Duration,
    failed_payload_retention: Duration,
}

impl JobStore {
    pub fn new(pool: deadpool_redis::Pool, keys: Keys, retention: Duration) -> Self {
        Self { pool, keys, retention, failed_payload_retention: retention }
    }

    /// How long a failed job's payloads stay for a dead-letter retry (capped by the retention).
    pub fn with_failed_payload_retention(mut self, ttl: Duration) -> Self {
        self.failed_payload_retention = ttl.min(self.retention);
        self
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn pool(&self) -> &deadpool_redis::Pool {
        &self.pool
    }

    /// How long job records and payloads are kept.
    pub fn retention(&self) -> Duration {
        self.retention
    }

    async fn conn(&self) -> Result<deadpool_redis::Connection, JobStoreError> {
        Ok(self.pool.get().await?)
    }

    /// Records a new job, stores its content and enqueues it for chunking, in one transaction.
    /// Each submission of a document gets the next version number of that document.
    pub async fn create(&self, new: NewJob) -> Result<Job, JobStoreError> {
        let mut conn = self.conn().await?;
        let (pipe, fields) = self.create_pipe(&mut conn, &new).await?;
        pipe.query_async::<()>(&mut conn).await?;
        job_from_fields(fields)
    }

    /// The new job as read back from what [`JobStore::create_pipe`] writes.
    pub(crate) fn new_job(fields: Vec<(&'static str, String)>) -> Result<Job, JobStoreError> {
        job_from_fields(fields)
    }

    /// The transaction [`JobStore::create`] runs (its version number is taken on `conn` first),
    /// for callers that add their own steps to it (the crawler's per-page marker).
    pub(crate) async fn create_pipe(
        &self,
        conn: &mut deadpool_redis::Connection,
        new: &NewJob,
    ) -> Result<(redis::Pipeline, Vec<(&'static str, String)>), JobStoreError> {
        let job_id = uuid::Uuid::now_v7().to_string();
        let version: u64 = conn.incr(self.keys.document_version(&new.tenant_id, &new.document_id), 1).await?;
        let now = now_millis();
        let ttl = self.retention.as_secs().max(1);
        let mut fields = job_fields(&job_id, new, version, JobStatus::Queued, now);
        // Counted in its tenant's backlog until FINISH takes it out (see `Keys::tenant_backlog`).
        fields.push((IN_BACKLOG, "1".to_owned()));
        let retention_ms = self.retention.as_millis() as i64;
        let entry = EntryRef {
            job_id: job_id.clone(),
            generation: 0,
            tenant: new.tenant_id.clone(),
            collection: new.collection.clone(),
        };
        let mut enqueue = redis::cmd("XADD");
        enqueue.arg(self.keys.stream(Stage::Chunking)).arg("*");
        for (name, value) in entry.to_fields(context::traceparent().as_deref()) {
            enqueue.arg(name).arg(value);
        }
        let mut pipe = self.record_pipe(&job_id, &new.tenant_id, &fields, now);
        if let Some(run_id) = &new.run_id {
            pipe.hincr(self.keys.run(run_id), "open", 1).ignore();
        }
        pipe.add_command(self.history(&HistoryEntry::JobQueued {
            job_id: job_id.clone(),
            tenant: new.tenant_id.clone(),
            run_id: new.run_id.clone().unwrap_or_default(),
        }))
        .ignore();
        pipe.cmd("SET")
            .arg(self.keys.content(&job_id))
            .arg(&new.content)
            .arg("EX")
            .arg(ttl)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(self.keys.jobs_index())
            .arg("-inf")
            .arg(now - retention_ms)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(self.keys.tenant_jobs(&new.tenant_id))
            .arg("-inf")
            .arg(now - retention_ms)
            .ignore()
            .sadd(self.keys.active_jobs(), &job_id)
            .ignore()
            .hincr(self.keys.tenant_backlog(), &new.tenant_id, 1)
            .ignore()
            .zadd(self.keys.document_jobs(&new.tenant_id, &new.document_id), &job_id, version)
            .ignore()
            .expire(self.keys.document_jobs(&new.tenant_id, &new.document_id), ttl as i64)
            .ignore()
            .hincr(self.keys.job_status_counts(), JobStatus::Queued.as_str(), 1)
            .ignore()
            .hincr(self.keys.job_status_counts(), crate::counts::QUEUED_BYTES, new.content.len())
            .ignore()
            .add_command(enqueue)
            .ignore()
            .cmd("XADD")
            .arg(self.keys.job_events(&job_id))
            .arg("*")
            .arg("type")
            .arg("queued")
            .ignore()
            .expire(self.keys.job_events(&job_id), ttl as i64)
            .ignore();
        Ok((pipe, fields))
    }

    /// The command that appends `entry` to the history stream.
    pub fn history(&self, entry: &HistoryEntry) -> redis::Cmd {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(self.keys.history_stream()).arg("*");
        for (name, value) in entry.to_fields() {
            cmd.arg(name).arg(value);
        }
        cmd
    }

    /// Appends `entry` to the history stream.
    pub async fn record_history(&self, entry: &HistoryEntry) -> Result<(), JobStoreError> {
        let mut conn = self.conn().await?;
        self.history(entry).query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// A transaction that writes a new job's record (expiring with the retention period) and
    /// indexes it by creation time, in all and in its tenant; callers add what their kind of job
    /// needs.
    fn record_pipe(&self, job_id: &str, tenant_id: &str, fields: &[(&str, String)], now: i64) -> redis::Pipeline {
        let job_key = self.keys.job(job_id);
        let tenant_jobs = self.keys.tenant_jobs(tenant_id);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset_multiple(&job_key, fields)
            .ignore()
            .expire(&job_key, self.retention.as_secs().max(1) as i64)
            .ignore()
            .zadd(self.keys.jobs_index(), job_id, now)
            .ignore()
            .zadd(&tenant_jobs, job_id, now)
            .ignore()
            .expire(&tenant_jobs, self.retention.as_secs().max(1) as i64)
            .ignore();
        pipe
    }

    /// Records a submission identical to the document's visible version (same fingerprint) as
    /// a job completed at once: no new version, no payload, no stream entry; every chunk of
    /// `version` counts as reused. Only while `version` is also the last one submitted: if a
    /// later submission is still running (or failed), completing this one at once would let
    /// that later one win although this one came last, so `None` is returned and the caller
    /// submits a new version instead. Checked atomically with WATCH on the version counter.
    pub async fn create_unchanged(
        &self,
        new: &NewJob,
        version: u64,
        chunks: u64,
    ) -> Result<Option<Job>, JobStoreError> {
        let mut conn = self.conn().await?;
        let counter = self.keys.document_version(&new.tenant_id, &new.document_id);
        redis::cmd("WATCH").arg(&counter).query_async::<()>(&mut conn).await?;
        let latest: Option<u64> = conn.get(&counter).await?;
        if latest.is_some_and(|latest| latest != version) {
            redis::cmd("UNWATCH").query_async::<()>(&mut conn).await?;
            return Ok(None);
        }
        let job_id = uuid::Uuid::now_v7().to_string();
        let now = now_millis();
        let mut fields = job_fields(&job_id, new, version, JobStatus::Completed, now);
        let count = chunks.to_string();
        for (name, value) in &mut fields {
            if ["chunks_total", "metadata_done", "embedded", "stored", "reused"].contains(name) {
                *value = count.clone();
            }
        }
        fields.extend([("started_ms", now.to_string()), ("finished_ms", now.to_string()), ("unchanged", "1".into())]);
        self.record_pipe(&job_id, &new.tenant_id, &fields, now)
            .zadd(self.keys.finished_jobs(), &job_id, now)
            .ignore()
            .hincr(self.keys.job_status_counts(), JobStatus::Completed.as_str(), 1)
            .ignore()
            .cmd("XADD")
            .arg(self.keys.job_events(&job_id))
            .arg("*")
            .arg("type")
            .arg("completed")
            .arg("unchanged")
            .arg("1")
            .ignore()
            .add_command(self.history(&HistoryEntry::JobFinished {
                job_id: job_id.clone(),
                tenant: new.tenant_id.clone(),
                run_id: new.run_id.clone().unwrap_or_default(),
            }))
            .ignore()
            .expire(self.keys.job_events(&job_id), self.retention.as_secs().max(1) as i64)
            .ignore()
            .query_async::<Option<()>>(&mut conn)
            .await?
            // EXEC answered nil: a submission took the counter meanwhile.
            .map_or(Ok(None), |()| job_from_fields(fields).map(Some))
    }

    /// The last version number given to a submission of the document (0 if none).
    pub async fn latest_version(&self, tenant_id: &str, document_id: &str) -> Result<u64, JobStoreError> {
        let mut conn = self.conn().await?;
        let latest: Option<u64> = conn.get(self.keys.document_version(tenant_id, document_id)).await?;
        Ok(latest.unwrap_or(0))
    }

    /// Cancels the document's unfinished jobs of versions up to `through_version`, with
    /// `reason` as their error (by the `ingestion` stage), and drops their payloads. Returns how
    /// many were cancelled. Finished jobs leave the document's index.
    pub async fn cancel_document_jobs(
        &self,
        tenant_id: &str,
        document_id: &str,
        through_version: u64,
        reason: &str,
    ) -> Result<usize, JobStoreError> {
        let index = self.keys.document_jobs(tenant_id, document_id);
        let job_ids: Vec<String> = {
            let mut conn = self.conn().await?;
            conn.zrangebyscore(&index, "-inf", through_version).await?
        };
        let mut cancelled = 0;
        for job_id in job_ids {
            // Not refused while committing: storage's tombstone check refuses that commit.
            if self.cancel_with(&job_id, Some(("ingestion", reason)), false).await? == 1 {
                cancelled += 1;
            }
            let mut conn = self.conn().await?;
            let _: () = conn.zrem(&index, &job_id).await?;
        }
        Ok(cancelled)
    }

    /// The document's jobs of versions up to `through_version` that are still recorded.
    pub async fn document_jobs(
        &self,
        tenant_id: &str,
        document_id: &str,
        through_version: u64,
    ) -> Result<Vec<Job>, JobStoreError> {
        let mut conn = self.conn().await?;
        let job_ids: Vec<String> =
            conn.zrangebyscore(self.keys.document_jobs(tenant_id, document_id), "-inf", through_version).await?;
        if job_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for job_id in &job_ids {
            pipe.hgetall(self.keys.job(job_id));
        }
        let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut conn).await?;
        Ok(hashes.iter().filter_map(Job::from_hash).collect())
    }

    pub async fn get(&self, job_id: &str) -> Result<Option<Job>, JobStoreError> {
        let mut conn = self.conn().await?;
        let fields: HashMap<String, String> = conn.hgetall(self.keys.job(job_id)).await?;
        Ok(Job::from_hash(&fields))
    }

    /// A tenant's jobs, newest first, optionally only one status. Scans at most a few thousand
    /// of its recent jobs.
    pub async fn list(
        &self,
        tenant_id: &str,
        status: Option<JobStatus>,
        limit: usize,
    ) -> Result<Vec<Job>, JobStoreError> {
        const PAGE: isize = 200;
        const MAX_SCANNED: isize = 5_000;
        let index = self.keys.tenant_jobs(tenant_id);
        let mut conn = self.conn().await?;
        let mut jobs = Vec::new();
        let mut start = 0;
        while jobs.len() < limit && start < MAX_SCANNED {
            let ids: Vec<String> = conn.zrevrange(&index, start, start + PAGE - 1).await?;
            if ids.is_empty() {
                break;
            }
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.hgetall(self.keys.job(id));
            }
            let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut conn).await?;
            for hash in hashes {
                // The index only ever holds the tenant's jobs; the check costs nothing and keeps a
                // hand-edited index from showing another tenant's job.
                if let Some(job) = Job::from_hash(&hash)
                    && job.tenant_id == tenant_id
                    && status.is_none_or(|s| s == job.status)
                    && jobs.len() < limit
                {
                    jobs.push(job);
                }
            }
            start += PAGE;
        }
        Ok(jobs)
    }

    /// Jobs finished within the last `window` (for throughput estimates).
    pub async fn finished_within(&self, window: Duration) -> Result<u64, JobStoreError> {
        let mut conn = self.conn().await?;
        let since = now_millis() - window.as_millis() as i64;
        Ok(conn.zcount(self.keys.finished_jobs(), since, "+inf").await?)
    }

    pub async fn content(&self, job_id: &str) -> Result<Option<Vec<u8>>, JobStoreError> {
        let mut conn = self.conn().await?;
        Ok(conn.get(self.keys.content(job_id)).await?)
    }

    /// Stores the batches of a chunked document and enqueues each on both the metadata and
    /// the embeddings stream, at once, so the two stages work on a batch in parallel.
    /// `started_ms`: when the chunking worker read the job's entry (the `chunked` event says so).
    pub async fn commit_chunks(
        &self,
        entry: &EntryRef,
        started_ms: i64,
        batches: &[ChunkBatch],
    ) -> Result<ChunkingOutcome, JobStoreError> {
        let job_id = entry.job_id.as_str();
        let chunks_total: usize = batches.iter().map(|b| b.chunks.len()).sum();
        let mut invocation = COMMIT_CHUNKS.prepare_invoke();
        invocation
            .key(self.keys.job(job_id))
            .key(self.keys.stream(Stage::Metadata))
            .key(self.keys.stream(Stage::Embeddings))
            .key(self.keys.job_events(job_id))
            .arg(job_id)
            .arg(chunks_total)
            .arg(self.retention.as_secs().max(1))
            .arg(now_millis())
            .arg(context::traceparent().unwrap_or_default())
            .arg(entry.generation)
            .arg(started_ms);
        for batch in batches {
            invocation.key(self.keys.batch(job_id, batch.batch_index)).arg(batch.encode_to_vec());
        }
        invocation.key(self.keys.job_status_counts());
        let mut conn = self.conn().await?;
        let result: i64 = invocation.invoke_async(&mut conn).await?;
        Ok(match result {
            n if n > 0 => ChunkingOutcome::Enqueued(n as u32),
            0 => ChunkingOutcome::AlreadyDone,
            _ => ChunkingOutcome::JobFinished,
        })
    }

    pub async fn load_batch(&self, job_id: &str, batch: u32) -> Result<Option<ChunkBatch>, JobStoreError> {
        self.load(&self.keys.batch(job_id, batch)).await
    }

    pub async fn load_metadata(&self, job_id: &str, batch: u32) -> Result<Option<MetadataBatch>, JobStoreError> {
        self.load(&self.keys.metadata_result(job_id, batch)).await
    }

    pub async fn load_embeddings(&self, job_id: &str, batch: u32) -> Result<Option<EmbeddingBatch>, JobStoreError> {
        self.load(&self.keys.embeddings_result(job_id, batch)).await
    }

    async fn load<M: prost::Message + Default>(&self, key: &str) -> Result<Option<M>, JobStoreError> {
        let mut conn = self.conn().await?;
        let bytes: Option<Vec<u8>> = conn.get(key).await?;
        bytes
            .map(|b| M::decode(b.as_slice()).map_err(|source| JobStoreError::Decode { key: key.to_owned(), source }))
            .transpose()
    }

    /// Records a batch's metadata. `started_ms`: when the metadata worker read the batch's entry
    /// (its `batch` event says so).
    pub async fn complete_metadata(
        &self,
        entry: &BatchRef,
        started_ms: i64,
        chunk_count: usize,
        result: &MetadataBatch,
    ) -> Result<HalfOutcome, JobStoreError> {
        let key = self.keys.metadata_result(&entry.job_id, entry.batch);
        self.complete_half(entry, started_ms, chunk_count, Half::Metadata, &key, result.encode_to_vec()).await
    }

    /// Records a batch's vectors. `started_ms`: when the embeddings worker read the batch's
    /// entry (its `batch` event says so).
    pub async fn complete_embeddings(
        &self,
        entry: &BatchRef,
        started_ms: i64,
        chunk_count: usize,
        result: &EmbeddingBatch,
    ) -> Result<HalfOutcome, JobStoreError> {
        let key = self.keys.embeddings_result(&entry.job_id, entry.batch);
        self.complete_half(entry, started_ms, chunk_count, Half::Embeddings, &key, result.encode_to_vec()).await
    }

    async fn complete_half(
        &self,
        entry: &BatchRef,
        started_ms: i64,
        chunk_count: usize,
        half: Half,
        result_key: &str,
        payload: Vec<u8>,
    ) -> Result<HalfOutcome, JobStoreError> {
        let BatchRef { job_id, batch, generation, .. } = entry;
        let (job_id, batch) = (job_id.as_str(), *batch);
        let mut conn = self.conn().await?;
        let result: i64 = COMPLETE_HALF
            .key(self.keys.job(job_id))
            .key(self.keys.join(job_id))
            .key(result_key)
            .key(self.keys.stream(Stage::Storage))
            .key(self.keys.job_events(job_id))
            .arg(half.flag())
            .arg(batch)
            .arg(chunk_count)
            .arg(payload)
            .arg(self.retention.as_secs().max(1))
            .arg(job_id)
            .arg(half.counter())
            .arg(half.stage().name())
            .arg(context::traceparent().unwrap_or_default())
            .arg(generation)
            .arg(started_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok(match result {
            2 => HalfOutcome::EnqueuedStorage,
            1 => HalfOutcome::Recorded,
            _ => HalfOutcome::JobFinished,
        })
    }

    /// Counts a stored batch (once), with its reused chunks and failed metadata, and tells
    /// whether every batch of the job is stored. `started_ms`: when the storage worker read the
    /// batch's entry (its `batch` event says so).
    pub async fn record_stored(
        &self,
        entry: &BatchRef,
        started_ms: i64,
        counts: StoredCounts,
    ) -> Result<StoredOutcome, JobStoreError> {
        let (job_id, batch) = (entry.job_id.as_str(), entry.batch);
        let mut conn = self.conn().await?;
        let (batches_stored, batches_total, status): (u32, u32, String) = RECORD_STORED
            .key(self.keys.job(job_id))
            .key(self.keys.join(job_id))
            .key(self.keys.job_events(job_id))
            .arg(batch)
            .arg(counts.chunks)
            .arg(counts.reused)
            .arg(counts.metadata_failed)
            .arg(self.retention.as_secs().max(1))
            .arg(entry.generation)
            .arg(started_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok(StoredOutcome { batches_stored, batches_total, stale: status == "stale", status: JobStatus::parse(&status) })
    }

    /// Moves the job to a final status; returns false if it had already finished.
    pub async fn finish(
        &self,
        job_id: &str,
        status: JobStatus,
        error: Option<(&str, &str)>,
    ) -> Result<bool, JobStoreError> {
        Ok(self.finish_with(job_id, status, error, None, false).await? == 1)
    }

    /// Fails the job for a stage that gave up on one of its entries, unless a dead-letter retry
    /// replaced the entry's attempt meanwhile (a stale entry must not fail the reopened job).
    /// Returns whether this call failed the job.
    /// Its payloads then stay only `MILLRACE_FAILED_PAYLOAD_RETENTION_SECS`.
    pub async fn fail(&self, entry: &EntryRef, stage: Stage, reason: &str) -> Result<bool, JobStoreError> {
        let outcome = self.finish_with(
            &entry.job_id,
            JobStatus::Failed,
            Some((stage.name(), reason)),
            Some(entry.generation),
            false,
        );
        if outcome.await? != 1 {
            return Ok(false);
        }
        if let Some(job) = self.get(&entry.job_id).await? {
            self.expire_payloads(&entry.job_id, job.batches_total, self.failed_payload_retention).await?;
        }
        Ok(true)
    }

    /// Cancels the job unless it finished or is committing its last batch. A cancelled job's
    /// payloads are dropped at once: nothing can resume it.
    pub async fn cancel(&self, job_id: &str) -> Result<CancelOutcome, JobStoreError> {
        Ok(match self.cancel_with(job_id, None, true).await? {
            1 => CancelOutcome::Cancelled,
            2 => CancelOutcome::Committing,
            _ => CancelOutcome::AlreadyFinished,
        })
    }

    /// FINISH as cancelled and, if this call cancelled the job, drops its payloads. Returns
    /// FINISH's answer.
    async fn cancel_with(
        &self,
        job_id: &str,
        error: Option<(&str, &str)>,
        refuse_if_committing: bool,
    ) -> Result<i64, JobStoreError> {
        let outcome = self.finish_with(job_id, JobStatus::Cancelled, error, None, refuse_if_committing).await?;
        if outcome == 1
            && let Some(job) = self.get(job_id).await?
        {
            self.delete_payloads(job_id, job.batches_total).await?;
        }
        Ok(outcome)
    }

    /// FINISH's answer: 1 finished now, 0 already finished, -2 unknown, -3 other generation,
    /// 2 refused while committing.
    async fn finish_with(
        &self,
        job_id: &str,
        status: JobStatus,
        error: Option<(&str, &str)>,
        generation: Option<u64>,
        refuse_if_committing: bool,
    ) -> Result<i64, JobStoreError> {
        let (stage, message) = error.unwrap_or(("", ""));
        let mut conn = self.conn().await?;
        let result: i64 = FINISH
            .key(self.keys.job(job_id))
            .key(self.keys.active_jobs())
            .key(self.keys.finished_jobs())
            .key(self.keys.job_events(job_id))
            .key(self.keys.job_status_counts())
            .key(self.keys.tenant_backlog())
            .key(self.keys.history_stream())
            .arg(status.as_str())
            .arg(now_millis())
            .arg(self.retention.as_secs().max(1))
            .arg(job_id)
            .arg(stage)
            .arg(message)
            .arg(generation.map(|g| g.to_string()).unwrap_or_default())
            .arg(if refuse_if_committing { "1" } else { "" })
            .arg(self.keys.run_prefix())
            .invoke_async(&mut conn)
            .await?;
        Ok(result)
    }

    /// Drops a finished job's payloads; its record stays until the retention period ends.
    pub async fn delete_payloads(&self, job_id: &str, batches_total: u32) -> Result<(), JobStoreError> {
        let keys = self.payload_keys(job_id, batches_total);
        let mut conn = self.conn().await?;
        for chunk in keys.chunks(256) {
            let _: () = conn.unlink(chunk).await?;
        }
        Ok(())
    }

    /// Shortens how long a failed job's payloads are kept: long enough for a dead-letter retry
    /// once the cause is fixed, not the whole retention period (a retry gives them a full
    /// one again).
    pub async fn expire_payloads(&self, job_id: &str, batches_total: u32, ttl: Duration) -> Result<(), JobStoreError> {
        let keys = self.payload_keys(job_id, batches_total);
        let mut conn = self.conn().await?;
        for chunk in keys.chunks(256) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.expire(key, ttl.as_secs().max(1) as i64).ignore();
            }
            pipe.query_async::<()>(&mut conn).await?;
        }
        Ok(())
    }

    fn payload_keys(&self, job_id: &str, batches_total: u32) -> Vec<String> {
        let mut keys = vec![self.keys.content(job_id), self.keys.join(job_id)];
        for batch in 0..batches_total {
            keys.push(self.keys.batch(job_id, batch));
            keys.push(self.keys.metadata_result(job_id, batch));
            keys.push(self.keys.embeddings_result(job_id, batch));
        }
        keys
    }
}

/// The field of a job's record present while the job counts in its tenant's backlog: `FINISH`
/// takes it out once (and a job recorded before the per-tenant counts began, which lacks it,
/// takes nothing out that it never put in).
const IN_BACKLOG: &str = "in_backlog";

/// The job a new record describes: exactly what was just written, so it need not be read back.
fn job_from_fields(fields: Vec<(&str, String)>) -> Result<Job, JobStoreError> {
    let written: HashMap<String, String> = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    Job::from_hash(&written).ok_or_else(|| {
        JobStoreError::Redis(redis::RedisError::from((redis::ErrorKind::Client, "malformed new job record")))
    })
}

/// The fields of a new job's record.
fn job_fields(job_id: &str, new: &NewJob, version: u64, status: JobStatus, now: i64) -> Vec<(&'static str, String)> {
    vec![
        ("job_id", job_id.to_owned()),
        ("tenant_id", new.tenant_id.clone()),
        ("collection", new.collection.clone()),
        ("document_id", new.document_id.clone()),
        ("version", version.to_string()),
        ("status", status.as_str().to_owned()),
        ("content_type", new.content_type.clone()),
        ("content_hash", new.content_hash.clone()),
        ("fingerprint", new.fingerprint.clone()),
        ("content_bytes", new.content.len().to_string()),
        ("source", new.source.clone()),
        ("url", new.url.clone().unwrap_or_default()),
        ("options", serde_json::to_string(&new.options).unwrap_or_else(|_| "{}".to_owned())),
        ("metadata", new.metadata.to_string()),
        ("created_ms", now.to_string()),
        ("last_attempt_ms", now.to_string()),
        ("run_id", new.run_id.clone().unwrap_or_default()),
        ("http_status", new.http_status.map(|status| status.to_string()).unwrap_or_default()),
        ("chunks_total", "0".into()),
        ("metadata_done", "0".into()),
        ("embedded", "0".into()),
        ("stored", "0".into()),
        ("reused", "0".into()),
        ("metadata_failed", "0".into()),
        ("batches_total", "0".into()),
        ("batches_stored", "0".into()),
        ("trace_id", context::trace_id().unwrap_or_default()),
    ]
}
