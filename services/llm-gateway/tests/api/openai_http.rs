//! The OpenAI-compatible HTTP API (`/v1/chat/completions`, `/v1/embeddings`, `/v1/models`) over
//! real HTTP, in front of the fake upstream, and the official `openai` Python SDK against it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::StreamExt as _;
use serde_json::{Value, json};

use crate::helpers::{TestGateway, gateway_for, spawn_fake, spawn_gateway};

fn url(gateway: &TestGateway, path: &str) -> String {
    format!("http://{}{path}", gateway.http_addr)
}

async fn post(gateway: &TestGateway, path: &str, body: &Value) -> reqwest::Response {
    gateway.http().post(url(gateway, path)).json(body).send().await.unwrap()
}

/// Asserts OpenAI's error shape and status; returns the `error` object.
async fn openai_error(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status);
    let body: Value = response.json().await.unwrap();
    let error = &body["error"];
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(error["type"].is_string(), "{body}");
    assert!(error.get("param").is_some() && error.get("code").is_some(), "{body}");
    error.clone()
}

fn chat_body(text: &str) -> Value {
    json!({"model": "fake-chat", "messages": [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": text}
    ]})
}

/// The `data:` payloads of an SSE body, comments skipped.
fn sse_payloads(body: &str) -> Vec<String> {
    body.split("\n\n")
        .flat_map(|event| event.lines())
        .filter(|line| !line.is_empty() && !line.starts_with(':'))
        .map(|line| line.strip_prefix("data: ").unwrap_or_else(|| panic!("not a data line: {line:?}")).to_owned())
        .collect()
}

