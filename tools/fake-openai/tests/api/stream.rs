use std::time::{Duration, Instant};

use millrace_fake_openai::Config;
use serde_json::{Value, json};

use crate::helpers::{TestFake, chat_body, error_body, spawn, spawn_default};

/// The `data:` payloads of an SSE body, in order.
fn events(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| event.strip_prefix("data: ").unwrap_or_else(|| panic!("not a data event: {event:?}")).to_owned())
        .collect()
}

/// Posts a streamed request; returns the payloads after checking the SSE headers.
async fn stream(fake: &TestFake, body: &Value) -> Vec<String> {
    let response = fake.post("/v1/chat/completions", body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    events(&response.text().await.unwrap())
}

fn chunks(events: &[String]) -> Vec<Value> {
    events.iter().filter(|e| *e != "[DONE]").map(|e| serde_json::from_str(e).unwrap()).collect()
}

fn content(chunks: &[Value]) -> String {
    chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect()
}

#[tokio::test]
async fn a_streamed_answer_is_the_same_answer_in_openai_chunks() {
    let fake = spawn_default().await;
    let plain: Value =
        fake.post("/v1/chat/completions", &chat_body("tell me about rivers and mills")).await.json().await.unwrap();
    let expected = plain["choices"][0]["message"]["content"].as_str().unwrap();

    let mut body = chat_body("tell me about rivers and mills");
    body["stream"] = json!(true);
    let events = stream(&fake, &body).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks = chunks(&events);
    assert!(chunks.len() >= 5, "several content pieces: {events:?}");

    let first = &chunks[0];
    assert_eq!(first["object"], "chat.completion.chunk");
    assert!(first["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(first["model"], "fake-chat");
    assert_eq!(first["choices"][0]["delta"], json!({"role": "assistant", "content": "", "refusal": null}));
    assert!(chunks.iter().all(|c| c["id"] == first["id"] && c.get("usage").is_none()));

    assert_eq!(content(&chunks), expected);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["delta"], json!({}));
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    let finishes = chunks.iter().filter(|c| !c["choices"][0]["finish_reason"].is_null()).count();
    assert_eq!(finishes, 1);

    // Streamed or not, the same tokens are counted.
    let stats = fake.stats().await;
    assert_eq!(stats.served, 2);
    assert_eq!(stats.completion_tokens, 2 * plain["usage"]["completion_tokens"].as_u64().unwrap());
}

#[tokio::test]
async fn include_usage_adds_a_last_chunk_with_usage_and_no_choices() {
    let fake = spawn_default().await;
    let mut body = chat_body("count the tokens of this");
    let plain: Value = fake.post("/v1/chat/completions", &body).await.json().await.unwrap();
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let events = stream(&fake, &body).await;
    let chunks = chunks(&events);
    let (usage_chunk, rest) = chunks.split_last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"], plain["usage"]);
    assert!(rest.iter().all(|c| c["usage"].is_null() && c.get("usage").is_some()));
    assert_eq!(rest.last().unwrap()["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn json_answers_and_length_limits_stream_too() {
    let fake = spawn_default().await;
    let mut body = chat_body("Describe as JSON: consumer groups share a stream between replicas");
    body["response_format"] = json!({"type": "json_object"});
    let plain: Value = fake.post("/v1/chat/completions", &body).await.json().await.unwrap();
    body["stream"] = json!(true);
    let chunks = chunks(&stream(&fake, &body).await);
    let streamed = content(&chunks);
    assert_eq!(streamed, plain["choices"][0]["message"]["content"].as_str().unwrap());
    assert!(serde_json::from_str::<Value>(&streamed).unwrap().is_object());

    body["max_tokens"] = json!(3);
    let chunks = self::chunks(&stream(&fake, &body).await);
    assert_eq!(content(&chunks).chars().count(), 12);
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn quotas_faults_and_latency_apply_before_the_stream_starts() {
    let mut body = chat_body("hello");
    body["stream"] = json!(true);

    let fake = spawn(Config { rpm: 1, ..Config::default() }).await;
    stream(&fake, &body).await;
    let response = fake.post("/v1/chat/completions", &body).await;
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(error_body(response, 429).await["code"], "rate_limit_exceeded");

    let fake = spawn(Config { error_rate: 1.0, ..Config::default() }).await;
    assert_eq!(error_body(fake.post("/v1/chat/completions", &body).await, 500).await["type"], "server_error");
    assert_eq!(fake.stats().await.errors, 1);

    let fake = spawn(Config { latency_ms: 150, ..Config::default() }).await;
    let started = Instant::now();
    stream(&fake, &body).await;
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn truncate_stream_rate_one_cuts_every_stream_before_its_end() {
    let fake = spawn(Config { truncate_stream_rate: 1.0, ..Config::default() }).await;
    let mut body = chat_body("a question long enough to be streamed in several pieces");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let events = stream(&fake, &body).await;
    assert!(!events.contains(&"[DONE]".to_owned()), "{events:?}");
    let chunks = chunks(&events);
    assert!(chunks.len() >= 2, "the role chunk and some content: {events:?}");
    assert!(!content(&chunks).is_empty());
    assert!(chunks.iter().all(|c| c["choices"][0]["finish_reason"].is_null() && c["usage"].is_null()));

    // Unstreamed answers are never cut.
    assert_eq!(fake.post("/v1/chat/completions", &chat_body("hello")).await.status(), 200);
    let stats = fake.stats().await;
    assert_eq!((stats.requests, stats.truncated, stats.served), (2, 1, 1));
    assert_eq!(stats.by_endpoint["chat_completions"].truncated, 1);

    let err =
        millrace_fake_openai::spawn(Config { truncate_stream_rate: 2.0, ..Config::default() }).await.err().unwrap();
    assert!(err.to_string().contains("--truncate-stream-rate"), "{err}");
}
