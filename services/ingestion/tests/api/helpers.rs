//! Spawns the ingestion service in-process on port 0 against a private redis-server; the
//! other services point at closed ports (they are not part of these tests).

use std::net::SocketAddr;

use millrace_common::Settings;
use millrace_ingestion::{Application, Config};
use millrace_testkit::RedisServer;
use reqwest::{Response, StatusCode};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub const PREFIX: &str = "itest";

pub struct TestApp {
    pub address: String,
    pub grpc_addr: SocketAddr,
    pub client: reqwest::Client,
    pub redis: RedisServer,
    shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// `overrides` are `MILLRACE_*` settings applied over the test defaults.
pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    let redis = RedisServer::start().expect("redis-server starts");
    let closed = format!("http://127.0.0.1:{}", millrace_testkit::free_port());
    let mut pairs: Vec<(String, String)> = vec![
        ("HTTP_ADDR".into(), "127.0.0.1:0".into()),
        ("GRPC_ADDR".into(), "127.0.0.1:0".into()),
        ("REDIS_URL".into(), redis.url.clone()),
        ("KEY_PREFIX".into(), PREFIX.into()),
        ("STORAGE_URL".into(), closed.clone()),
        ("EMBEDDINGS_URL".into(), closed.clone()),
        ("CHUNKING_URL".into(), closed.clone()),
        ("METADATA_URL".into(), closed.clone()),
        ("LLM_GATEWAY_URL".into(), closed),
        ("DOWNSTREAM_TIMEOUT_MS".into(), "2000".into()),
        ("SHUTDOWN_DEADLINE_MS".into(), "1000".into()),
    ];
    pairs.extend(overrides.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let config = Config::from_settings(&Settings::from_pairs(pairs)).expect("valid config");
    let app = Application::build(config).await.expect("app builds");
    let address = format!("http://{}", app.http_addr());
    let grpc_addr = app.grpc_addr();
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    TestApp { address, grpc_addr, client: reqwest::Client::new(), redis, shutdown }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.expect("request sent")
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.client.delete(self.url(path)).send().await.expect("request sent")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client.post(self.url(path)).json(body).send().await.expect("request sent")
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> Response {
        self.client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    /// Submits a valid document and returns the 202 body.
    pub async fn ingest(&self, content: &str) -> Value {
        let response = self.post_json("/v1/ingest", &serde_json::json!({ "content": content })).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        response.json().await.expect("json body")
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis.url.as_str())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connection")
    }

    /// Job ids in the chunking stream, in order.
    pub async fn chunking_entries(&self) -> Vec<String> {
        let mut conn = self.redis().await;
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(format!("{PREFIX}:stream:chunking"))
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .expect("xrange");
        reply.ids.iter().filter_map(|entry| entry.get::<String>("job_id")).collect()
    }
}

/// Asserts the status and the `{"error":{"code","message"}}` shape; returns (code, message).
pub async fn assert_error(response: Response, status: StatusCode) -> (String, String) {
    assert_eq!(response.status(), status, "unexpected status");
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert!(content_type.starts_with("application/json"), "content-type {content_type:?}");
    let body: Value = response.json().await.expect("json error body");
    let error = body.get("error").and_then(Value::as_object).unwrap_or_else(|| panic!("no error object in {body}"));
    assert_eq!(error.len(), 2, "error has exactly code and message: {body}");
    let code = error["code"].as_str().expect("code is a string").to_owned();
    let message = error["message"].as_str().expect("message is a string").to_owned();
    assert!(!message.is_empty());
    (code, message)
}

/// The value of one series in a Prometheus text exposition (0 if absent).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines().find_map(|line| line.strip_prefix(series).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
}
