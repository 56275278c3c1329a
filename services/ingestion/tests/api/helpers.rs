//! Spawns the ingestion service in-process on port 0 against a private redis-server; the
//! other services point at closed ports (they are not part of these tests). Submitted URLs are
//! checked with a table resolver ([`resolver`]): no DNS query leaves the process.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use millrace_common::Settings;
use millrace_fetch::StaticResolver;
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

/// Names the URL checks resolve: a public one, and public-looking ones that point inside.
pub fn resolver() -> StaticResolver {
    StaticResolver::new()
        .with("docs.example.com", [IpAddr::from([93, 184, 216, 34])])
        .with("intranet.example.com", [IpAddr::from([10, 0, 0, 5])])
        .with("sneaky.example.com", ["::ffff:169.254.169.254".parse().expect("an address")])
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
    let app = Application::build_with_resolver(config, Arc::new(resolver())).await.expect("app builds");
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

    /// Posts a `multipart/form-data` body built from `parts`.
    pub async fn post_multipart(&self, path: &str, parts: &[Part<'_>]) -> Response {
        let (content_type, body) = multipart_body(parts);
        self.client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    /// The job's record as the API shows it.
    pub async fn job(&self, job_id: &str) -> Value {
        let response = self.get(&format!("/v1/jobs/{job_id}")).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("json body")
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

/// One part of a multipart form.
pub enum Part<'a> {
    Text(&'a str, &'a str),
    File { name: &'a str, file_name: Option<&'a str>, content_type: Option<&'a str>, bytes: &'a [u8] },
}

impl<'a> Part<'a> {
    /// A `file` part with a name and a type.
    pub fn file(file_name: &'a str, content_type: &'a str, bytes: &'a [u8]) -> Self {
        Part::File { name: "file", file_name: Some(file_name), content_type: Some(content_type), bytes }
    }
}

/// The content type (with its boundary) and body of a form, written by hand so that tests can
/// send what a client library would refuse to build.
pub fn multipart_body(parts: &[Part<'_>]) -> (String, Vec<u8>) {
    let boundary = "millrace-test-boundary-b0a7c1";
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match part {
            Part::Text(name, value) => {
                body.extend_from_slice(format!("content-disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes());
                body.extend_from_slice(value.as_bytes());
            }
            Part::File { name, file_name, content_type, bytes } => {
                let mut disposition = format!("content-disposition: form-data; name=\"{name}\"");
                if let Some(file_name) = file_name {
                    disposition.push_str(&format!("; filename=\"{file_name}\""));
                }
                body.extend_from_slice(format!("{disposition}\r\n").as_bytes());
                if let Some(content_type) = content_type {
                    body.extend_from_slice(format!("content-type: {content_type}\r\n").as_bytes());
                }
                body.extend_from_slice(b"\r\n");
                body.extend_from_slice(bytes);
            }
        }
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}
