use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{assert_error, metric, spawn_app, spawn_app_with};

fn b64(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn valid_ingest_is_queued_and_enqueued_for_chunking() {
    let app = spawn_app().await;
    let response = app
        .post_json(
            "/v1/ingest",
            &json!({
                "document_id": "docs/guide.md",
                "content": "# Guide\n\nHello, millrace.",
                "content_type": "text/markdown",
                "source": "file:///guide.md",
                "metadata": {"team": "search"}
            }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.unwrap();
    let job_id = body["job_id"].as_str().unwrap().to_owned();
    assert_eq!(body["document_id"], "docs/guide.md");
    assert_eq!(body["status"], "queued");
    assert_eq!(body["status_url"], format!("/v1/jobs/{job_id}"));

    let response = app.get(&format!("/v1/jobs/{job_id}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let job: Value = response.json().await.unwrap();
    assert_eq!(job["job_id"], job_id.as_str());
    assert_eq!(job["document_id"], "docs/guide.md");
    assert_eq!(job["status"], "queued");
    assert_eq!(job["progress"], 0);
    assert_eq!(
        job["chunks"],
        json!({"total": 0, "metadata_done": 0, "embedded": 0, "stored": 0, "reused": 0, "metadata_failed": 0})
    );
    assert_eq!(job["options"], json!({}));
    assert!(job.get("url").is_none(), "no url for a document sent inline");
    assert_eq!(job["error"], Value::Null);
    assert_eq!(job["finished_at"], Value::Null);
    assert_eq!(job["content_type"], "text/markdown");
    assert_eq!(job["source"], "file:///guide.md");
    assert_eq!(job["metadata"], json!({"team": "search"}));
    assert_eq!(job["tenant_id"], "default");
    assert!(job["created_at"].as_str().unwrap().ends_with('Z'));

    assert_eq!(app.chunking_entries().await, vec![job_id]);
}

#[tokio::test]
async fn document_id_defaults_to_the_content_hash_and_versions_count_up() {
    let app = spawn_app().await;
    let content = "the same text twice";
    let first = app.ingest(content).await;
    let second = app.ingest(content).await;
    let expected = format!("sha256:{}", hex::encode(Sha256::digest(content.as_bytes())));
    assert_eq!(first["document_id"], expected.as_str());
    assert_eq!(second["document_id"], expected.as_str());
    let job: Value = app.get(&format!("/v1/jobs/{}", second["job_id"].as_str().unwrap())).await.json().await.unwrap();
    assert_eq!(job["version"], 2);
    assert_eq!(job["content_hash"], expected.trim_start_matches("sha256:"));
}

#[tokio::test]
async fn base64_content_with_a_content_type_parameter_is_accepted() {
    let app = spawn_app_with(&[("PUBLIC_URL", "https://millrace.example/")]).await;
    let response = app
        .post_json(
            "/v1/ingest",
            &json!({"content_base64": b64("<p>héllo</p>"), "content_type": "TEXT/HTML; charset=utf-8"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.unwrap();
    let job_id = body["job_id"].as_str().unwrap();
    assert_eq!(body["status_url"], format!("https://millrace.example/v1/jobs/{job_id}"));
    let job: Value = app.get(&format!("/v1/jobs/{job_id}")).await.json().await.unwrap();
    assert_eq!(job["content_type"], "text/html");
    assert_eq!(job["content_bytes"], "<p>héllo</p>".len());
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = spawn_app().await;
    let (code, _) = assert_error(app.post_raw("/v1/ingest", "{\"content\": ").await, StatusCode::BAD_REQUEST).await;
    assert_eq!(code, "bad_request");
    let (code, _) = assert_error(app.post_raw("/v1/ingest", "not json").await, StatusCode::BAD_REQUEST).await;
    assert_eq!(code, "bad_request");
}

#[tokio::test]
async fn wrong_types_are_400() {
    let app = spawn_app().await;
    for body in [json!({"content": 5}), json!({"content": "x", "document_id": 7}), json!(["content"])] {
        let (code, _) = assert_error(app.post_json("/v1/ingest", &body).await, StatusCode::BAD_REQUEST).await;
        assert_eq!(code, "bad_request", "{body}");
    }
}

#[tokio::test]
async fn content_is_required_once() {
    let app = spawn_app().await;
    let (code, message) =
        assert_error(app.post_json("/v1/ingest", &json!({"document_id": "a"})).await, StatusCode::UNPROCESSABLE_ENTITY)
            .await;
    assert_eq!(code, "invalid_argument");
    assert!(message.contains("`content`") && message.contains("`content_base64`"), "{message}");

    let both = json!({"content": "a", "content_base64": b64("a")});
    let (_, message) = assert_error(app.post_json("/v1/ingest", &both).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(message.contains("`content`") && message.contains("`content_base64`"), "{message}");
    assert!(app.chunking_entries().await.is_empty());
}

#[tokio::test]
async fn bad_base64_is_422() {
    let app = spawn_app().await;
    let (_, message) = assert_error(
        app.post_json("/v1/ingest", &json!({"content_base64": "%%% not base64 %%%"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(message.contains("content_base64"), "{message}");
}

#[tokio::test]
async fn invalid_utf8_declared_as_text_is_422() {
    let app = spawn_app().await;
    let body = json!({"content_base64": b64([0x66, 0x6f, 0xff, 0xfe]), "content_type": "text/plain"});
    let (code, message) =
        assert_error(app.post_json("/v1/ingest", &body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(code, "invalid_argument");
    assert!(message.contains("UTF-8"), "{message}");
}

#[tokio::test]
async fn bad_document_ids_are_422() {
    let app = spawn_app().await;
    for id in [String::new(), "x".repeat(257), "a\u{0}b".into(), "line\nbreak".into()] {
        let body = json!({"document_id": id, "content": "text"});
        let (_, message) =
            assert_error(app.post_json("/v1/ingest", &body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert!(message.contains("document_id"), "{message}");
    }
    let ok = json!({"document_id": "é".repeat(256), "content": "text"});
    assert_eq!(app.post_json("/v1/ingest", &ok).await.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn metadata_must_be_an_object() {
    let app = spawn_app().await;
    for metadata in [json!([1, 2]), json!("tag"), json!(3)] {
        let body = json!({"content": "text", "metadata": metadata});
        let (_, message) =
            assert_error(app.post_json("/v1/ingest", &body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert!(message.contains("metadata"), "{message}");
    }
}

#[tokio::test]
async fn unsupported_content_type_is_415() {
    let app = spawn_app().await;
    let body = json!({"content_base64": b64("%PDF-1.7"), "content_type": "application/x-unknown"});
    let (code, message) =
        assert_error(app.post_json("/v1/ingest", &body).await, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    assert_eq!(code, "unsupported_media_type");
    assert!(message.contains("text/plain"), "the message lists what is supported: {message}");
}

#[tokio::test]
async fn blank_content_is_422() {
    let app = spawn_app().await;
    for body in [json!({"content": ""}), json!({"content": " \n\t "}), json!({"content_base64": ""})] {
        assert_error(app.post_json("/v1/ingest", &body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
}

#[tokio::test]
async fn oversized_documents_are_413() {
    let app = spawn_app_with(&[("MAX_DOCUMENT_BYTES", "1000")]).await;
    assert_eq!(app.post_json("/v1/ingest", &json!({"content": "a".repeat(1000)})).await.status(), StatusCode::ACCEPTED);
    let (code, _) = assert_error(
        app.post_json("/v1/ingest", &json!({"content": "a".repeat(1001)})).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert_eq!(code, "payload_too_large");
    assert_error(
        app.post_json("/v1/ingest", &json!({"content_base64": b64("a".repeat(1001))})).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    // A body past the limit (1000 × 4/3 + 64 KiB) is refused before it is parsed.
    let body = json!({"content": "a".repeat(100_000)}).to_string();
    assert_error(app.post_raw("/v1/ingest", body).await, StatusCode::PAYLOAD_TOO_LARGE).await;
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after_from_throughput() {
    let app = spawn_app_with(&[("MAX_QUEUED_JOBS", "1")]).await;
    let first = app.ingest("first").await;

    let response = app.post_json("/v1/ingest", &json!({"content": "second"})).await;
    assert_eq!(response.headers()["retry-after"], "30", "no recent throughput: the default wait");
    let (code, _) = assert_error(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(code, "unavailable");
    // A dead-letter retry puts work back too: it waits for room the same way.
    let response = app.post_json("/v1/dlq/storage/retry", &json!({})).await;
    assert_eq!(response.headers()["retry-after"], "30");
    let (_, message) = assert_error(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(message.contains("too many jobs are queued"), "{message}");

    // Finishing a job frees a place, and gives a rate: 1 job per minute.
    let cancelled = app.delete(&format!("/v1/jobs/{}", first["job_id"].as_str().unwrap())).await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    app.ingest("third").await;
    let response = app.post_json("/v1/ingest", &json!({"content": "fourth"})).await;
    assert_eq!(response.headers()["retry-after"], "60", "one job over the bound at one job per minute");
    assert_error(response, StatusCode::SERVICE_UNAVAILABLE).await;

    // The recorder is process-wide: other tests in the same process may add to the counts.
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metric(&metrics, "millrace_ingestion_requests_rejected_total{reason=\"queue_full\"}") >= 2.0, "{metrics}");
    assert!(metric(&metrics, "millrace_ingestion_jobs_submitted_total") >= 2.0, "{metrics}");
}

/// Issue 13, defect 10: the queue is bounded by the bytes it holds too, not only by jobs.
#[tokio::test]
async fn queued_bytes_are_bounded_too() {
    let app = spawn_app_with(&[("MAX_DOCUMENT_BYTES", "1000"), ("MAX_QUEUED_BYTES", "1500")]).await;
    let first = app.ingest(&"a".repeat(800)).await;
    let response = app.post_json("/v1/ingest", &json!({"content": "b".repeat(800)})).await;
    assert_eq!(response.headers()["retry-after"], "30");
    let (_, message) = assert_error(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(message.contains("MILLRACE_MAX_QUEUED_BYTES"), "{message}");
    // A smaller document still fits.
    app.ingest(&"c".repeat(600)).await;
    // A finished job's bytes are free again (a cancel drops its document at once).
    let cancelled = app.delete(&format!("/v1/jobs/{}", first["job_id"].as_str().unwrap())).await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    app.ingest(&"d".repeat(800)).await;
}

/// Issue 13, defect 10: Redis runs `noeviction`, so new work stops before Redis reaches its
/// memory limit rather than every write of the pipeline failing at it.
#[tokio::test]
async fn new_work_is_refused_near_redis_memory_limit() {
    let app = spawn_app().await;
    app.ingest("before the limit").await;
    let mut redis = app.redis().await;
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut redis).await.unwrap();
    let used: u64 = info.lines().find_map(|l| l.strip_prefix("used_memory:")).unwrap().trim().parse().unwrap();
    // Above the 0.9 watermark, below the limit itself (writes still succeed).
    let _: () =
        redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(used * 21 / 20).query_async(&mut redis).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await; // the replica's reading ages out
    let response = app.post_json("/v1/ingest", &json!({"content": "at the limit"})).await;
    assert!(response.headers().contains_key("retry-after"));
    let (_, message) = assert_error(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(message.contains("memory limit"), "{message}");
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(0).query_async(&mut redis).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    app.ingest("after the limit is lifted").await;
}

#[tokio::test]
async fn generic_base64_content_is_typed_by_its_bytes() {
    let app = spawn_app().await;
    let body = json!({"content_base64": b64("%PDF-1.7\n1 0 obj"), "content_type": "application/octet-stream"});
    let response = app.post_json("/v1/ingest", &body).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted: Value = response.json().await.unwrap();
    let job = app.job(accepted["job_id"].as_str().unwrap()).await;
    assert_eq!(job["content_type"], "application/pdf");

    let body = json!({"content_base64": b64([0x00, 0x9f, 0x92, 0x96]), "content_type": "application/octet-stream"});
    let (code, message) =
        assert_error(app.post_json("/v1/ingest", &body).await, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    assert_eq!(code, "unsupported_media_type");
    assert!(message.contains("content_type"), "{message}");
}
