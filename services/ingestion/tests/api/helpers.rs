//! Spawns the ingestion service in-process on port 0 against a private redis-server; the
//! other services point at closed ports (they are not part of these tests). Submitted URLs are
//! checked with a table resolver ([`resolver`]): no DNS query leaves the process. Every client
//! sends the bootstrap admin key ([`ADMIN_KEY`]) unless a test asks for another; the key store
//! points at a closed port unless a test starts PostgreSQL.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use millrace_common::Settings;
use millrace_fetch::StaticResolver;
use millrace_ingestion::{Application, Config};
use millrace_testkit::{Postgres, RedisServer};
use reqwest::{Response, StatusCode};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub const PREFIX: &str = "itest";
/// The bootstrap admin key of every test app (`MILLRACE_ADMIN_KEY`).
pub const ADMIN_KEY: &str = "itest-admin-key-0123456789";

/// A gRPC client's interceptor that sends `authorization: Bearer <key>` (or nothing).
#[derive(Clone)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    pub fn new(key: Option<&str>) -> Self {
        Self(key.map(|key| format!("Bearer {key}").parse().expect("an ASCII key")))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A gRPC channel whose calls carry a key.
pub type Authed = tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>;

/// A reqwest client that sends `Authorization: Bearer <key>` on every request (or nothing).
pub fn client_with_key(key: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = key {
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {key}").parse().expect("an ASCII key"));
    }
    reqwest::Client::builder().default_headers(headers).build().expect("a client")
}

pub struct TestApp {
    pub address: String,
    pub grpc_addr: SocketAddr,
    pub client: reqwest::Client,
    pub redis: Arc<RedisServer>,
    /// The key store's server, when the test started one ([`spawn_app_with_keys`]).
    pub postgres: Option<Arc<Postgres>>,
    pub database_url: Option<String>,
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
    spawn_app_on(Arc::new(redis), None, overrides).await
}

/// An app with a key store: PostgreSQL (one server per test process, a database per app).
pub async fn spawn_app_with_keys(overrides: &[(&str, &str)]) -> TestApp {
    let postgres = Postgres::shared().expect("postgres starts");
    let url = postgres.create_unique_database("keys").expect("a database");
    let redis = RedisServer::start().expect("redis-server starts");
    let mut app = spawn_app_on(Arc::new(redis), Some(url), overrides).await;
    app.postgres = Some(postgres);
    app
}

/// Another replica of `app`: the same Redis and key store, its own ports (and cache).
pub async fn spawn_replica(app: &TestApp, overrides: &[(&str, &str)]) -> TestApp {
    let mut replica = spawn_app_on(app.redis.clone(), app.database_url.clone(), overrides).await;
    replica.postgres = app.postgres.clone();
    replica
}

async fn spawn_app_on(redis: Arc<RedisServer>, database_url: Option<String>, overrides: &[(&str, &str)]) -> TestApp {
    let database = database_url
        .clone()
        .unwrap_or_else(|| format!("postgres://millrace@127.0.0.1:{}/millrace", millrace_testkit::free_port()));
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
        ("ADMIN_KEY".into(), ADMIN_KEY.into()),
        ("DATABASE_URL".into(), database),
    ];
    pairs.extend(overrides.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let config = Config::from_settings(&Settings::from_pairs(pairs)).expect("valid config");
    let app = Application::build_with_resolver(config, Arc::new(resolver())).await.expect("app builds");
    let address = format!("http://{}", app.http_addr());
    let grpc_addr = app.grpc_addr();
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    TestApp {
        address,
        grpc_addr,
        client: client_with_key(Some(ADMIN_KEY)),
        redis,
        postgres: None,
        database_url,
        shutdown,
    }
}

impl TestApp {
    /// A gRPC channel to the app whose calls carry `key` (or no key).
    pub async fn grpc_channel(&self, key: Option<&str>) -> Authed {
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", self.grpc_addr))
            .expect("a URL")
            .connect()
            .await
            .expect("gRPC connects");
        Authed::new(channel, Bearer::new(key))
    }

    /// The Ingestion gRPC service, called with the admin key.
    pub async fn ingestion_grpc(&self) -> millrace_proto::v1::ingestion_client::IngestionClient<Authed> {
        millrace_proto::v1::ingestion_client::IngestionClient::new(self.grpc_channel(Some(ADMIN_KEY)).await)
    }

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

    /// Creates a key of `tenant` with `scopes` through the API; returns (id, secret).
    pub async fn create_key(&self, tenant: &str, scopes: &[&str]) -> (String, String) {
        let body = serde_json::json!({ "tenant": tenant, "name": format!("test {scopes:?}"), "scopes": scopes });
        let response = self.post_json("/v1/keys", &body).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let key: Value = response.json().await.expect("json body");
        (key["id"].as_str().expect("an id").to_owned(), key["key"].as_str().expect("a secret").to_owned())
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
