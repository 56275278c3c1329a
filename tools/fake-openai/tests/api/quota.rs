use millrace_fake_openai::Config;
use serde_json::json;

use crate::helpers::{chat_body, error_body, spawn};

#[tokio::test]
async fn over_the_rpm_answers_429_with_retry_after() {
    let fake = spawn(Config { rpm: 3, ..Config::default() }).await;
    for _ in 0..3 {
        let response = fake.post("/v1/chat/completions", &chat_body("hello")).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-ratelimit-limit-requests"], "3");
    }
    let response = fake.post("/v1/embeddings", &json!({"model": "m", "input": "x"})).await;
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let error = error_body(response, 429).await;
    assert_eq!(error["type"], "requests");
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert!(error["message"].as_str().unwrap().contains(&format!("try again in {retry_after}s")));

    let stats = fake.stats().await;
    assert_eq!((stats.requests, stats.served, stats.rate_limited), (4, 3, 1));
    // Models are not charged: readiness probes keep working.
    assert_eq!(fake.get("/v1/models").await.status(), 200);
}

#[tokio::test]
async fn over_the_tpm_answers_429_for_tokens() {
    let fake = spawn(Config { tpm: 20, ..Config::default() }).await;
    // 40 chars = 10 tokens each.
    let input = "x".repeat(40);
    for _ in 0..2 {
        assert_eq!(fake.post("/v1/embeddings", &json!({"model": "m", "input": input})).await.status(), 200);
    }
    let response = fake.post("/v1/embeddings", &json!({"model": "m", "input": "y"})).await;
    assert!(response.headers().contains_key("retry-after"));
    let error = error_body(response, 429).await;
    assert_eq!(error["type"], "tokens");
}
