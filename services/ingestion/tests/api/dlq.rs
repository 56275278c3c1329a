//! `GET /v1/dlq` and `POST /v1/dlq/{stage}/retry` against jobs whose stage steps are played
//! here with the job store's own scripts (the stages are not running), so that each retry
//! meets exactly the state a test sets up: which halves are done, what was stored, what was
//! dead-lettered.

use std::time::Duration;

use millrace_common::time::now_millis;
use millrace_pipeline::{BatchRef, EntryRef, JobStatus, JobStore, Keys, StoredCounts, StoredOutcome};
use millrace_proto::{Chunk, ChunkBatch, EmbeddingBatch, MetadataBatch};
use redis::AsyncCommands;
use redis::streams::StreamRangeReply;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PREFIX, TestApp, assert_error, spawn_app};

fn store(app: &TestApp) -> JobStore {
    let pool = millrace_common::redis_conn::pool(&app.redis.url, 4).unwrap();
    JobStore::new(pool, Keys::new(PREFIX), Duration::from_secs(3600))
}

/// Chunks a submitted job into `batches` batches of two chunks, as the chunking stage would.
async fn chunk(store: &JobStore, job_id: &str, batches: u32) {
    let batches: Vec<ChunkBatch> = (0..batches)
        .map(|batch| ChunkBatch {
            job_id: job_id.to_owned(),
            tenant_id: "default".into(),
            document_id: "doc".into(),
            version: 1,
            batch_index: batch,
            chunks: (0..2)
                .map(|i| Chunk { index: batch * 2 + i, text: format!("chunk {batch}.{i}"), ..Default::default() })
                .collect(),
            ..Default::default()
        })
        .collect();
    let entry = EntryRef {
        job_id: job_id.to_owned(),
        generation: generation(store, job_id).await,
        tenant: String::new(),
        collection: String::new(),
    };
    store.commit_chunks(&entry, now_millis(), &batches).await.unwrap();
}

/// The job's current attempt, which the entries a retry puts back carry.
async fn generation(store: &JobStore, job_id: &str) -> u64 {
    store.get(job_id).await.unwrap().unwrap().generation
}

async fn batch_entry(store: &JobStore, job_id: &str, batch: u32) -> BatchRef {
    BatchRef {
        job_id: job_id.to_owned(),
        batch,
        generation: generation(store, job_id).await,
        tenant: String::new(),
        collection: String::new(),
    }
}

async fn metadata_done(store: &JobStore, job_id: &str, batch: u32) {
    let result = MetadataBatch { chunk_metadata_json: vec!["{}".into(); 2], ..Default::default() };
    store.complete_metadata(&batch_entry(store, job_id, batch).await, now_millis(), 2, &result).await.unwrap();
}

async fn embeddings_done(store: &JobStore, job_id: &str, batch: u32) {
    let result = EmbeddingBatch { vectors: vec![Default::default(); 2], ..Default::default() };
    store.complete_embeddings(&batch_entry(store, job_id, batch).await, now_millis(), 2, &result).await.unwrap();
}

async fn storage_done(store: &JobStore, job_id: &str, batch: u32) -> StoredOutcome {
    let counts = StoredCounts { chunks: 2, ..Default::default() };
    store.record_stored(&batch_entry(store, job_id, batch).await, now_millis(), counts).await.unwrap()
}

/// What a stage's worker does when it gives up on an entry: fail the job, then copy the entry
/// to the dead-letter stream. Returns the dead letter's id.
async fn dead_letter(app: &TestApp, stage: &str, job_id: &str, batch: Option<u32>, error: &str) -> String {
    store(app).finish(job_id, JobStatus::Failed, Some((stage, error))).await.unwrap();
    add_dead_letter(app, stage, job_id, batch, error).await
}

async fn add_dead_letter(app: &TestApp, stage: &str, job_id: &str, batch: Option<u32>, error: &str) -> String {
    let mut conn = app.redis().await;
    let mut fields = vec![
        ("source_stream".to_owned(), format!("{PREFIX}:stream:{stage}")),
        ("source_id".to_owned(), "1-0".to_owned()),
        ("deliveries".to_owned(), "3".to_owned()),
        ("error".to_owned(), error.to_owned()),
        ("job_id".to_owned(), job_id.to_owned()),
    ];
    if let Some(batch) = batch {
        fields.push(("batch".to_owned(), batch.to_string()));
    }
    conn.xadd(format!("{PREFIX}:dlq:{stage}"), "*", &fields).await.unwrap()
}

