use std::time::{Duration, Instant};

use millrace_llm_gateway::RETRY_AFTER_METADATA;
use millrace_proto::v1::{ChatMessage, LlmEmbedRequest};

use crate::helpers::{chat_request, gateway_for, spawn_fake, spawn_gateway};

#[tokio::test]
async fn without_an_upstream_calls_are_refused_clearly() {
    let mut gateway = spawn_gateway(&[]).await;
    let status = gateway.client.chat(chat_request("hi")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(status.message(), "no upstream configured (set MILLRACE_LLM_BASE_URL)");
    let request = LlmEmbedRequest { inputs: vec!["x".into()], ..Default::default() };
    let status = gateway.client.embed(request).await.unwrap_err();
    assert_eq!(status.message(), "no upstream configured (set MILLRACE_LLM_BASE_URL)");
}

#[tokio::test]
async fn a_spent_rpm_quota_gives_resource_exhausted_with_retry_after() {
    let fake = spawn_fake(millrace_fake_openai::Config { rpm: 1, ..Default::default() }).await;
    let mut gateway = gateway_for(&fake, &[("LLM_MAX_RETRIES", "3")]).await;
    gateway.client.chat(chat_request("first")).await.unwrap();

    // The fake asks for ~60 s, more than the gateway waits out (MILLRACE_LLM_RETRY_MAX_MS,
    // 10 s): the gateway answers at once and passes the wait on.
    let started = Instant::now();
    let status = gateway.client.chat(chat_request("second")).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(status.message().contains("Rate limit"), "{}", status.message());
    let retry_after: u64 = status.metadata().get(RETRY_AFTER_METADATA).unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");

    let stats = fake.stats();
    assert_eq!((stats.requests, stats.served, stats.rate_limited), (2, 1, 1));
}

#[tokio::test]
async fn a_retry_after_beyond_the_time_budget_is_not_waited_out() {
    // Even with a cap that would allow the ~60 s wait, a 1 s budget cannot hold it: the gateway
    // gives up at once instead of sending a second request that would surely be refused.
    let fake = spawn_fake(millrace_fake_openai::Config { rpm: 1, ..Default::default() }).await;
    let mut gateway = gateway_for(&fake, &[("LLM_RETRY_MAX_MS", "120000"), ("LLM_TIMEOUT_MS", "1000")]).await;
    gateway.client.chat(chat_request("first")).await.unwrap();
    let status = gateway.client.chat(chat_request("second")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    // No retry was sent: the refused request is the last one the fake saw.
    assert_eq!((fake.stats().requests, fake.stats().rate_limited), (2, 1));
}

#[tokio::test]
async fn server_errors_are_retried_then_reported_unavailable() {
    let fake = spawn_fake(millrace_fake_openai::Config { error_rate: 1.0, ..Default::default() }).await;
    let mut gateway = gateway_for(&fake, &[("LLM_MAX_RETRIES", "2")]).await;
    let status = gateway.client.chat(chat_request("hello")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.message().contains("500"), "{}", status.message());
    assert_eq!(fake.stats().errors, 3, "one attempt and two retries");

    let metrics = gateway.metrics().await;
    let retries = metrics
        .lines()
        .find(|l| l.starts_with("millrace_llm_gateway_retries_total{") && l.contains(r#"cause="server_error""#))
        .unwrap();
    assert!(retries.contains(r#"endpoint="chat""#) && retries.ends_with(" 2"), "{retries}");
}

#[tokio::test]
async fn a_hanging_upstream_ends_in_deadline_exceeded() {
    let fake =
        spawn_fake(millrace_fake_openai::Config { timeout_rate: 1.0, hang_ms: 10_000, ..Default::default() }).await;
    let mut gateway = gateway_for(&fake, &[("LLM_TIMEOUT_MS", "300")]).await;
    let started = Instant::now();
    let status = gateway.client.chat(chat_request("hello")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn upstream_4xx_is_invalid_argument_with_its_message_and_not_retried() {
    let fake = spawn_fake(Default::default()).await;
    let mut gateway = gateway_for(&fake, &[]).await;
    let mut request = chat_request("hello");
    request.messages.push(ChatMessage { role: "robot".into(), content: "beep".into() });
    let status = gateway.client.chat(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("Supported values are"), "{}", status.message());
    assert_eq!(fake.stats().requests, 1);
}

#[tokio::test]
async fn bad_requests_are_refused_before_the_upstream() {
    let fake = spawn_fake(Default::default()).await;
    let mut gateway = gateway_for(&fake, &[]).await;
    let mut request = chat_request("hello");
    request.response_format_json = "{not json".into();
    let status = gateway.client.chat(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("response_format_json"));

    let mut request = chat_request("hello");
    request.messages.clear();
    assert_eq!(gateway.client.chat(request).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    assert_eq!(fake.stats().requests, 0);
}

#[tokio::test]
async fn an_unreachable_upstream_is_unavailable() {
    // A port that was free a moment ago: connection refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base_url = format!("http://127.0.0.1:{port}/v1");
    let mut gateway = spawn_gateway(&[
        ("LLM_BASE_URL", &base_url),
        ("LLM_MAX_RETRIES", "1"),
        ("LLM_RETRY_BASE_MS", "5"),
        ("METRICS_INTERVAL_MS", "50"),
        ("LLM_PROBE_INTERVAL_MS", "100"),
    ])
    .await;
    let status = gateway.client.chat(chat_request("hello")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.message().contains("unreachable"), "{}", status.message());
    // The upstream's outage is not the gateway's: it stays ready (in Kubernetes an unready
    // gateway would leave its Service), and says what it found in /v1/limits and metrics.
    assert_eq!(gateway.get("/readyz").await.status(), 200);
    let probe = gateway.probe().await;
    assert_eq!(probe["reachable"], false, "{probe}");
    assert!(probe["error"].as_str().unwrap().contains("/models"), "{probe}");
    assert!(gateway.metrics().await.contains("millrace_llm_gateway_upstream_up{upstream=\"default\"} 0"));
}
