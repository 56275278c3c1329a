use std::time::Duration;

use millrace_e2e::{Stack, StackOptions, long_text};
use serde_json::json;

#[tokio::test]
async fn a_document_is_stored_whole_and_found_by_a_sentence_from_it() {
    let stack = Stack::start(StackOptions::default().service_env("chunking", "MILLRACE_CHUNK_SIZE", 65)).await.unwrap();
    let text = long_text("lighthouse", 12);
    let decoy = long_text("volcano", 6);
    let job_id = stack.ingest("lighthouse-doc", &text).await;
    let decoy_job = stack.ingest("volcano-doc", &decoy).await;

    let job = stack.wait_for_job(&job_id, Duration::from_secs(60)).await.unwrap();
    stack.wait_for_job(&decoy_job, Duration::from_secs(60)).await.unwrap();
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["progress"], 100);
    let total = job["chunks"]["total"].as_u64().unwrap();
    assert!(total > 1, "a multi-chunk document: {job}");
    assert_eq!(job["chunks"]["stored"].as_u64().unwrap(), total);
    assert_eq!(job["chunks"]["metadata_done"].as_u64().unwrap(), total);
    assert_eq!(job["chunks"]["embedded"].as_u64().unwrap(), total);
    assert_eq!(stack.stored_chunks("lighthouse-doc").await.len() as u64, total);

    let sentence = "Each sentence in paragraph 7 mentions the lighthouse and the marker word item7.";
    let results = stack.search(sentence, 5).await;
    assert_eq!(results[0]["document_id"], "lighthouse-doc", "{results:?}");
    assert!(results[0]["text"].as_str().unwrap().contains("item7"), "{results:?}");
    assert_eq!(results[0]["metadata"]["extractor"], "extractive");

    let (status, document) = stack.get("/v1/documents/lighthouse-doc").await;
    assert_eq!(status, 200);
    assert_eq!(document["chunk_count"].as_u64().unwrap(), total);

    // The caller's document metadata shows on every hit and can be filtered on.
    let (status, body, _) = stack
        .post(
            "/v1/ingest",
            &json!({"document_id": "tagged", "content": "Tagged lighthouse notes.", "metadata": {"team": "harbour"}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    stack.wait_for_job(body["job_id"].as_str().unwrap(), Duration::from_secs(60)).await.unwrap();
    let (status, body, _) = stack
        .post("/v1/search", &json!({"query": "lighthouse", "top_k": 5, "filter": {"metadata": {"team": "harbour"}}}))
        .await;
    assert_eq!(status, 200, "{body}");
    let hits = body["results"].as_array().unwrap();
    assert_eq!(hits.len(), 1, "{body}");
    assert_eq!(hits[0]["document_id"], "tagged");
    assert_eq!(hits[0]["metadata"]["team"], "harbour");
    assert_eq!(hits[0]["metadata"]["extractor"], "extractive");
}

#[tokio::test]
async fn reingesting_replaces_chunks_and_deleting_removes_them_from_search() {
    let stack = Stack::start(StackOptions::default().service_env("chunking", "MILLRACE_CHUNK_SIZE", 65)).await.unwrap();
    let first = stack.ingest("doc", &long_text("glacier", 6)).await;
    stack.wait_for_job(&first, Duration::from_secs(60)).await.unwrap();
    assert_eq!(stack.search("glacier marker item3", 3).await[0]["document_id"], "doc");

    let second = stack.ingest("doc", &long_text("orchard", 4)).await;
    let job = stack.wait_for_job(&second, Duration::from_secs(60)).await.unwrap();
    assert_eq!(job["status"], "completed", "{job}");
    // Only the new version's chunks remain, and search sees only them.
    let rows = stack.stored_chunks("doc").await;
    assert!(rows.iter().all(|(version, _)| *version == 2), "{rows:?}");
    assert_eq!(rows.len() as u64, job["chunks"]["total"].as_u64().unwrap());
    let hits = stack.search("glacier marker item3", 10).await;
    assert!(hits.iter().all(|h| !h["text"].as_str().unwrap().contains("glacier")), "{hits:?}");
    assert!(stack.search("orchard marker item2", 3).await[0]["text"].as_str().unwrap().contains("orchard"));

    let (status, _) = stack.delete("/v1/documents/doc").await;
    assert_eq!(status, 204);
    assert!(stack.search("orchard marker item2", 10).await.is_empty());
    assert!(stack.stored_chunks("doc").await.is_empty());
    assert_eq!(stack.get("/v1/documents/doc").await.0, 404);
    assert_eq!(stack.delete("/v1/documents/doc").await.0, 404);
}

#[tokio::test]
async fn metadata_and_embeddings_of_a_batch_run_at_the_same_time() {
    // With 400 ms upstream latency, a batch whose halves ran one after the other would show
    // no overlap between its chat call and its embeddings call.
    let stack =
        Stack::start(StackOptions::default().upstream(&["--latency-ms", "400", "--embedding-dim", "384"]).service_env(
            "chunking",
            "MILLRACE_BATCH_SIZE",
            100,
        ))
        .await
        .unwrap();
    let job_id = stack.ingest("overlap-doc", "A single short paragraph about river mills and water wheels.").await;
    let job = stack.wait_for_job(&job_id, Duration::from_secs(60)).await.unwrap();
    assert_eq!(job["status"], "completed", "{job}");

    let log = stack.fake_requests().await;
    let window = |endpoint: &str| {
        let request =
            log.iter().find(|r| r["endpoint"] == endpoint).unwrap_or_else(|| panic!("no {endpoint} call: {log:?}"));
        (request["started_ms"].as_u64().unwrap(), request["finished_ms"].as_u64().unwrap())
    };
    let (chat_start, chat_end) = window("chat_completions");
    let (embed_start, embed_end) = window("embeddings");
    assert!(
        chat_start < embed_end && embed_start < chat_end,
        "no overlap: chat {chat_start}..{chat_end}, embeddings {embed_start}..{embed_end}"
    );
    let results = stack.search("river mills", 1).await;
    assert_eq!(results[0]["metadata"]["extractor"], "llm", "{results:?}");
}

#[tokio::test]
async fn a_cancelled_job_stops_and_leaves_nothing_visible() {
    let stack = Stack::start(StackOptions::slow_pipeline()).await.unwrap();
    let job_id = stack.ingest("cancelled-doc", &long_text("canal", 30)).await;
    stack.wait_until_progress(&job_id, 1).await;
    let (status, job) = stack.delete(&format!("/v1/jobs/{job_id}")).await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "cancelled");

    // The stages skip the rest, the job stays cancelled, and its stored chunks are discarded.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let job = stack.job(&job_id).await;
    assert_eq!(job["status"], "cancelled", "{job}");
    assert!(job["chunks"]["stored"].as_u64().unwrap() < job["chunks"]["total"].as_u64().unwrap(), "{job}");
    assert!(stack.stored_chunks("cancelled-doc").await.is_empty());
    assert_eq!(stack.get("/v1/documents/cancelled-doc").await.0, 404);
    assert!(stack.search("canal marker item1", 5).await.is_empty());
}
