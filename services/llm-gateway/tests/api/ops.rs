use std::time::Duration;

use millrace_proto::v1::StatsRequest;
use millrace_proto::v1::admin_client::AdminClient;
use serde_json::Value;

use crate::helpers::{chat_request, gateway_for, spawn_fake, spawn_gateway};

#[tokio::test]
async fn ready_without_an_upstream() {
    let gateway = spawn_gateway(&[]).await;
    let response = gateway.get("/readyz").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["checks"]["redis"]["ok"], true, "{body}");
    assert_eq!(gateway.get("/healthz").await.status(), 200);
}

/// The API is for `llm` keys, the scrape for monitoring: `/metrics` is served on its own port
/// only, so each can be opened to different callers.
#[tokio::test]
async fn metrics_are_served_apart_from_the_api() {
    let gateway = spawn_gateway(&[]).await;
    assert_ne!(gateway.metrics_addr.port(), gateway.http_addr.port());
    assert!(gateway.metrics().await.contains("millrace_llm_gateway_"), "the metrics port serves the metrics");
    assert_eq!(gateway.get("/metrics").await.status(), 404, "the API port does not");
}

#[tokio::test]
async fn not_ready_without_redis() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let redis_url = format!("redis://127.0.0.1:{closed}");
    let gateway = spawn_gateway(&[("REDIS_URL", &redis_url)]).await;
    let response = gateway.get("/readyz").await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["checks"]["redis"]["ok"], false, "{body}");
}

/// An OpenAI-compatible upstream that serves chat completions and nothing else: `GET /models`
/// is a 404, as on fakellm, Anthropic's compatibility layer and many local servers.
async fn chat_only_upstream() -> String {
    async fn completion() -> axum::Json<Value> {
        axum::Json(serde_json::json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "hello back"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        }))
    }
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(completion));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v1")
}

#[tokio::test]
async fn an_upstream_without_a_models_route_is_served_and_the_gateway_is_ready() {
    let base_url = chat_only_upstream().await;
    let mut gateway =
        spawn_gateway(&[("LLM_BASE_URL", &base_url), ("METRICS_INTERVAL_MS", "50"), ("LLM_PROBE_INTERVAL_MS", "100")])
            .await;
    let response = gateway.get("/readyz").await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let answer = gateway.client.chat(chat_request("hello")).await.unwrap().into_inner();
    assert_eq!(answer.content, "hello back");
    // It answered (404): reachable.
    assert_eq!(gateway.probe().await["reachable"], true);
    assert!(gateway.metrics().await.contains("millrace_llm_gateway_upstream_up{upstream=\"default\"} 1"));
}

#[tokio::test]
async fn an_upstream_that_lists_its_models_is_probed() {
    let fake = spawn_fake(Default::default()).await;
    let gateway = gateway_for(&fake, &[("METRICS_INTERVAL_MS", "50"), ("LLM_PROBE_INTERVAL_MS", "100")]).await;
    assert_eq!(gateway.probe().await["reachable"], true);
    assert!(fake.stats().by_endpoint["models"].served >= 1);
}

#[tokio::test]
async fn metrics_count_upstream_requests_and_tokens() {
    let fake = spawn_fake(Default::default()).await;
    let mut gateway = gateway_for(&fake, &[]).await;
    gateway.client.chat(chat_request("count my tokens")).await.unwrap();
    let metrics = gateway.metrics().await;
    let has = |name: &str, labels: &[&str]| {
        metrics.lines().any(|line| line.starts_with(name) && labels.iter().all(|label| line.contains(label)))
    };
    assert!(
        has("millrace_llm_gateway_upstream_requests_total", &[r#"endpoint="chat""#, r#"status="200""#]),
        "{metrics}"
    );
    assert!(has("millrace_llm_gateway_tokens_total", &[r#"model="gpt-4o-mini""#, r#"kind="prompt""#]), "{metrics}");
    assert!(has("millrace_llm_gateway_tokens_total", &[r#"kind="completion""#]), "{metrics}");
}

#[tokio::test]
async fn admin_stats_name_the_service() {
    let gateway = spawn_gateway(&[]).await;
    let mut admin = AdminClient::connect(format!("http://{}", gateway.grpc_addr)).await.unwrap();
    let stats = admin.stats(StatsRequest {}).await.unwrap().into_inner();
    assert_eq!(stats.service, "llm-gateway");
    assert_eq!((stats.concurrency_limit, stats.concurrency_in_use), (0, 0));
    assert!(stats.queues.is_empty() && stats.breakers.is_empty());
}

#[tokio::test]
async fn shutdown_waits_for_calls_in_flight() {
    let fake = spawn_fake(millrace_fake_openai::Config { latency_ms: 400, ..Default::default() }).await;
    let mut gateway = gateway_for(&fake, &[]).await;
    let mut client = gateway.client.clone();
    let call = tokio::spawn(async move { client.chat(chat_request("slow")).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    gateway.shutdown.cancel();
    // The call in flight still gets its answer, and then the gateway stops.
    call.await.unwrap().unwrap();
    let task = gateway.task.take().unwrap();
    tokio::time::timeout(Duration::from_secs(3), task).await.unwrap().unwrap().unwrap();
}
