//! Every script that moves a job, three ways: run twice (the second run is a repeat: it changes
//! nothing and says so), against a finished job (nothing changes), and against a job that does
//! not exist (no record appears). And every entry a script adds, read back with the typed
//! decoder of `millrace_pipeline::entry`, so the names in the .lua files and in Rust agree.

use std::collections::HashMap;
use std::time::Duration;

use millrace_pipeline::events::read_events;
use millrace_pipeline::{
    BatchRef, ChunkingOutcome, EntryRef, HalfOutcome, JobStatus, JobStore, LlmUsage, Stage, add_llm_usage,
};
use millrace_proto::{Chunk, ChunkBatch, EmbeddingBatch, MetadataBatch};
use redis::AsyncCommands;
use serde_json::{Value, json};

use super::{STARTED_MS, batch, chunk, entries, entry, halves, new_job, one_chunk, store};

/// Everything a script may write, to compare before and after a call: every key under the
/// store's prefix, the job's record and join hash, how long the job's events and every stream
/// are, and the counts by status.
#[derive(Debug, PartialEq)]
struct Snapshot {
    keys: Vec<String>,
    job: HashMap<String, String>,
    join: HashMap<String, String>,
    events: u64,
    streams: Vec<u64>,
    counts: HashMap<String, String>,
}

async fn snapshot(store: &JobStore, job_id: &str) -> Snapshot {
    let keys = store.keys();
    let prefix = keys.jobs_index().trim_end_matches(":jobs").to_owned();
    let mut conn = store.pool().get().await.unwrap();
    let mut all: Vec<String> = conn.keys(format!("{prefix}:*")).await.unwrap();
    all.sort();
    let mut streams = Vec::new();
    for stage in Stage::ALL {
        streams.push(conn.xlen(keys.stream(stage)).await.unwrap());
        streams.push(conn.xlen(keys.dead_letters(stage)).await.unwrap());
    }
    Snapshot {
        keys: all,
        job: conn.hgetall(keys.job(job_id)).await.unwrap(),
        join: conn.hgetall(keys.join(job_id)).await.unwrap(),
        events: conn.xlen(keys.job_events(job_id)).await.unwrap(),
        streams,
        counts: conn.hgetall(keys.job_status_counts()).await.unwrap(),
    }
}

async fn exists(store: &JobStore, key: &str) -> bool {
    let mut conn = store.pool().get().await.unwrap();
    conn.exists(key).await.unwrap()
}

/// A job id that was never created.
fn unknown_job() -> String {
    format!("no-such-job-{}", uuid::Uuid::now_v7())
}

/// A job whose two batches were stored and which completed.
async fn completed_job(store: &JobStore) -> String {
    let job = store.create(new_job("doc", "completed")).await.unwrap();
    chunk(store, &job.job_id, 2).await;
    for b in 0..2 {
        halves(store, &batch(&job.job_id, b, 0)).await;
        store.record_stored(&batch(&job.job_id, b, 0), STARTED_MS, one_chunk()).await.unwrap();
    }
    assert!(store.finish(&job.job_id, JobStatus::Completed, None).await.unwrap());
    job.job_id
}

