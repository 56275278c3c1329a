use std::time::Duration;

use millrace_proto::v1::StatsRequest;
use millrace_proto::v1::admin_client::AdminClient;
use serde_json::Value;

use crate::helpers::{chat_request, gateway_for, spawn_fake, spawn_gateway};

#[tokio::test]
async fn ready_without_an_upstream_says_so() {
    let gateway = spawn_gateway(&[]).await;
    let response = gateway.get("/readyz").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["checks"]["upstream: not configured"]["ok"], true, "{body}");
    assert_eq!(gateway.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn ready_when_the_upstream_lists_its_models() {
    let fake = spawn_fake(Default::default()).await;
    let gateway = gateway_for(&fake, &[]).await;
    let response = gateway.get("/readyz").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["checks"]["upstream"]["ok"], true, "{body}");
    assert_eq!(fake.stats().by_endpoint["models"].served, 1);
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