async fn stream(gateway: &TestGateway, body: &Value) -> Vec<String> {
    let response = post(gateway, "/v1/chat/completions", body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    sse_payloads(&response.text().await.unwrap())
}

fn chunks(payloads: &[String]) -> Vec<Value> {
    payloads.iter().filter(|p| *p != "[DONE]").map(|p| serde_json::from_str(p).unwrap()).collect()
}

fn streamed_content(chunks: &[Value]) -> String {
    chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect()
}

/// An upstreams file in a fresh temporary folder.
fn upstreams_file(text: &str) -> String {
    let path = std::env::temp_dir().join(format!("millrace-upstreams-{}.toml", uuid::Uuid::now_v7()));
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[tokio::test]
async fn chat_completions_answer_in_openais_shape() {
    let fake = spawn_fake(Default::default()).await;
    let gateway = gateway_for(&fake, &[]).await;
    let mut body = chat_body("Tell me about water mills");
    // Content parts, and fields the gateway does not know, are accepted as OpenAI accepts them.
    body["messages"][1]["content"] =
        json!([{"type": "text", "text": "Tell me about"}, {"type": "text", "text": "water mills"}]);
    body["temperature"] = json!(0.2);
    body["max_completion_tokens"] = json!(200);
    body["seed"] = json!(1);
    body["user"] = json!("someone");
    let response = gateway
        .http()
        .post(url(&gateway, "/v1/chat/completions"))
        .header("X-Millrace-Job-Id", "job-http-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let answer: Value = response.json().await.unwrap();

    assert!(answer["id"].as_str().unwrap().starts_with("chatcmpl-"), "{answer}");
    assert_eq!(answer["object"], "chat.completion");
    assert!(answer["created"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(answer["model"], "fake-chat");
    let choices = answer["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 1);
    assert_eq!(choices[0]["index"], 0);
    assert_eq!(choices[0]["message"]["role"], "assistant");
    assert!(choices[0]["message"]["refusal"].is_null() && choices[0]["logprobs"].is_null());
    let content = choices[0]["message"]["content"].as_str().unwrap();
    assert!(content.contains("Tell me about water mills"), "{content}");
    assert_eq!(choices[0]["finish_reason"], "stop");
    let usage = &answer["usage"];
    let (prompt, completion) = (usage["prompt_tokens"].as_u64().unwrap(), usage["completion_tokens"].as_u64().unwrap());
    assert!(prompt > 0 && completion > 0);
    assert_eq!(usage["total_tokens"].as_u64(), Some(prompt + completion));

    let stats = fake.stats();
    assert_eq!((stats.served, stats.prompt_tokens), (1, prompt));
}

#[tokio::test]
async fn embeddings_in_float_and_base64_decode_to_the_same_vectors() {
    let fake = spawn_fake(millrace_fake_openai::Config { embedding_dim: 48, ..Default::default() }).await;
    let gateway = gateway_for(&fake, &[]).await;
    let inputs = ["first text", "second text"];

    let floats: Value =
        post(&gateway, "/v1/embeddings", &json!({"model": "fake-embed", "input": inputs})).await.json().await.unwrap();
    assert_eq!(floats["object"], "list");
    assert_eq!(floats["model"], "fake-embed");
    assert_eq!(floats["usage"]["prompt_tokens"], 6);
    assert_eq!(floats["usage"]["total_tokens"], 6);
    let data = floats["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let float_vectors: Vec<Vec<f32>> = data
        .iter()
        .enumerate()
        .map(|(i, item)| {
            assert_eq!((item["object"].as_str(), item["index"].as_u64()), (Some("embedding"), Some(i as u64)));
            item["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
        })
        .collect();
    for (vector, input) in float_vectors.iter().zip(inputs) {
        assert_eq!(*vector, millrace_fake_openai::embedding(input, 48));
    }

    let body = json!({"model": "fake-embed", "input": inputs, "encoding_format": "base64"});
    let encoded: Value = post(&gateway, "/v1/embeddings", &body).await.json().await.unwrap();
    let base64_vectors: Vec<Vec<f32>> = encoded["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let bytes = base64::engine::general_purpose::STANDARD.decode(item["embedding"].as_str().unwrap()).unwrap();
            bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
        })
        .collect();
    assert_eq!(base64_vectors, float_vectors);

    // One string is one input.
    let single: Value = post(&gateway, "/v1/embeddings", &json!({"model": "fake-embed", "input": "first text"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(single["data"].as_array().unwrap().len(), 1);

    for (body, param) in [
        (json!({"input": [[1, 2, 3]]}), "input"),
        (json!({"input": "x", "dimensions": 8}), "dimensions"),
        (json!({"input": ["ok", ""]}), "input[1]"),
        (json!({"input": "x", "encoding_format": "hex"}), "encoding_format"),
    ] {
        let error = openai_error(post(&gateway, "/v1/embeddings", &body).await, 400).await;
        assert_eq!(error["param"], param, "{body}");
    }
    assert_eq!(fake.stats().by_endpoint["embeddings"].requests, 3, "refused requests never reach the upstream");
}

#[tokio::test]
async fn models_are_listed_and_unknown_ones_are_404() {
    let fake = spawn_fake(Default::default()).await;
    let file = upstreams_file(&format!(
        "[[upstreams]]\nname = \"fake\"\nbase_url = \"{}\"\nmodels = [\"fake-chat\", \"fake-embed\", \"org/model-7b\"]\n",
        fake.base_url()
    ));
    let gateway = spawn_gateway(&[
        ("LLM_UPSTREAMS_FILE", file.as_str()),
        ("LLM_CHAT_MODEL", "fake-chat"),
        ("LLM_EMBED_MODEL", "fake-embed"),
    ])
    .await;

    let list: Value = gateway.api_get("/v1/models").await.json().await.unwrap();
    assert_eq!(list["object"], "list");
    let data = list["data"].as_array().unwrap();
    let ids: Vec<&str> = data.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["fake-chat", "fake-embed", "org/model-7b"]);
    assert!(data.iter().all(|m| m["object"] == "model" && m["owned_by"] == "millrace" && m["created"].is_i64()));

    let one: Value = gateway.api_get("/v1/models/org/model-7b").await.json().await.unwrap();
    assert_eq!((one["id"].as_str(), one["object"].as_str()), (Some("org/model-7b"), Some("model")));
    let error = openai_error(gateway.api_get("/v1/models/gpt-9").await, 404).await;
    assert_eq!(error["code"], "model_not_found");

    let mut body = chat_body("hello");
    body["model"] = json!("gpt-9");
    let error = openai_error(post(&gateway, "/v1/chat/completions", &body).await, 404).await;
    assert_eq!((error["code"].as_str(), error["param"].as_str()), (Some("model_not_found"), Some("model")));
    assert!(error["message"].as_str().unwrap().contains("gpt-9"));
    let error =
        openai_error(post(&gateway, "/v1/embeddings", &json!({"model": "gpt-9", "input": "x"})).await, 404).await;
    assert_eq!(error["code"], "model_not_found");
    assert_eq!(fake.stats().requests, 0);
}

#[tokio::test]
async fn malformed_bodies_are_400s_naming_the_field() {
    let fake = spawn_fake(Default::default()).await;
    let gateway = gateway_for(&fake, &[]).await;
    let client = gateway.http();

    let response = client.post(url(&gateway, "/v1/chat/completions")).body("{\"model\": \"m\", ").send().await.unwrap();
    let error = openai_error(response, 400).await;
    assert_eq!((error["type"].as_str(), error["code"].as_str()), (Some("invalid_request_error"), Some("invalid_json")));

    let cases = [
        (json!({"model": "fake-chat"}), "messages", "missing_required_parameter"),
        (json!({"model": "fake-chat", "messages": []}), "messages", "empty_array"),
        (
            json!({"model": "fake-chat", "messages": [{"role": "user", "content": 42}]}),
            "messages[0].content",
            "invalid_type",
        ),
        (
            json!({"model": "fake-chat", "messages": [{"content": "x"}]}),
            "messages[0].role",
            "missing_required_parameter",
        ),
        (json!({"model": ["fake-chat"], "messages": [{"role": "user", "content": "x"}]}), "model", "invalid_type"),
        (json!({"messages": [{"role": "user", "content": "x"}], "temperature": "warm"}), "temperature", "invalid_type"),
        (json!({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}), "stream", "invalid_type"),
    ];
    for (body, param, code) in cases {
        let error = openai_error(post(&gateway, "/v1/chat/completions", &body).await, 400).await;
        assert_eq!(error["param"], param, "{body}");
        assert_eq!(error["code"], code, "{body}");
        assert!(error["message"].as_str().unwrap().contains(param), "{error}");
    }
    // A body that is JSON but no object; and no Content-Type at all is fine, as with OpenAI.
    let response = client.post(url(&gateway, "/v1/embeddings")).body("[\"x\"]").send().await.unwrap();
    openai_error(response, 400).await;
    let response = client.post(url(&gateway, "/v1/embeddings")).body(r#"{"input": "x"}"#).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(fake.stats().requests, 1, "only the valid request reached the upstream");
}

#[tokio::test]
async fn a_body_past_the_shared_limit_is_413_in_openais_shape() {
    let fake = spawn_fake(Default::default()).await;
    let gateway = gateway_for(&fake, &[]).await;
    // 5 MiB: past the 4 MiB default, which OpenAI's largest embeddings request fits under.
    let body = json!({"model": "fake-embed", "input": "a".repeat(5 * 1024 * 1024)});
    let error = openai_error(post(&gateway, "/v1/embeddings", &body).await, 413).await;
    assert_eq!(error["code"], "invalid_body");
    assert_eq!(fake.stats().requests, 0, "nothing reached the upstream");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_openai_errors_and_ops_routes_still_work() {
    let fake = spawn_fake(Default::default()).await;
    let gateway = gateway_for(&fake, &[]).await;
    let error = openai_error(gateway.get("/v1/nope").await, 404).await;
    assert!(error["message"].as_str().unwrap().contains("/v1/nope"));
    let error = openai_error(post(&gateway, "/v1/completions", &json!({})).await, 404).await;
    assert_eq!(error["code"], "not_found");
    openai_error(gateway.api_get("/v1/chat/completions").await, 405).await;

    assert_eq!(gateway.get("/healthz").await.status(), 200);
    assert_eq!(gateway.get("/v1/limits").await.status(), 200);
    assert_eq!(gateway.get("/nope").await.status(), 404);
}

#[tokio::test]
async fn a_spent_quota_is_429_with_retry_after() {
    let fake = spawn_fake(millrace_fake_openai::Config { rpm: 1, ..Default::default() }).await;
    let gateway = gateway_for(&fake, &[("LLM_MAX_RETRIES", "3")]).await;
    assert_eq!(post(&gateway, "/v1/chat/completions", &chat_body("first")).await.status(), 200);

    // The fake asks for ~60 s, more than the gateway waits out: it answers at once.
    let started = Instant::now();
    let response = post(&gateway, "/v1/chat/completions", &chat_body("second")).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert!(!response.headers().contains_key("x-should-retry"), "waiting helps");
    let error = openai_error(response, 429).await;
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert!(error["message"].as_str().unwrap().contains("Rate limit"), "{error}");
}

#[tokio::test]
async fn upstream_failures_become_502_504_and_503() {
    let fake = spawn_fake(millrace_fake_openai::Config { error_rate: 1.0, ..Default::default() }).await;
    // No retries: the retry counter is process-wide, and errors.rs counts its own.
    let gateway = gateway_for(&fake, &[("LLM_MAX_RETRIES", "0")]).await;
    let error = openai_error(post(&gateway, "/v1/chat/completions", &chat_body("hello")).await, 502).await;
    assert_eq!(error["type"], "server_error");
    assert!(error["message"].as_str().unwrap().contains("500"), "{error}");
    // The same before a stream starts: an ordinary error answer, not an event stream.
    let mut body = chat_body("hello");
    body["stream"] = json!(true);
    openai_error(post(&gateway, "/v1/chat/completions", &body).await, 502).await;

    let hanging =
        spawn_fake(millrace_fake_openai::Config { timeout_rate: 1.0, hang_ms: 10_000, ..Default::default() }).await;
    let gateway = gateway_for(&hanging, &[("LLM_TIMEOUT_MS", "300")]).await;
    let started = Instant::now();
    let error = openai_error(post(&gateway, "/v1/chat/completions", &chat_body("hello")).await, 504).await;
    assert_eq!(error["code"], "timeout");
    assert!(started.elapsed() < Duration::from_secs(3));

    let unconfigured = spawn_gateway(&[]).await;
    let error = openai_error(post(&unconfigured, "/v1/chat/completions", &chat_body("hello")).await, 503).await;
    assert!(error["message"].as_str().unwrap().contains("MILLRACE_LLM_BASE_URL"), "{error}");
    let models: Value = unconfigured.api_get("/v1/models").await.json().await.unwrap();
    assert_eq!(models["data"], json!([]));
}

#[tokio::test]
async fn streamed_chunks_concatenate_to_the_unstreamed_answer() {
    let fake = spawn_fake(Default::default()).await;
    let gateway = gateway_for(&fake, &[]).await;
    let text = "How do the wheels of a water mill turn the grinding stones?";
    let whole: Value = post(&gateway, "/v1/chat/completions", &chat_body(text)).await.json().await.unwrap();
    let expected = whole["choices"][0]["message"]["content"].as_str().unwrap();

    let mut body = chat_body(text);
    body["stream"] = json!(true);
    let payloads = stream(&gateway, &body).await;
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    let chunks = chunks(&payloads);
    assert!(chunks.len() > 4, "several pieces: {payloads:?}");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
    assert!(chunks.iter().all(|c| c["model"] == "fake-chat" && c.get("usage").is_none()));
    assert_eq!(streamed_content(&chunks), expected);
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "stop");

    body["stream_options"] = json!({"include_usage": true});
    let chunks = self::chunks(&stream(&gateway, &body).await);
    let (last, rest) = chunks.split_last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"], whole["usage"], "the same prompt costs the same, streamed or not");
    assert!(rest.iter().all(|c| c["usage"].is_null()));
    assert_eq!(streamed_content(rest), expected);
    assert_eq!(fake.stats().served, 3);
}

#[tokio::test]
async fn a_stream_cut_off_upstream_ends_with_an_error_event_and_no_done() {
    let fake = spawn_fake(millrace_fake_openai::Config { truncate_stream_rate: 1.0, ..Default::default() }).await;
    let gateway = gateway_for(&fake, &[]).await;
    let mut body = chat_body("a question long enough to be streamed in several pieces by the fake");
    body["stream"] = json!(true);
    let payloads = stream(&gateway, &body).await;
    assert!(!payloads.contains(&"[DONE]".to_owned()), "{payloads:?}");
    let (last, before) = payloads.split_last().unwrap();
    let error: Value = serde_json::from_str(last).unwrap();
    assert_eq!(error["error"]["type"], "server_error");
    assert!(error["error"]["message"].as_str().unwrap().contains("truncated"), "{error}");
    assert!(!streamed_content(&chunks(before)).is_empty(), "what came before the cut was relayed");
    assert_eq!(fake.stats().truncated, 1, "a stream that has begun is not retried");
}

/// An upstream the fake cannot play: it answers every chat request with a whole JSON
/// completion or an event stream that stalls after its first chunk.
async fn scripted_upstream(whole_json: bool) -> String {
    use axum::response::IntoResponse;

    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move || async move {
            if whole_json {
                let answer = json!({"model": "m-json", "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole answer"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}});
                return axum::Json(answer).into_response();
            }
            let first = r#"data: {"model":"m-sse","choices":[{"index":0,"delta":{"content":"Hel"}}]}"#;
            let frames = futures::stream::iter([Ok::<_, std::convert::Infallible>(format!("{first}\n\n"))])
                .chain(futures::stream::pending());
            ([("content-type", "text/event-stream")], axum::body::Body::from_stream(frames)).into_response()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base_url
}

#[tokio::test]
async fn an_upstream_that_ignores_stream_is_still_relayed_as_a_stream() {
    let base_url = scripted_upstream(true).await;
    let gateway = spawn_gateway(&[("LLM_BASE_URL", base_url.as_str())]).await;
    let mut body = chat_body("hi");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let payloads = stream(&gateway, &body).await;
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    let chunks = chunks(&payloads);
    assert_eq!(streamed_content(&chunks), "whole answer");
    assert_eq!(chunks.last().unwrap()["usage"]["total_tokens"], 5);
}

#[tokio::test]
async fn a_stream_that_stalls_ends_with_a_timeout_event_within_the_budget() {
    let base_url = scripted_upstream(false).await;
    let gateway = spawn_gateway(&[("LLM_BASE_URL", base_url.as_str()), ("LLM_TIMEOUT_MS", "500")]).await;
    let mut body = chat_body("hi");
    body["stream"] = json!(true);
    let started = Instant::now();
    let payloads = stream(&gateway, &body).await;
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    let (last, before) = payloads.split_last().unwrap();
    assert_eq!(streamed_content(&chunks(before)), "Hel");
    let error: Value = serde_json::from_str(last).unwrap();
    assert_eq!(error["error"]["code"], "timeout", "{error}");
}

/// `${MILLRACE_HOME:-$HOME/.cache/millrace}/venv-openai`, where `make setup` installs the SDK.
fn openai_venv() -> PathBuf {
    let home = std::env::var_os("MILLRACE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache").join("millrace"));
    home.join("venv-openai")
}

#[tokio::test]
async fn the_official_openai_python_sdk_works_against_the_gateway() {
    let venv = openai_venv();
    let python = venv.join("bin").join("python");
    assert!(
        python.exists(),
        "the openai SDK's venv is missing: {python} not found. Run `make setup`, or by hand: \
         python3 -m venv {venv} && {venv}/bin/pip install openai",
        python = python.display(),
        venv = venv.display(),
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/openai_sdk_check.py");

    let fake = spawn_fake(Default::default()).await;
    let gateway = gateway_for(&fake, &[]).await;
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(&python)
            .arg(&script)
            .arg("--base-url")
            .arg(format!("http://{}/v1", gateway.http_addr))
            .arg("--chat-model")
            .arg("fake-chat")
            .arg("--embed-model")
            .arg("fake-embed")
            .arg("--api-key")
            .arg(&gateway.llm_key)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("the SDK check did not finish within 60 s"))
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "openai_sdk_check.py failed ({}):\n{stdout}\n{stderr}", output.status);
    println!("{stdout}");
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(summary["stream_matches_chat"], true, "the fake is deterministic: {summary}");
    assert_eq!(summary["checks"]["embedding"]["dimensions"], 384);
    assert_eq!(summary["checks"]["unauthenticated"]["status"], 401, "{summary}");
}