/// Dead-letters an entry of `stage` for `job_id` as the stream worker does (its own fields,
/// then the entry's), returning its id in the dead-letter stream.
async fn dead_letter(store: &JobStore, stage: Stage, fields: Vec<(&'static str, String)>) -> String {
    let mut conn = store.pool().get().await.unwrap();
    let mut all = vec![
        ("source_stream", store.keys().stream(stage)),
        ("source_id", "1-0".to_owned()),
        ("deliveries", "5".to_owned()),
        ("error", "it broke".to_owned()),
    ];
    all.extend(fields);
    conn.xadd(store.keys().dead_letters(stage), "*", &all).await.unwrap()
}

// create

#[tokio::test]
async fn create_run_twice_submits_two_versions_each_with_its_own_chunking_entry() {
    // Not guarded, by design: each submission is a new version (the last one wins).
    let store = store();
    let first = store.create(new_job("doc", "same")).await.unwrap();
    let second = store.create(new_job("doc", "same")).await.unwrap();
    assert_eq!((first.version, second.version), (1, 2));
    let written: Vec<EntryRef> = entries(&store, &store.keys().stream(Stage::Chunking))
        .await
        .iter()
        .map(|fields| EntryRef::from_fields(fields).unwrap())
        .collect();
    assert_eq!(written, [entry(&first.job_id, 0), entry(&second.job_id, 0)]);
    assert_eq!(snapshot(&store, &first.job_id).await.events, 1, "one queued event");
}

// COMMIT_CHUNKS

#[tokio::test]
async fn commit_chunks_run_twice_enqueues_once() {
    let store = store();
    let job = store.create(new_job("doc", "chunked twice")).await.unwrap();
    chunk(&store, &job.job_id, 2).await;
    let before = snapshot(&store, &job.job_id).await;
    let again = store.commit_chunks(&entry(&job.job_id, 0), STARTED_MS, &[]).await.unwrap();
    assert_eq!(again, ChunkingOutcome::AlreadyDone);
    assert_eq!(snapshot(&store, &job.job_id).await, before);
}

#[tokio::test]
async fn commit_chunks_against_a_finished_job_changes_nothing() {
    let store = store();
    let job = store.create(new_job("doc", "cancelled first")).await.unwrap();
    store.cancel(&job.job_id).await.unwrap();
    let before = snapshot(&store, &job.job_id).await;
    chunk(&store, &job.job_id, 2).await;
    assert_eq!(snapshot(&store, &job.job_id).await, before);
    let outcome = store.commit_chunks(&entry(&job.job_id, 0), STARTED_MS, &[]).await.unwrap();
    assert_eq!(outcome, ChunkingOutcome::JobFinished);
}

#[tokio::test]
async fn commit_chunks_against_a_missing_job_creates_nothing() {
    let store = store();
    let job_id = unknown_job();
    let before = snapshot(&store, &job_id).await;
    chunk(&store, &job_id, 2).await;
    assert_eq!(snapshot(&store, &job_id).await, before);
    assert!(!exists(&store, &store.keys().job(&job_id)).await);
    assert!(!exists(&store, &store.keys().batch(&job_id, 0)).await);
}

#[tokio::test]
async fn commit_chunks_writes_batch_entries_the_typed_decoder_reads() {
    let store = store();
    let job = store.create(new_job("doc", "two batches")).await.unwrap();
    chunk(&store, &job.job_id, 2).await;
    for stage in [Stage::Metadata, Stage::Embeddings] {
        let written: Vec<BatchRef> = entries(&store, &store.keys().stream(stage))
            .await
            .iter()
            .map(|fields| BatchRef::from_fields(fields).unwrap())
            .collect();
        assert_eq!(written, [batch(&job.job_id, 0, 0), batch(&job.job_id, 1, 0)], "{stage}");
    }
}

// COMPLETE_HALF

#[tokio::test]
async fn complete_half_run_twice_records_the_first_result_and_enqueues_storage_once() {
    let store = store();
    let job = store.create(new_job("doc", "halves twice")).await.unwrap();
    chunk(&store, &job.job_id, 1).await;
    let entry = batch(&job.job_id, 0, 0);
    assert_eq!(halves(&store, &entry).await, HalfOutcome::EnqueuedStorage);
    let before = snapshot(&store, &job.job_id).await;
    // A redelivery with another result: the first one stays, storage is not enqueued again.
    let other = MetadataBatch { chunk_metadata_json: vec!["{\"title\":\"other\"}".into()], ..Default::default() };
    assert_eq!(store.complete_metadata(&entry, STARTED_MS, 1, &other).await.unwrap(), HalfOutcome::Recorded);
    assert_eq!(halves(&store, &entry).await, HalfOutcome::Recorded);
    assert_eq!(snapshot(&store, &job.job_id).await, before);
    let kept = store.load_metadata(&job.job_id, 0).await.unwrap().unwrap();
    assert_eq!(kept.chunk_metadata_json, ["{}"]);
}

#[tokio::test]
async fn complete_half_against_a_finished_job_changes_nothing() {
    let store = store();
    let job = store.create(new_job("doc", "failed while running")).await.unwrap();
    chunk(&store, &job.job_id, 1).await;
    assert!(store.fail(&entry(&job.job_id, 0), Stage::Metadata, "broken").await.unwrap());
    let before = snapshot(&store, &job.job_id).await;
    assert_eq!(halves(&store, &batch(&job.job_id, 0, 0)).await, HalfOutcome::JobFinished);
    assert_eq!(snapshot(&store, &job.job_id).await, before);
}

#[tokio::test]
async fn complete_half_against_a_missing_job_creates_nothing() {
    let store = store();
    let job_id = unknown_job();
    let before = snapshot(&store, &job_id).await;
    assert_eq!(halves(&store, &batch(&job_id, 0, 0)).await, HalfOutcome::JobFinished);
    assert_eq!(snapshot(&store, &job_id).await, before);
    assert!(!exists(&store, &store.keys().job(&job_id)).await);
}

#[tokio::test]
async fn complete_half_writes_a_storage_entry_the_typed_decoder_reads() {
    let store = store();
    let job = store.create(new_job("doc", "to storage")).await.unwrap();
    chunk(&store, &job.job_id, 2).await;
    halves(&store, &batch(&job.job_id, 1, 0)).await;
    let written = entries(&store, &store.keys().stream(Stage::Storage)).await;
    assert_eq!(written.len(), 1);
    assert_eq!(BatchRef::from_fields(&written[0]), Ok(batch(&job.job_id, 1, 0)));
}

// RECORD_STORED

#[tokio::test]
async fn record_stored_run_twice_counts_the_batch_once() {
    let store = store();
    let job = store.create(new_job("doc", "stored twice")).await.unwrap();
    chunk(&store, &job.job_id, 2).await;
    let entry = batch(&job.job_id, 0, 0);
    halves(&store, &entry).await;
    let first = store.record_stored(&entry, STARTED_MS, one_chunk()).await.unwrap();
    let before = snapshot(&store, &job.job_id).await;
    let again = store.record_stored(&entry, STARTED_MS, one_chunk()).await.unwrap();
    assert_eq!(again, first);
    assert_eq!((again.batches_stored, again.batches_total, again.status), (1, 2, Some(JobStatus::Running)));
    assert_eq!(snapshot(&store, &job.job_id).await, before);
}

#[tokio::test]
async fn record_stored_against_a_finished_job_changes_nothing() {
    let store = store();
    let job_id = completed_job(&store).await;
    let before = snapshot(&store, &job_id).await;
    let again = store.record_stored(&batch(&job_id, 1, 0), STARTED_MS, one_chunk()).await.unwrap();
    assert_eq!(again.status, Some(JobStatus::Completed));
    assert_eq!(snapshot(&store, &job_id).await, before);
}

#[tokio::test]
async fn record_stored_against_a_missing_job_creates_nothing() {
    let store = store();
    let job_id = unknown_job();
    let before = snapshot(&store, &job_id).await;
    let outcome = store.record_stored(&batch(&job_id, 0, 0), STARTED_MS, one_chunk()).await.unwrap();
    assert_eq!((outcome.batches_stored, outcome.batches_total, outcome.status, outcome.stale), (0, 0, None, false));
    assert_eq!(snapshot(&store, &job_id).await, before);
}

// The events of COMMIT_CHUNKS, COMPLETE_HALF and RECORD_STORED

/// Each stage's result event says when its worker took up the work it finishes (`started_ms`,
/// as the caller gave it), as a JSON number: the console tells queued from worked with it.
#[tokio::test]
async fn each_result_event_carries_when_its_worker_started() {
    let store = store();
    let job = store.create(new_job("doc", "timed")).await.unwrap();
    let job_id = job.job_id.as_str();
    let chunks = ChunkBatch {
        job_id: job_id.to_owned(),
        chunks: vec![Chunk { text: "one".into(), ..Default::default() }],
        ..Default::default()
    };
    store.commit_chunks(&entry(job_id, 0), 1_000, &[chunks]).await.unwrap();
    let one = batch(job_id, 0, 0);
    let metadata = MetadataBatch { chunk_metadata_json: vec!["{}".into()], ..Default::default() };
    store.complete_metadata(&one, 2_000, 1, &metadata).await.unwrap();
    let embeddings = EmbeddingBatch { vectors: vec![Default::default()], ..Default::default() };
    store.complete_embeddings(&one, 3_000, 1, &embeddings).await.unwrap();
    store.record_stored(&one, 4_000, one_chunk()).await.unwrap();
    // A repeat records nothing, so its later start is written nowhere.
    store.complete_metadata(&one, 9_000, 1, &metadata).await.unwrap();

    let redis = millrace_testkit::RedisServer::shared().unwrap();
    let mut conn = redis::Client::open(redis.url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let events = read_events(&mut conn, &store.keys().job_events(job_id), "0", Duration::ZERO).await.unwrap();
    let started: Vec<(String, Value, Value)> = events
        .iter()
        .map(|event| {
            let json = event.to_json(job_id);
            (event.kind.clone(), json["stage"].clone(), json["started_ms"].clone())
        })
        .collect();
    assert_eq!(
        started,
        [
            ("queued".to_owned(), Value::Null, Value::Null),
            ("chunked".to_owned(), Value::Null, json!(1_000)),
            ("batch".to_owned(), json!("metadata"), json!(2_000)),
            ("batch".to_owned(), json!("embeddings"), json!(3_000)),
            ("batch".to_owned(), json!("storage"), json!(4_000)),
        ]
    );
    let proto = events[4].to_proto(job_id);
    assert_eq!((proto.stage.as_str(), proto.started_ms), ("storage", 4_000));
}

// FINISH

#[tokio::test]
async fn finish_run_twice_finishes_once() {
    let store = store();
    let job = store.create(new_job("doc", "finished twice")).await.unwrap();
    assert!(store.finish(&job.job_id, JobStatus::Cancelled, None).await.unwrap());
    let before = snapshot(&store, &job.job_id).await;
    assert!(!store.finish(&job.job_id, JobStatus::Cancelled, None).await.unwrap());
    assert_eq!(snapshot(&store, &job.job_id).await, before);
}

#[tokio::test]
async fn finish_against_a_finished_job_keeps_its_status() {
    let store = store();
    let job_id = completed_job(&store).await;
    let before = snapshot(&store, &job_id).await;
    assert!(!store.finish(&job_id, JobStatus::Failed, Some(("storage", "late"))).await.unwrap());
    assert!(!store.fail(&entry(&job_id, 0), Stage::Storage, "late").await.unwrap());
    assert_eq!(snapshot(&store, &job_id).await, before);
    assert_eq!(store.get(&job_id).await.unwrap().unwrap().status, JobStatus::Completed);
}

#[tokio::test]
async fn finish_against_a_missing_job_creates_nothing() {
    let store = store();
    let job_id = unknown_job();
    let before = snapshot(&store, &job_id).await;
    assert!(!store.finish(&job_id, JobStatus::Completed, None).await.unwrap());
    assert!(!store.fail(&entry(&job_id, 0), Stage::Chunking, "bad").await.unwrap());
    assert_eq!(snapshot(&store, &job_id).await, before);
}

// RETRY_JOB

#[tokio::test]
async fn retry_job_run_twice_reopens_once() {
    let store = store();
    let job = store.create(new_job("doc", "retried twice")).await.unwrap();
    let job_entry = entry(&job.job_id, 0);
    assert!(store.fail(&job_entry, Stage::Chunking, "it broke").await.unwrap());
    let id = dead_letter(&store, Stage::Chunking, job_entry.to_fields(None)).await;
    let report = store.retry_dead_letters(Stage::Chunking, Some(std::slice::from_ref(&id))).await.unwrap();
    assert_eq!((report.retried.len(), report.refused.len()), (1, 0));
    assert_eq!(report.retried[0].job_status, JobStatus::Queued);

    let before = snapshot(&store, &job.job_id).await;
    let again = store.retry_dead_letters(Stage::Chunking, Some(std::slice::from_ref(&id))).await.unwrap();
    assert!(again.retried.is_empty());
    assert_eq!(again.refused.len(), 1);
    assert!(again.refused[0].reason.starts_with(&format!("no entry {id}")), "{}", again.refused[0].reason);
    assert_eq!(snapshot(&store, &job.job_id).await, before);
}

#[tokio::test]
async fn retry_job_against_a_finished_job_changes_nothing() {
    let store = store();
    let job_id = completed_job(&store).await;
    let id = dead_letter(&store, Stage::Storage, batch(&job_id, 1, 0).to_fields(None)).await;
    let before = snapshot(&store, &job_id).await;
    let report = store.retry_dead_letters(Stage::Storage, Some(std::slice::from_ref(&id))).await.unwrap();
    assert!(report.retried.is_empty());
    assert_eq!(report.refused[0].reason, format!("job {job_id} has completed since; there is nothing to retry"));
    assert_eq!(snapshot(&store, &job_id).await, before);
}

#[tokio::test]
async fn retry_job_against_a_missing_job_creates_nothing() {
    let store = store();
    let job_id = unknown_job();
    let id = dead_letter(&store, Stage::Chunking, entry(&job_id, 0).to_fields(None)).await;
    let before = snapshot(&store, &job_id).await;
    let report = store.retry_dead_letters(Stage::Chunking, Some(std::slice::from_ref(&id))).await.unwrap();
    assert!(report.retried.is_empty());
    assert!(report.refused[0].reason.contains("no longer exists"), "{}", report.refused[0].reason);
    assert_eq!(snapshot(&store, &job_id).await, before);
    assert!(!exists(&store, &store.keys().job(&job_id)).await);
}

#[tokio::test]
async fn retry_job_writes_entries_the_typed_decoder_reads() {
    let store = store();
    // Chunking entries of a job never chunked.
    let queued = store.create(new_job("queued", "never chunked")).await.unwrap();
    assert!(store.fail(&entry(&queued.job_id, 0), Stage::Chunking, "it broke").await.unwrap());
    let id = dead_letter(&store, Stage::Chunking, entry(&queued.job_id, 0).to_fields(None)).await;
    store.retry_dead_letters(Stage::Chunking, Some(&[id])).await.unwrap();
    let chunking = entries(&store, &store.keys().stream(Stage::Chunking)).await;
    assert_eq!(EntryRef::from_fields(chunking.last().unwrap()), Ok(entry(&queued.job_id, 1)));

    // Batch entries of a chunked job: batch 0 has both halves (back to storage), batch 1 only
    // its metadata (back to embeddings).
    let running = store.create(new_job("running", "chunked")).await.unwrap();
    chunk(&store, &running.job_id, 2).await;
    halves(&store, &batch(&running.job_id, 0, 0)).await;
    let metadata = MetadataBatch { chunk_metadata_json: vec!["{}".into()], ..Default::default() };
    store.complete_metadata(&batch(&running.job_id, 1, 0), STARTED_MS, 1, &metadata).await.unwrap();
    assert!(store.fail(&entry(&running.job_id, 0), Stage::Embeddings, "it broke").await.unwrap());
    let id = dead_letter(&store, Stage::Embeddings, batch(&running.job_id, 1, 0).to_fields(None)).await;
    let before = |stage| {
        let store = store.clone();
        async move { entries(&store, &store.keys().stream(stage)).await.len() }
    };
    let (embeddings_before, storage_before) = (before(Stage::Embeddings).await, before(Stage::Storage).await);
    store.retry_dead_letters(Stage::Embeddings, Some(&[id])).await.unwrap();
    let embeddings = entries(&store, &store.keys().stream(Stage::Embeddings)).await;
    let storage = entries(&store, &store.keys().stream(Stage::Storage)).await;
    let decoded = |written: &[HashMap<String, String>]| -> Vec<BatchRef> {
        written.iter().map(|fields| BatchRef::from_fields(fields).unwrap()).collect()
    };
    assert_eq!(decoded(&embeddings[embeddings_before..]), [batch(&running.job_id, 1, 1)]);
    assert_eq!(decoded(&storage[storage_before..]), [batch(&running.job_id, 0, 1)]);
}

// The gateway's charges (add_llm_usage)

async fn charge(store: &JobStore, job_id: &str, usage: LlmUsage) {
    let mut pipe = redis::pipe();
    add_llm_usage(&mut pipe, store.keys(), [(job_id, usage)]);
    let mut conn = store.pool().get().await.unwrap();
    pipe.query_async::<()>(&mut conn).await.unwrap();
}

fn usage() -> LlmUsage {
    LlmUsage { prompt_tokens: 120, completion_tokens: 30, cost_usd: 0.25 }
}

#[tokio::test]
async fn add_llm_usage_run_twice_adds_twice() {
    // A charge is a sum, not a hand-off: the gateway writes each answered call once, and two
    // calls for one job add up.
    let store = store();
    let job = store.create(new_job("doc", "two calls")).await.unwrap();
    charge(&store, &job.job_id, usage()).await;
    charge(&store, &job.job_id, usage()).await;
    let llm = store.get(&job.job_id).await.unwrap().unwrap().llm;
    assert_eq!((llm.prompt_tokens, llm.completion_tokens, llm.cost_usd), (240, 60, 0.5));
}

#[tokio::test]
async fn add_llm_usage_against_a_finished_job_still_counts_what_was_spent() {
    // The gateway writes charges after answering, so the job may have finished meanwhile: the
    // tokens were spent all the same. Nothing else of the record changes.
    let store = store();
    let job_id = completed_job(&store).await;
    let mut before = snapshot(&store, &job_id).await;
    charge(&store, &job_id, usage()).await;
    let mut after = snapshot(&store, &job_id).await;
    let llm = store.get(&job_id).await.unwrap().unwrap().llm;
    assert_eq!((llm.prompt_tokens, llm.completion_tokens, llm.cost_usd), (120, 30, 0.25));
    for fields in ["llm_prompt_tokens", "llm_completion_tokens", "llm_cost_usd"] {
        after.job.remove(fields);
    }
    before.job.retain(|name, _| !name.starts_with("llm_"));
    assert_eq!(after, before);
}

#[tokio::test]
async fn add_llm_usage_against_a_missing_job_creates_nothing() {
    let store = store();
    let job_id = unknown_job();
    let before = snapshot(&store, &job_id).await;
    charge(&store, &job_id, usage()).await;
    assert_eq!(snapshot(&store, &job_id).await, before);
    assert!(!exists(&store, &store.keys().job(&job_id)).await);
}
