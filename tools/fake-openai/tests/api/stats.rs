use serde_json::json;

use crate::helpers::{chat_body, spawn_default};

#[tokio::test]
async fn stats_count_requests_outcomes_and_tokens_and_reset() {
    let fake = spawn_default().await;
    let chat: serde_json::Value = fake.post("/v1/chat/completions", &chat_body("count me")).await.json().await.unwrap();
    fake.post("/v1/embeddings", &json!({"model": "m", "input": ["abcd", "efgh"]})).await;
    fake.post("/v1/embeddings", &json!({"model": "m"})).await;

    let stats = fake.stats().await;
    assert_eq!((stats.requests, stats.served, stats.invalid), (3, 2, 1));
    assert_eq!((stats.rate_limited, stats.errors, stats.timeouts), (0, 0, 0));
    assert_eq!(stats.prompt_tokens, chat["usage"]["prompt_tokens"].as_u64().unwrap() + 2);
    assert_eq!(stats.completion_tokens, chat["usage"]["completion_tokens"].as_u64().unwrap());
    assert_eq!(stats.by_endpoint["embeddings"].requests, 2);
    assert_eq!(stats.by_endpoint["embeddings"].invalid, 1);
    assert_eq!(stats.by_endpoint["chat_completions"].served, 1);
    assert_eq!(stats.by_endpoint["embeddings"].inputs, 2, "texts embedded, not requests");
    assert_eq!(stats.by_endpoint["chat_completions"].inputs, 1);
    assert_eq!(fake.fake.stats(), stats);

    let raw: serde_json::Value = fake.get("/stats").await.json().await.unwrap();
    for key in [
        "requests",
        "served",
        "rate_limited",
        "errors",
        "timeouts",
        "prompt_tokens",
        "completion_tokens",
        "by_endpoint",
    ] {
        assert!(raw.get(key).is_some(), "{key} missing from {raw}");
    }

    assert_eq!(fake.client.post(fake.url("/stats/reset")).send().await.unwrap().status(), 204);
    assert_eq!(fake.stats().await, millrace_fake_openai::Stats::default());
}

#[tokio::test]
async fn the_request_log_records_each_answer_with_its_time_span() {
    let fake = crate::helpers::spawn(millrace_fake_openai::Config { latency_ms: 50, ..Default::default() }).await;
    fake.post("/v1/chat/completions", &chat_body("log me")).await;
    fake.post("/v1/embeddings", &json!({"model": "m"})).await;
    let log: serde_json::Value = fake.get("/requests").await.json().await.unwrap();
    let requests = log["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 2, "{log}");
    assert_eq!(requests[0]["endpoint"], "chat_completions");
    assert_eq!(requests[0]["status"], 200);
    let span = requests[0]["finished_ms"].as_u64().unwrap() - requests[0]["started_ms"].as_u64().unwrap();
    assert!(span >= 50, "the latency is inside the logged span: {span} ms");
    assert_eq!(requests[1]["status"], 400);
}
