use millrace_e2e::{Stack, StackOptions};
use serde_json::{Value, json};

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_else(|| panic!("not an error body: {body}"))
}

/// Each bad input gets its status code and a JSON error, and nothing else is lost. Chunking is
/// not started, so accepted jobs stay queued and the queue bound (2) can be reached.
#[tokio::test]
async fn bad_inputs_get_their_status_codes() {
    let stack = Stack::start(
        StackOptions::default().skip("chunking").service_env("ingestion", "MILLRACE_MAX_QUEUED_JOBS", 2).service_env(
            "ingestion",
            "MILLRACE_MAX_DOCUMENT_BYTES",
            1000,
        ),
    )
    .await
    .unwrap();
    let api = stack.api();
    let raw = stack
        .http
        .post(format!("{api}/v1/ingest"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 400);
    let body: Value = raw.json().await.unwrap();
    assert!(!body["error"]["message"].as_str().unwrap().is_empty());

    let cases = [
        (json!({}), 422),
        (json!({"content": "a", "content_base64": "YQ=="}), 422),
        (json!({"content_base64": "!!!"}), 422),
        (json!({"content_base64": "//79", "content_type": "text/plain"}), 422), // 0xff 0xfe 0xfd is not UTF-8
        (json!({"content_base64": "//79"}), 415),                               // undeclared, and no known signature
        (json!({"content": "x".repeat(2000)}), 413),
        (json!({"content": "a", "content_type": "application/x-msdownload"}), 415),
    ];
    for (body, expected) in cases {
        let (status, answer, _) = stack.post("/v1/ingest", &body).await;
        assert_eq!(status, expected, "{body} → {answer}");
        error_code(&answer);
    }
    let (status, answer, _) = stack.post("/v1/ingest", &json!({"content_type": "text/plain"})).await;
    assert_eq!(status, 422);
    assert!(answer["error"]["message"].as_str().unwrap().contains("content"), "names the field: {answer}");

    assert_eq!(stack.get("/v1/jobs/no-such-job").await.0, 404);
    assert_eq!(stack.get("/v1/documents/no-such-document").await.0, 404);

    // Two jobs fill the queue bound; the third is refused with Retry-After.
    stack.ingest("a", "first").await;
    stack.ingest("b", "second").await;
    let (status, answer, headers) = stack.post("/v1/ingest", &json!({"content": "third"})).await;
    assert_eq!(status, 503, "{answer}");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
}

/// A document that makes a stage fail (here: HTML that is not UTF-8) fails its own job with
/// the stage and reason, and the same worker goes on with the next document.
#[tokio::test]
async fn a_document_that_breaks_a_stage_fails_alone() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let (status, body, _) = stack
        .post("/v1/ingest", &json!({"document_id": "blank", "content": " \n\t ", "content_type": "text/plain"}))
        .await;
    // Whitespace-only content is refused up front; a document whose text vanishes in parsing
    // (HTML that is all script) fails in the chunking stage instead.
    assert_eq!(status, 422, "{body}");
    let (status, body, _) = stack
        .post(
            "/v1/ingest",
            &json!({"document_id": "empty-html", "content": "<script>only()</script>", "content_type": "text/html"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let broken = body["job_id"].as_str().unwrap().to_owned();
    let fine = stack.ingest("fine", "A perfectly ordinary document about canals.").await;
    let broken = stack.wait_for_job(&broken, std::time::Duration::from_secs(60)).await.unwrap();
    assert_eq!(broken["status"], "failed");
    assert_eq!(broken["error"]["stage"], "chunking");
    let fine = stack.wait_for_job(&fine, std::time::Duration::from_secs(60)).await.unwrap();
    assert_eq!(fine["status"], "completed", "{fine}");
}
