use std::time::{Duration, Instant};

use millrace_fake_openai::Config;
use serde_json::json;

use crate::helpers::{chat_body, error_body, spawn};

#[tokio::test]
async fn error_rate_one_answers_500() {
    let fake = spawn(Config { error_rate: 1.0, ..Config::default() }).await;
    for _ in 0..3 {
        let error = error_body(fake.post("/v1/chat/completions", &chat_body("hello")).await, 500).await;
        assert_eq!(error["type"], "server_error");
    }
    let error = error_body(fake.post("/v1/embeddings", &json!({"model": "m", "input": "x"})).await, 500).await;
    assert_eq!(error["type"], "server_error");
    let stats = fake.stats().await;
    assert_eq!((stats.requests, stats.errors, stats.served), (4, 4, 0));
    assert_eq!(stats.by_endpoint["chat_completions"].errors, 3);
}

#[tokio::test]
async fn timeout_rate_one_hangs_then_answers_504() {
    let fake = spawn(Config { timeout_rate: 1.0, hang_ms: 300, ..Config::default() }).await;
    let started = Instant::now();
    let error = error_body(fake.post("/v1/chat/completions", &chat_body("hello")).await, 504).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(error["code"], "timeout");
    assert_eq!(fake.stats().await.timeouts, 1);
}

#[tokio::test]
async fn latency_is_added_to_each_request() {
    let fake = spawn(Config { latency_ms: 150, jitter_ms: 50, ..Config::default() }).await;
    let started = Instant::now();
    assert_eq!(fake.post("/v1/chat/completions", &chat_body("hello")).await.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn a_seeded_error_rate_fails_about_its_share() {
    let fake = spawn(Config { error_rate: 0.3, seed: Some(1), ..Config::default() }).await;
    for _ in 0..200 {
        fake.post("/v1/embeddings", &json!({"model": "m", "input": "x"})).await;
    }
    let stats = fake.stats().await;
    assert_eq!(stats.errors + stats.served, 200);
    assert!((30..=90).contains(&stats.errors), "{}", stats.errors);
}

#[tokio::test]
async fn invalid_configs_are_refused_before_binding() {
    let err = millrace_fake_openai::spawn(Config { timeout_rate: 1.5, ..Config::default() }).await.err().unwrap();
    assert!(err.to_string().contains("--timeout-rate must be between 0 and 1"), "{err}");
}

#[tokio::test]
async fn malformed_json_rate_one_cuts_json_answers_but_not_text() {
    let fake = spawn(Config { malformed_json_rate: 1.0, ..Config::default() }).await;
    let mut body = chat_body("Water turns the wheel of the mill");
    body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "m", "schema": {
        "type": "object", "required": ["title"], "properties": {"title": {"type": "string"}}
    }}});
    let answer: serde_json::Value = fake.post("/v1/chat/completions", &body).await.json().await.unwrap();
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(serde_json::from_str::<serde_json::Value>(content).is_err(), "still JSON: {content}");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");

    let plain: serde_json::Value = fake.post("/v1/chat/completions", &chat_body("hello")).await.json().await.unwrap();
    assert!(plain["choices"][0]["message"]["content"].as_str().unwrap().starts_with("This is a fake answer"));
}

#[tokio::test]
async fn control_changes_the_faults_while_the_fake_runs_and_refuses_bad_values() {
    let fake = spawn(Config::default()).await;
    assert_eq!(fake.post("/v1/chat/completions", &chat_body("hello")).await.status(), 200);

    // A 5xx burst: every request fails until it is turned off again.
    let now: serde_json::Value = fake.post("/control", &json!({"error_rate": 1.0})).await.json().await.unwrap();
    assert_eq!(now, json!({"latency_ms": 0, "jitter_ms": 0, "error_rate": 1.0, "timeout_rate": 0.0}));
    error_body(fake.post("/v1/chat/completions", &chat_body("hello")).await, 500).await;
    error_body(fake.post("/v1/embeddings", &json!({"model": "m", "input": "x"})).await, 500).await;

    // A bad value is refused and changes nothing.
    let error = error_body(fake.post("/control", &json!({"error_rate": 0.5, "timeout_rate": 0.7})).await, 400).await;
    assert!(error["message"].as_str().unwrap().contains("must not exceed 1"), "{error}");
    error_body(fake.post("/control", &json!({"latency": 5})).await, 400).await;
    let now: serde_json::Value = fake.get("/control").await.json().await.unwrap();
    assert_eq!(now["error_rate"], 1.0);

    // A latency spike instead of errors.
    fake.post("/control", &json!({"error_rate": 0.0, "latency_ms": 200})).await;
    let started = Instant::now();
    assert_eq!(fake.post("/v1/chat/completions", &chat_body("hello")).await.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(200));
    let stats = fake.stats().await;
    assert_eq!((stats.errors, stats.served), (2, 2));
}