/// (job_id, batch) of every entry of a stream, oldest first.
async fn stream(app: &TestApp, name: &str) -> Vec<(String, Option<String>)> {
    let mut conn = app.redis().await;
    let reply: StreamRangeReply = conn.xrange_all(format!("{PREFIX}:{name}")).await.unwrap();
    reply.ids.iter().map(|e| (e.get::<String>("job_id").unwrap_or_default(), e.get::<String>("batch"))).collect()
}

async fn retry(app: &TestApp, stage: &str, body: &Value) -> Value {
    let response = app.post_json(&format!("/v1/dlq/{stage}/retry"), body).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_failed_jobs_dead_letter_is_listed_and_its_retry_puts_back_exactly_what_the_job_lacks() {
    let app = spawn_app().await;
    let store = store(&app);
    let job_id = app.ingest("three batches").await["job_id"].as_str().unwrap().to_owned();
    chunk(&store, &job_id, 3).await;
    // Batch 0 went all the way; batch 1 lacks its embeddings, batch 2 its metadata.
    for batch in [0, 1] {
        metadata_done(&store, &job_id, batch).await;
    }
    for batch in [0, 2] {
        embeddings_done(&store, &job_id, batch).await;
    }
    let stored = storage_done(&store, &job_id, 0).await;
    assert_eq!((stored.batches_stored, stored.batches_total), (1, 3));
    let metadata = dead_letter(&app, "metadata", &job_id, Some(2), "schema refused three times").await;
    // The embeddings half of batch 1 gave up too, after the job had failed.
    let embeddings = add_dead_letter(&app, "embeddings", &job_id, Some(1), "embedder gone").await;
    assert_eq!(app.job(&job_id).await["status"], "failed");

    let list: Value = app.get("/v1/dlq").await.json().await.unwrap();
    assert_eq!(list["total"], 2, "{list}");
    let stages: Vec<&str> = list["stages"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["chunking", "metadata", "embeddings", "storage"]);
    let entry = &list["stages"][1]["entries"][0];
    assert_eq!(list["stages"][1]["count"], 1);
    assert_eq!(entry["id"], metadata.as_str());
    assert_eq!(entry["job_id"], job_id.as_str());
    assert_eq!(entry["batch"], 2);
    assert_eq!(entry["deliveries"], 3);
    assert_eq!(entry["error"], "schema refused three times");
    assert_eq!(entry["job_status"], "failed");
    assert!(entry["dead_lettered_at"].as_str().unwrap().ends_with('Z'), "{entry}");
    let one: Value = app.get("/v1/dlq?stage=embeddings&limit=1").await.json().await.unwrap();
    assert_eq!(one["total"], 1);
    assert_eq!(one["stages"][0]["entries"][0]["id"], embeddings.as_str());
    let metadata_before = stream(&app, "stream:metadata").await.len();
    let embeddings_before = stream(&app, "stream:embeddings").await.len();
    let storage_before = stream(&app, "stream:storage").await.len();

    let report = retry(&app, "metadata", &json!({ "ids": [metadata] })).await;
    assert_eq!(report["refused"], json!([]), "{report}");
    assert_eq!(report["retried"].as_array().unwrap().len(), 1, "{report}");
    let retried = &report["retried"][0];
    assert_eq!(retried["job_status"], "running");
    // Each half that is missing, and storage again for every batch with both halves.
    assert_eq!(retried["requeued"], json!({"metadata": 1, "embeddings": 1, "storage": 1}), "{report}");
    assert_eq!(report["superseded"], json!([{"id": embeddings, "stage": "embeddings", "job_id": job_id}]));
    let id = |batch: &str| (job_id.clone(), Some(batch.to_owned()));
    assert_eq!(stream(&app, "stream:metadata").await[metadata_before..], [id("2")]);
    assert_eq!(stream(&app, "stream:embeddings").await[embeddings_before..], [id("1")]);
    assert_eq!(stream(&app, "stream:storage").await[storage_before..], [id("0")]);
    assert!(stream(&app, "dlq:metadata").await.is_empty());
    assert!(stream(&app, "dlq:embeddings").await.is_empty());
    let job = app.job(&job_id).await;
    assert_eq!(job["status"], "running", "{job}");
    assert_eq!(job["error"], Value::Null, "{job}");
    assert_eq!((job["chunks"]["stored"].as_u64(), job["batches_stored"].as_u64()), (Some(0), Some(0)), "{job}");

    // The same entry again: it is gone, so nothing happens twice.
    let again = retry(&app, "metadata", &json!({ "ids": [metadata] })).await;
    assert_eq!(again["retried"], json!([]));
    assert!(again["refused"][0]["reason"].as_str().unwrap().starts_with("no entry"), "{again}");

    // The stages finish the job: each batch is counted once, batch 0 included.
    metadata_done(&store, &job_id, 2).await;
    embeddings_done(&store, &job_id, 1).await;
    let mut last = None;
    for batch in 0..3 {
        last = Some(storage_done(&store, &job_id, batch).await);
    }
    assert!(last.unwrap().all_stored());
    store.finish(&job_id, JobStatus::Completed, None).await.unwrap();
    let job = app.job(&job_id).await;
    assert_eq!((job["status"].as_str(), job["chunks"]["stored"].as_u64()), (Some("completed"), Some(6)), "{job}");

    // Its events go on past `failed` to the end of the new attempt.
    let response = app.get(&format!("/v1/jobs/{job_id}/events")).await;
    let text = tokio::time::timeout(Duration::from_secs(30), response.text()).await.unwrap().unwrap();
    let kinds: Vec<&str> = text.lines().filter_map(|line| line.strip_prefix("event:")).map(str::trim).collect();
    let failed = kinds.iter().position(|k| *k == "failed").unwrap();
    assert_eq!(kinds[failed + 1], "retried", "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"completed"), "{kinds:?}");
    assert!(text.contains("\"error\":\"schema refused three times\""), "{text}");
}

#[tokio::test]
async fn a_job_failed_at_chunking_goes_back_to_chunking_and_all_of_a_stage_is_retried_without_ids() {
    let app = spawn_app().await;
    let first = app.ingest("first").await["job_id"].as_str().unwrap().to_owned();
    let second = app.ingest("second").await["job_id"].as_str().unwrap().to_owned();
    dead_letter(&app, "chunking", &first, None, "parser crashed").await;
    dead_letter(&app, "chunking", &second, None, "parser crashed").await;
    let queued = app.chunking_entries().await.len();

    let report = retry(&app, "chunking", &json!({})).await;
    let retried: Vec<(&str, &str)> = report["retried"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["job_id"].as_str().unwrap(), r["job_status"].as_str().unwrap()))
        .collect();
    assert_eq!(retried, [(first.as_str(), "queued"), (second.as_str(), "queued")], "{report}");
    assert_eq!(report["retried"][0]["requeued"], json!({"chunking": 1}));
    assert_eq!(app.chunking_entries().await[queued..], [first, second]);
}

#[tokio::test]
async fn what_cannot_be_retried_is_refused_with_its_reason_and_left_as_it_was() {
    let app = spawn_app().await;
    let store = store(&app);
    let mut conn = app.redis().await;

    // Cancelled: the entry was dead-lettered as the job was being cancelled.
    let cancelled = app.ingest("cancelled").await["job_id"].as_str().unwrap().to_owned();
    app.delete(&format!("/v1/jobs/{cancelled}")).await;
    let cancelled_entry = add_dead_letter(&app, "chunking", &cancelled, None, "boom").await;
    // Expired: its record is gone.
    let expired = app.ingest("expired").await["job_id"].as_str().unwrap().to_owned();
    dead_letter(&app, "chunking", &expired, None, "boom").await;
    let _: () = conn.del(format!("{PREFIX}:job:{{{expired}}}")).await.unwrap();
    // A batch payload expired.
    let payload = app.ingest("payload").await["job_id"].as_str().unwrap().to_owned();
    chunk(&store, &payload, 2).await;
    dead_letter(&app, "chunking", &payload, None, "boom").await;
    let _: () = conn.del(format!("{PREFIX}:job:{{{payload}}}:batch:1")).await.unwrap();
    let queued = app.chunking_entries().await.len();

    let report = retry(&app, "chunking", &json!({})).await;
    assert_eq!(report["retried"], json!([]), "{report}");
    let reasons: Vec<(&str, &str)> = report["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["job_id"].as_str().unwrap(), r["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(reasons.len(), 3, "{report}");
    assert_eq!(
        reasons[0],
        (cancelled.as_str(), &*format!("job {cancelled} was cancelled; submit the document again to process it"))
    );
    assert!(reasons[1].1.contains("no longer exists (its record expired"), "{report}");
    assert!(reasons[2].1.starts_with("batch 1 of job"), "{report}");
    assert_eq!(report["refused"][0]["id"], cancelled_entry.as_str());
    // Nothing moved.
    assert_eq!(app.chunking_entries().await.len(), queued);
    assert_eq!(stream(&app, "dlq:chunking").await.len(), 3);
    assert_eq!(app.job(&cancelled).await["status"], "cancelled");
    assert_eq!(app.job(&payload).await["status"], "failed");

    // A job that is still running only gets its entry back.
    let running = app.ingest("running").await["job_id"].as_str().unwrap().to_owned();
    chunk(&store, &running, 1).await;
    let entry = add_dead_letter(&app, "metadata", &running, Some(0), "lost").await;
    let before = stream(&app, "stream:metadata").await.len();
    let report = retry(&app, "metadata", &json!({ "ids": [entry] })).await;
    assert_eq!(report["retried"][0]["requeued"], json!({"metadata": 1}), "{report}");
    assert_eq!(stream(&app, "stream:metadata").await[before..], [(running.clone(), Some("0".to_owned()))]);
    assert_eq!(app.job(&running).await["status"], "running");
}

#[tokio::test]
async fn unknown_stages_and_bad_requests_get_the_apis_errors() {
    let app = spawn_app().await;
    let (code, message) = assert_error(app.get("/v1/dlq?stage=parsing").await, StatusCode::NOT_FOUND).await;
    assert_eq!(code, "not_found");
    assert_eq!(message, "no stage \"parsing\"; the stages are chunking, metadata, embeddings, storage");
    assert_error(app.post_json("/v1/dlq/parsing/retry", &json!({})).await, StatusCode::NOT_FOUND).await;
    assert_error(app.get("/v1/dlq?limit=0").await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_error(app.get("/v1/dlq?limit=many").await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_error(app.post_raw("/v1/dlq/storage/retry", "{").await, StatusCode::BAD_REQUEST).await;
    assert_error(app.post_raw("/v1/dlq/storage/retry", r#"{"ids": "1-0"}"#).await, StatusCode::BAD_REQUEST).await;
    let (_, message) = assert_error(
        app.post_json("/v1/dlq/storage/retry", &json!({"ids": []})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(message.contains("`ids` is empty"), "{message}");
    assert_error(
        app.post_json("/v1/dlq/storage/retry", &json!({"ids": ["x"]})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    // An empty stage: nothing to do, and an empty body means all.
    let response = app.client.post(app.url("/v1/dlq/storage/retry")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report, json!({"stage": "storage", "retried": [], "refused": [], "superseded": []}));
    let list: Value = app.get("/v1/dlq").await.json().await.unwrap();
    assert_eq!(list["total"], 0);
}

#[tokio::test]
async fn the_same_over_grpc() {
    use millrace_proto::v1::{JobStatus as Proto, ListDeadLettersRequest, RetryDeadLettersRequest};

    let app = spawn_app().await;
    let mut client = app.ingestion_grpc().await;
    let job_id = app.ingest("over grpc").await["job_id"].as_str().unwrap().to_owned();
    let id = dead_letter(&app, "chunking", &job_id, None, "parser crashed").await;

    let list = client.list_dead_letters(ListDeadLettersRequest { stage: String::new(), limit: 0 }).await.unwrap();
    let list = list.into_inner();
    assert_eq!((list.total, list.stages.len()), (1, 4));
    let entry = &list.stages[0].entries[0];
    assert_eq!((entry.id.as_str(), entry.job_id.as_str(), entry.batch), (id.as_str(), job_id.as_str(), None));
    assert_eq!((entry.error.as_str(), entry.job_status()), ("parser crashed", Proto::Failed));

    let unknown = ListDeadLettersRequest { stage: "parsing".into(), limit: 0 };
    assert_eq!(client.list_dead_letters(unknown).await.unwrap_err().code(), tonic::Code::NotFound);
    let bad = RetryDeadLettersRequest { stage: "chunking".into(), ids: vec!["x".into()] };
    assert_eq!(client.retry_dead_letters(bad).await.unwrap_err().code(), tonic::Code::InvalidArgument);

    let request = RetryDeadLettersRequest { stage: "chunking".into(), ids: vec![id.clone()] };
    let report = client.retry_dead_letters(request.clone()).await.unwrap().into_inner();
    assert_eq!(report.retried.len(), 1, "{report:?}");
    assert_eq!(report.retried[0].job_status(), Proto::Queued);
    assert_eq!(report.retried[0].requeued.get("chunking"), Some(&1));
    let again = client.retry_dead_letters(request).await.unwrap().into_inner();
    assert!(again.retried.is_empty() && again.refused[0].reason.starts_with("no entry"), "{again:?}");
}
