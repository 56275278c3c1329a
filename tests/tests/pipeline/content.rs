//! Content handling across the services: incremental re-ingest (only changed chunks reach a
//! model), identical resubmissions, LLM metadata with invalid answers, and the local model.

use std::time::Duration;

use millrace_e2e::{Stack, StackOptions};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// Ten short paragraphs (36 to 40 tokens each); with `chunk_size` 45 tokens each is its own chunk.
fn ten_paragraphs(changed: Option<usize>) -> String {
    (0..10)
        .map(|i| {
            let topic = if changed == Some(i) { "a rebuilt sluice gate of oak" } else { "the old mill race" };
            format!(
                "Paragraph {i} tells of {topic}. The keeper wrote entry number {i} in the ledger, noting the \
                 water level, the weather and the marker word item{i} for later search."
            )
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

async fn submit(stack: &Stack, document_id: &str, content: &str) -> Value {
    let body = json!({
        "document_id": document_id,
        "content": content,
        "content_type": "text/plain",
        "options": {"chunk_size": 45, "chunk_overlap": 0},
    });
    let (status, body, _) = stack.post("/v1/ingest", &body).await;
    assert!(status == 202 || status == 200, "ingest refused ({status}): {body}");
    body
}

async fn ingest_and_wait(stack: &Stack, document_id: &str, content: &str) -> Value {
    let accepted = submit(stack, document_id, content).await;
    let job = stack.wait_for_job(accepted["job_id"].as_str().unwrap(), WAIT).await.unwrap();
    assert_eq!(job["status"], "completed", "{job}\n{}", stack.logs());
    job
}

/// Each stored chunk of a document: index, text and metadata.
async fn stored_rows(stack: &Stack, document_id: &str) -> Vec<(i32, String, Value)> {
    let client = stack.postgres().await;
    let rows = client
        .query(
            "SELECT chunk_index, text, metadata::text FROM chunks WHERE document_id = $1 ORDER BY chunk_index",
            &[&document_id],
        )
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1), serde_json::from_str(r.get::<_, &str>(2)).unwrap())).collect()
}

/// Texts embedded and chat completions served by the fake upstream so far.
async fn upstream_items(stack: &Stack) -> (u64, u64) {
    let stats = stack.fake_stats().await;
    let inputs = |endpoint: &str| stats["by_endpoint"][endpoint]["inputs"].as_u64().unwrap_or(0);
    (inputs("embeddings"), inputs("chat_completions"))
}

#[tokio::test]
async fn re_ingest_sends_only_the_changed_paragraph_to_the_models() {
    let stack = Stack::start(StackOptions::default().upstream(&[]).env("MILLRACE_METADATA_CHUNKS_PER_REQUEST", 1))
        .await
        .unwrap();
    let first = ingest_and_wait(&stack, "ledger", &ten_paragraphs(None)).await;
    assert_eq!(first["chunks"]["total"], 10, "one chunk per paragraph: {first}");
    assert_eq!(first["chunks"]["reused"], 0);
    assert_eq!(upstream_items(&stack).await, (10, 10), "every chunk embedded and enriched once");

    let second = ingest_and_wait(&stack, "ledger", &ten_paragraphs(Some(4))).await;
    assert_eq!(second["version"], 2);
    assert_eq!(second["chunks"]["total"], 10);
    assert_eq!(second["chunks"]["reused"], 9, "{second}");
    assert_eq!(upstream_items(&stack).await, (11, 11), "exactly the changed chunk went to the models");

    // The new version is whole: ten chunks, the changed text searchable, nothing of version 1 left.
    let stored = stack.stored_chunks("ledger").await;
    assert_eq!(stored, (0..10).map(|i| (2, i)).collect::<Vec<_>>());
    let rows = stored_rows(&stack, "ledger").await;
    let (_, text, metadata) = &rows[4];
    assert!(text.contains("rebuilt sluice gate"), "{text}");
    assert_eq!(metadata["extractor"], "llm");
    // Reused chunks keep their enriched metadata and get this version's positions.
    let (_, text, metadata) = &rows[9];
    assert_eq!(metadata["extractor"], "llm", "{metadata}");
    let start = metadata["char_start"].as_u64().unwrap() as usize;
    let changed = ten_paragraphs(Some(4));
    let located: String = changed.chars().skip(start).take(text.chars().count()).collect();
    assert_eq!(&located, text, "offsets point into the new version's text");
}

