//! Several upstreams, quotas, `Retry-After`, budgets and `/v1/limits`, against fake upstreams.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use millrace_proto::v1::{ChatMessage, ChatRequest};
use serde_json::{Value, json};

use crate::helpers::{chat_request, gateway_for, spawn_fake, spawn_gateway};

/// An upstreams file in a fresh temporary folder; removed when the test process ends.
fn upstreams_file(text: &str) -> String {
    let path = std::env::temp_dir().join(format!("millrace-upstreams-{}.toml", uuid::Uuid::now_v7()));
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

async fn limits(gateway: &crate::helpers::TestGateway) -> Value {
    gateway.get("/v1/limits").await.json().await.unwrap()
}

#[tokio::test]
async fn a_failing_upstream_hands_its_calls_to_the_next_priority_and_opens() {
    let broken = spawn_fake(millrace_fake_openai::Config { error_rate: 1.0, ..Default::default() }).await;
    let healthy = spawn_fake(millrace_fake_openai::Config::default()).await;
    let file = upstreams_file(&format!(
        r#"
        [[upstreams]]
        name = "primary"
        base_url = "{}"
        models = ["fake-chat"]
        priority = 0

        [[upstreams]]
        name = "backup"
        base_url = "{}"
        models = ["fake-chat"]
        priority = 1
        "#,
        broken.base_url(),
        healthy.base_url()
    ));
    let mut gateway = spawn_gateway(&[
        ("LLM_UPSTREAMS_FILE", file.as_str()),
        ("LLM_CHAT_MODEL", "fake-chat"),
        ("LLM_MAX_RETRIES", "2"),
        ("LLM_RETRY_BASE_MS", "10"),
        ("LLM_BREAKER_CONSECUTIVE_FAILURES", "3"),
        ("LLM_BREAKER_OPEN_MS", "60000"),
    ])
    .await;

    for i in 0..10 {
        let answer = gateway.client.chat(chat_request(&format!("call {i}"))).await.unwrap().into_inner();
        assert!(!answer.content.is_empty());
    }
    // The primary failed three times, then its breaker kept calls away from it.
    assert_eq!(broken.stats().requests, 3, "{:?}", broken.stats());
    assert_eq!(healthy.stats().served, 10);
    let limits = limits(&gateway).await;
    assert_eq!(limits["upstreams"][0]["name"], "primary");
    assert_eq!(limits["upstreams"][0]["breaker"]["state"], "open", "{limits}");
    assert_eq!(limits["upstreams"][1]["breaker"]["state"], "closed", "{limits}");
}

#[tokio::test]
async fn an_unknown_model_is_not_found() {
    let fake = spawn_fake(millrace_fake_openai::Config::default()).await;
    let file = upstreams_file(&format!(
        "[[upstreams]]\nname = \"only\"\nbase_url = \"{}\"\nmodels = [\"fake-chat\"]\n",
        fake.base_url()
    ));
    let mut gateway = spawn_gateway(&[("LLM_UPSTREAMS_FILE", file.as_str())]).await;
    let request = ChatRequest { model: "gpt-9".into(), ..chat_request("hi") };
    let status = gateway.client.chat(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert!(status.message().contains("gpt-9"), "{}", status.message());
    assert_eq!(fake.stats().requests, 0);
}

#[tokio::test]
async fn usage_is_charged_to_the_job_and_the_budget_refuses_calls_once_spent() {
    let fake = spawn_fake(millrace_fake_openai::Config::default()).await;
    let file = upstreams_file(&format!(
        "[[upstreams]]\nname = \"paid\"\nbase_url = \"{}\"\n\n[prices.fake-chat]\ninput_per_million = 100000.0\noutput_per_million = 100000.0\n",
        fake.base_url()
    ));
    let mut gateway = spawn_gateway(&[
        ("LLM_UPSTREAMS_FILE", file.as_str()),
        ("LLM_CHAT_MODEL", "fake-chat"),
        ("MAX_DAILY_COST_USD", "1"),
    ])
    .await;

    // A job record to charge (the ingestion service creates these).
    let mut redis = gateway.redis().await;
    let job_key = format!("{}:job:{{job-1}}", gateway.key_prefix);
    redis::cmd("HSET").arg(&job_key).arg("status").arg("running").query_async::<()>(&mut redis).await.unwrap();

    // About 20 tokens at $0.10 each: the first call spends the dollar.
    let request = ChatRequest { job_id: "job-1".into(), ..chat_request("a prompt of a few words") };
    let answer = gateway.client.chat(request).await.unwrap().into_inner();
    let usage = answer.usage.unwrap();
    // The charge is bookkeeping done just after the answer.
    let mut job = std::collections::HashMap::<String, String>::new();
    for _ in 0..100 {
        job = redis::cmd("HGETALL").arg(&job_key).query_async(&mut redis).await.unwrap();
        if job.contains_key("llm_cost_usd") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(job["llm_prompt_tokens"], usage.prompt_tokens.to_string());
    assert_eq!(job["llm_completion_tokens"], usage.completion_tokens.to_string());
    let cost: f64 = job["llm_cost_usd"].parse().unwrap();
    let expected = f64::from(usage.prompt_tokens + usage.completion_tokens) * 0.1;
    assert!((cost - expected).abs() < 1e-6, "{cost} vs {expected}");

    // The day's spend is bookkept apart from the job's charge: wait for it too, or under load
    // the next call can arrive before the budget knows it is spent.
    for _ in 0..100 {
        if limits(&gateway).await["budget"]["exhausted"] == true {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let status = gateway.client.chat(chat_request("one more")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(status.message().contains("MILLRACE_MAX_DAILY_COST_USD"), "{}", status.message());
    assert_eq!(fake.stats().requests, 1, "the refused call reached the upstream");
    let budget = &limits(&gateway).await["budget"];
    assert_eq!(budget["exhausted"], true, "{budget}");
    assert!(budget["spent_usd"].as_f64().unwrap() >= 1.0, "{budget}");

    // A charge for a job that does not exist creates no record.
    let stray = format!("{}:job:{{no-such-job}}", gateway.key_prefix);
    assert!(!redis::cmd("EXISTS").arg(&stray).query_async::<bool>(&mut redis).await.unwrap());
}

/// Large and small prompts against a tokens-per-minute quota the gateway knows: calls past
/// the quota wait for it (here up to a minute) instead of drawing 429s.
#[tokio::test]
async fn a_tpm_quota_with_large_and_small_prompts_draws_no_429() {
    const TPM: u64 = 4_000;
    let fake = spawn_fake(millrace_fake_openai::Config { tpm: TPM, ..Default::default() }).await;
    let gateway = gateway_for(&fake, &[("LLM_TPM", "4000"), ("LLM_TIMEOUT_MS", "120000")]).await;
    let large = "word ".repeat(400);
    let calls = (0..16).map(|i| {
        let mut client = gateway.client.clone();
        let text = if i % 2 == 0 { format!("{i} {large}") } else { format!("{i} a short prompt") };
        async move {
            let request = ChatRequest { max_tokens: Some(40), ..chat_request(&text) };
            client.chat(request).await.map(|r| r.into_inner().usage.unwrap())
        }
    });
    let started = Instant::now();
    let answers = futures::future::join_all(calls).await;
    let used: u64 =
        answers.iter().map(|a| a.as_ref().map(|u| u64::from(u.total_tokens)).unwrap_or_else(|s| panic!("{s:?}"))).sum();
    assert!(used > TPM, "the calls used {used} tokens, not enough to pass the quota");
    let stats = fake.stats();
    assert_eq!(stats.rate_limited, 0, "{stats:?}");
    assert_eq!(stats.served, 16);
    assert!(started.elapsed() >= Duration::from_secs(50), "the quota was passed without waiting");
}

/// A tiny upstream that answers 429 with the given `Retry-After` once, then succeeds; it
/// records when each request came.
async fn retry_after_upstream(retry_after: String) -> (String, Arc<Mutex<Vec<Instant>>>) {
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let seen = arrivals.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move || {
            let seen = seen.clone();
            let retry_after = retry_after.clone();
            async move {
                let first = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(Instant::now());
                    seen.len() == 1
                };
                if first {
                    let mut headers = HeaderMap::new();
                    headers.insert("retry-after", retry_after.parse().unwrap());
                    let body = json!({"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}});
                    return (StatusCode::TOO_MANY_REQUESTS, headers, axum::Json(body)).into_response();
                }
                axum::Json(json!({
                    "model": "m",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
                }))
                .into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base_url, arrivals)
}

#[tokio::test]
async fn retry_after_is_honoured_in_seconds_and_as_a_date() {
    for (form, at_least) in [("seconds", Duration::from_secs(1)), ("date", Duration::from_millis(1500))] {
        // A date is whole seconds: three ahead leaves at least two to wait.
        let value = match form {
            "seconds" => "1".to_owned(),
            _ => httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3)),
        };
        let (base_url, arrivals) = retry_after_upstream(value).await;
        let mut gateway =
            spawn_gateway(&[("LLM_BASE_URL", base_url.as_str()), ("LLM_MAX_RETRIES", "2"), ("LLM_RETRY_BASE_MS", "1")])
                .await;
        let request = ChatRequest {
            messages: vec![ChatMessage { role: "user".into(), content: "hi".into() }],
            ..Default::default()
        };
        gateway.client.chat(request).await.unwrap();
        let arrivals = arrivals.lock().unwrap().clone();
        assert_eq!(arrivals.len(), 2, "{form}");
        let gap = arrivals[1] - arrivals[0];
        assert!(gap >= at_least, "{form}: the retry came after {gap:?}, sooner than asked");
    }
}
