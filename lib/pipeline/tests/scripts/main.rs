//! The hand-off scripts against a real Redis: the races a stage, a cancel or a dead-letter retry
//! can run into, each played step by step with the job store's own calls.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod crawl;
mod each_script;
mod runs;
mod tenants;

use std::time::Duration;

use millrace_pipeline::{
    BatchRef, CancelOutcome, EntryRef, HalfOutcome, JobStatus, JobStore, Keys, NewJob, Stage, StoredCounts,
};
use millrace_proto::{Chunk, ChunkBatch, EmbeddingBatch, MetadataBatch};
use redis::AsyncCommands;

/// A job store on the test process's own redis-server, under a prefix of its own.
fn store() -> JobStore {
    let redis = millrace_testkit::RedisServer::shared().unwrap();
    let pool = millrace_common::redis_conn::pool(&redis.url, 4).unwrap();
    let prefix = format!("scripts-{}", uuid::Uuid::now_v7());
    JobStore::new(pool, Keys::new(prefix), Duration::from_secs(3600))
}

fn new_job(document_id: &str, content: &str) -> NewJob {
    NewJob {
        tenant_id: "t".into(),
        collection: "default".into(),
        document_id: document_id.into(),
        content_type: "text/plain".into(),
        source: String::new(),
        metadata: serde_json::json!({}),
        content: content.as_bytes().to_vec(),
        content_hash: format!("hash-of-{content}"),
        url: None,
        options: Default::default(),
        fingerprint: format!("fingerprint-of-{content}"),
        run_id: None,
        http_status: None,
    }
}

fn entry(job_id: &str, generation: u64) -> EntryRef {
    EntryRef { job_id: job_id.to_owned(), generation, tenant: "t".into(), collection: "default".into() }
}

fn batch(job_id: &str, batch: u32, generation: u64) -> BatchRef {
    BatchRef { job_id: job_id.to_owned(), batch, generation, tenant: "t".into(), collection: "default".into() }
}

/// The fields of every entry of a stream, oldest first.
async fn entries(store: &JobStore, stream: &str) -> Vec<std::collections::HashMap<String, String>> {
    let mut conn = store.pool().get().await.unwrap();
    let reply: redis::streams::StreamRangeReply = conn.xrange_all(stream).await.unwrap();
    reply
        .ids
        .iter()
        .map(|entry| {
            entry.map.iter().map(|(name, value)| (name.clone(), redis::from_redis_value_ref(value).unwrap())).collect()
        })
        .collect()
}

/// Chunks a job into `count` batches of one chunk, as the chunking stage would.
async fn chunk(store: &JobStore, job_id: &str, count: u32) {
    let batches: Vec<ChunkBatch> = (0..count)
        .map(|b| ChunkBatch {
            job_id: job_id.to_owned(),
            batch_index: b,
            chunks: vec![Chunk { index: b, text: format!("chunk {b}"), ..Default::default() }],
            ..Default::default()
        })
        .collect();
    store.commit_chunks(&entry(job_id, 0), STARTED_MS, &batches).await.unwrap();
}

/// Both halves of a batch, as metadata and embeddings would record them.
async fn halves(store: &JobStore, entry: &BatchRef) -> HalfOutcome {
    let metadata = MetadataBatch { chunk_metadata_json: vec!["{}".into()], ..Default::default() };
    store.complete_metadata(entry, STARTED_MS, 1, &metadata).await.unwrap();
    let embeddings = EmbeddingBatch { vectors: vec![Default::default()], ..Default::default() };
    store.complete_embeddings(entry, STARTED_MS, 1, &embeddings).await.unwrap()
}

/// When the test's stand-in workers read the entries they complete (Unix ms): the `started_ms`
/// of the events they write.
const STARTED_MS: i64 = 1_764_000_000_123;

fn one_chunk() -> StoredCounts {
    StoredCounts { chunks: 1, ..Default::default() }
}