#[tokio::test]
async fn an_identical_resubmission_completes_at_once_without_new_work() {
    let stack = Stack::start(StackOptions::default().upstream(&[])).await.unwrap();
    let content = ten_paragraphs(None);
    let first = ingest_and_wait(&stack, "same", &content).await;
    let before = upstream_items(&stack).await;

    let again = submit(&stack, "same", &content).await;
    assert_eq!(again["status"], "completed", "{again}");
    let job = stack.job(again["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "completed");
    assert_eq!(job["version"], first["version"], "no new version");
    assert_eq!(job["chunks"]["reused"], first["chunks"]["total"]);
    assert_eq!(upstream_items(&stack).await, before, "no model call");

    // Different options are a different result: that goes through the pipeline again.
    let (status, other, _) = stack
        .post(
            "/v1/ingest",
            &json!({"document_id": "same", "content": content, "options": {"chunk_size": 200, "chunk_overlap": 0}}),
        )
        .await;
    assert_eq!(status, 202, "{other}");
    let job = stack.wait_for_job(other["job_id"].as_str().unwrap(), WAIT).await.unwrap();
    assert_eq!(job["status"], "completed");
    assert_eq!(job["version"], first["version"].as_u64().unwrap() + 1);
}

#[tokio::test]
async fn llm_metadata_carries_entities_and_questions_several_chunks_per_request() {
    let stack = Stack::start(StackOptions::default().upstream(&[]).env("MILLRACE_METADATA_CHUNKS_PER_REQUEST", 4))
        .await
        .unwrap();
    let job = ingest_and_wait(&stack, "enriched", &ten_paragraphs(None)).await;
    assert_eq!(job["chunks"]["metadata_failed"], 0);
    let (_, completions) = upstream_items(&stack).await;
    assert_eq!(completions, 3, "10 chunks at 4 per request");
    for (_, _, metadata) in stored_rows(&stack, "enriched").await {
        assert_eq!(metadata["extractor"], "llm", "{metadata}");
        for field in ["title", "summary"] {
            assert!(!metadata[field].as_str().unwrap().is_empty(), "{metadata}");
        }
        for field in ["keywords", "entities", "questions"] {
            assert!(metadata[field].is_array(), "{field} in {metadata}");
        }
    }
}

#[tokio::test]
async fn invalid_llm_answers_get_one_repair_then_extractive_metadata_and_a_count() {
    let stack = Stack::start(
        StackOptions::default()
            .upstream(&["--malformed-json-rate", "1"])
            .env("MILLRACE_METADATA_CHUNKS_PER_REQUEST", 4),
    )
    .await
    .unwrap();
    let job = ingest_and_wait(&stack, "garbled", &ten_paragraphs(None)).await;
    assert_eq!(job["chunks"]["metadata_failed"], 10, "{job}");
    let (_, completions) = upstream_items(&stack).await;
    assert_eq!(completions, 6, "3 requests, each repaired once");
    let rows = stored_rows(&stack, "garbled").await;
    assert_eq!(rows.len(), 10);
    for (_, _, metadata) in rows {
        assert_eq!(metadata["extractor"], "extractive", "{metadata}");
        assert!(metadata["llm_error"].as_str().unwrap().contains("JSON"), "{metadata}");
        assert!(!metadata["summary"].as_str().unwrap().is_empty());
    }
}