/// Defect 4 of issue 13: submit A (stored), then B (still running), then A again. The last A
/// must not complete at once as "unchanged": B would then commit and stay visible although A
/// was submitted last.
#[tokio::test]
async fn an_identical_resubmission_is_not_unchanged_while_a_later_version_is_in_flight() {
    let store = store();
    let a = store.create(new_job("doc", "A")).await.unwrap();
    assert_eq!(a.version, 1);
    // A is visible as version 1 (storage says so); nothing newer was submitted: the shortcut holds.
    let again = store.create_unchanged(&new_job("doc", "A"), 1, 3).await.unwrap().expect("A again is unchanged");
    assert_eq!((again.status, again.version, again.unchanged), (JobStatus::Completed, 1, true));

    let b = store.create(new_job("doc", "B")).await.unwrap();
    assert_eq!(b.version, 2);
    assert!(
        store.create_unchanged(&new_job("doc", "A"), 1, 3).await.unwrap().is_none(),
        "A again was completed at once although B (version 2) is still running"
    );
    // The caller then submits A as a new version, which outranks B.
    assert_eq!(store.create(new_job("doc", "A")).await.unwrap().version, 3);
}

/// Defect 5 of issue 13: once the last batch is counted, the job is committing its version;
/// a cancel then is refused, so a version is never both made visible and discarded.
#[tokio::test]
async fn a_cancel_is_refused_once_the_last_batch_is_stored() {
    let store = store();
    let job = store.create(new_job("doc", "two batches")).await.unwrap();
    chunk(&store, &job.job_id, 2).await;
    for b in 0..2 {
        halves(&store, &batch(&job.job_id, b, 0)).await;
    }
    let first = store.record_stored(&batch(&job.job_id, 0, 0), STARTED_MS, one_chunk()).await.unwrap();
    assert!(!first.all_stored());

    let other = store.create(new_job("other", "x")).await.unwrap();
    assert_eq!(store.cancel(&other.job_id).await.unwrap(), CancelOutcome::Cancelled);
    assert_eq!(store.cancel(&other.job_id).await.unwrap(), CancelOutcome::AlreadyFinished);

    let last = store.record_stored(&batch(&job.job_id, 1, 0), STARTED_MS, one_chunk()).await.unwrap();
    assert!(last.all_stored());
    assert_eq!(store.cancel(&job.job_id).await.unwrap(), CancelOutcome::Committing);
    assert_eq!(store.get(&job.job_id).await.unwrap().unwrap().status, JobStatus::Running);
    assert!(store.finish(&job.job_id, JobStatus::Completed, None).await.unwrap());
}

/// A cancelled job's document and batches go at once, not after the retention period.
#[tokio::test]
async fn a_cancelled_jobs_payloads_are_dropped_at_once() {
    let store = store();
    let job = store.create(new_job("doc", "some content")).await.unwrap();
    chunk(&store, &job.job_id, 2).await;
    assert!(store.content(&job.job_id).await.unwrap().is_some());
    assert_eq!(store.cancel(&job.job_id).await.unwrap(), CancelOutcome::Cancelled);
    assert!(store.content(&job.job_id).await.unwrap().is_none());
    assert!(store.load_batch(&job.job_id, 1).await.unwrap().is_none());
}

/// A failed job's payloads stay only for the (shorter) time a dead-letter retry may need them.
#[tokio::test]
async fn a_failed_jobs_payloads_expire_sooner() {
    let redis = millrace_testkit::RedisServer::shared().unwrap();
    let store = store().with_failed_payload_retention(Duration::from_secs(60));
    let job = store.create(new_job("doc", "some content")).await.unwrap();
    assert!(store.fail(&entry(&job.job_id, 0), Stage::Chunking, "bad").await.unwrap());
    let mut conn = redis::Client::open(redis.url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = conn.ttl(store.keys().content(&job.job_id)).await.unwrap();
    assert!((1..=60).contains(&ttl), "content ttl {ttl}");
    let record_ttl: i64 = conn.ttl(store.keys().job(&job.job_id)).await.unwrap();
    assert!(record_ttl > 60, "the record keeps the full retention: {record_ttl}");
}

/// Defect 6 of issue 13: entries of an attempt a dead-letter retry replaced change nothing:
/// they neither record a half, nor count a stored batch, nor fail the reopened job.
#[tokio::test]
async fn entries_of_a_replaced_attempt_change_nothing() {
    let store = store();
    let job = store.create(new_job("doc", "retried")).await.unwrap();
    chunk(&store, &job.job_id, 2).await;
    halves(&store, &batch(&job.job_id, 0, 0)).await;
    // The job's second attempt (a retry bumped the generation; the retry itself is tested with
    // the dead-letter API in the ingestion service).
    let redis = millrace_testkit::RedisServer::shared().unwrap();
    let mut conn = redis::Client::open(redis.url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let _: i64 = conn.hincr(store.keys().job(&job.job_id), "gen", 1).await.unwrap();

    let stale = batch(&job.job_id, 1, 0);
    assert_eq!(halves(&store, &stale).await, HalfOutcome::JobFinished);
    let counted = store.record_stored(&batch(&job.job_id, 0, 0), STARTED_MS, one_chunk()).await.unwrap();
    assert!(counted.stale);
    assert!(!store.fail(&entry(&job.job_id, 0), Stage::Storage, "old attempt").await.unwrap());

    let current = store.get(&job.job_id).await.unwrap().unwrap();
    assert_eq!((current.status, current.generation, current.chunks.stored), (JobStatus::Running, 1, 0));
    // The current attempt's entries do count.
    assert_eq!(halves(&store, &batch(&job.job_id, 1, 1)).await, HalfOutcome::EnqueuedStorage);
    assert!(!store.record_stored(&batch(&job.job_id, 1, 1), STARTED_MS, one_chunk()).await.unwrap().stale);
    assert!(store.fail(&entry(&job.job_id, 1), Stage::Storage, "this attempt").await.unwrap());
}

/// Deleting a document cancels its jobs up to the last version submitted before the delete,
/// never those submitted after it.
#[tokio::test]
async fn a_delete_cancels_the_documents_running_jobs_up_to_its_version() {
    let store = store();
    let first = store.create(new_job("doc", "one")).await.unwrap();
    let second = store.create(new_job("doc", "two")).await.unwrap();
    let elsewhere = store.create(new_job("other", "three")).await.unwrap();
    assert!(store.finish(&first.job_id, JobStatus::Completed, None).await.unwrap());
    let through = store.latest_version("t", "doc").await.unwrap();
    assert_eq!(through, 2);
    let after = store.create(new_job("doc", "after the delete")).await.unwrap();

    assert_eq!(store.cancel_document_jobs("t", "doc", through, "the document was deleted").await.unwrap(), 1);
    let status = |job_id: String| {
        let store = store.clone();
        async move { store.get(&job_id).await.unwrap().unwrap() }
    };
    assert_eq!(status(first.job_id).await.status, JobStatus::Completed);
    let cancelled = status(second.job_id).await;
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert_eq!(cancelled.error.unwrap().message, "the document was deleted");
    assert_eq!(status(after.job_id).await.status, JobStatus::Queued);
    assert_eq!(status(elsewhere.job_id).await.status, JobStatus::Queued);
    assert_eq!(store.latest_version("t", "nothing").await.unwrap(), 0);
}

/// A document submitted by URL has no bytes yet: finishing its job records the error and takes
/// nothing from the queued bytes (a script that stops half-way on a Redis error, as one did on
/// HINCRBY -0, would leave the job failed without its reason).
#[tokio::test]
async fn a_job_without_bytes_finishes_whole_and_queued_bytes_follow_the_documents() {
    let store = store();
    let by_url =
        store.create(NewJob { url: Some("http://example.org/a".into()), ..new_job("url-doc", "") }).await.unwrap();
    let with_bytes = store.create(new_job("doc", "twelve bytes")).await.unwrap();
    assert_eq!(store.backlog("t").await.unwrap().bytes, 12);
    assert!(store.fail(&entry(&by_url.job_id, 0), Stage::Chunking, "connection refused").await.unwrap());
    let failed = store.get(&by_url.job_id).await.unwrap().unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.error.unwrap().message, "connection refused");
    assert_eq!(store.backlog("t").await.unwrap().bytes, 12);
    assert_eq!(store.cancel(&with_bytes.job_id).await.unwrap(), CancelOutcome::Cancelled);
    assert_eq!(store.backlog("t").await.unwrap().bytes, 0);
}
