//! The end-to-end harness: a whole millrace stack as real processes — its own redis-server and
//! PostgreSQL on free ports, the six service binaries, and optionally the fake upstream — with
//! short timeouts so that reclaims and dead letters happen within a test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod prometheus;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use millrace_testkit::tls::{CertFiles, ServerTls, TestCa};
use millrace_testkit::{ChildProcess, Postgres, RedisServer, cargo_bin, free_port, wait_for_http};
use serde_json::{Value, json};

/// The bootstrap admin key (`MILLRACE_ADMIN_KEY`) of every stack: ingestion and the gateway
/// accept it, [`Stack::http`] and [`Stack::ingestion_grpc`] send it.
pub const ADMIN_KEY: &str = "e2e-admin-key-7f3c9a1d2b";

/// A client builder that sends `Authorization: Bearer <key>` on every request.
pub fn with_key(builder: reqwest::ClientBuilder, key: &str) -> reqwest::ClientBuilder {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {key}").parse().unwrap());
    builder.default_headers(headers)
}

/// A gRPC client's interceptor that sends `authorization: Bearer <key>`.
#[derive(Clone)]
pub struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Bearer {
    pub fn new(key: &str) -> Self {
        Self(format!("Bearer {key}").parse().unwrap())
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A gRPC channel whose calls carry a key.
pub type Authed = tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>;

pub const SERVICES: [&str; 6] = ["llm-gateway", "storage", "embeddings", "metadata", "chunking", "ingestion"];

/// How to start a stack.
#[derive(Debug, Clone, Default)]
pub struct StackOptions {
    /// Run the fake upstream with these flags and point the gateway (and so metadata and
    /// embeddings) at it.
    pub upstream: Option<Vec<String>>,
    /// Extra environment for every service.
    pub env: Vec<(String, String)>,
    /// Extra environment for one service.
    pub service_env: Vec<(&'static str, String, String)>,
    /// Services not to start.
    pub skip: Vec<&'static str>,
    /// Redis with AOF persistence (every write fsynced, unless `appendfsync` says otherwise).
    pub durable_redis: bool,
    /// With `durable_redis`, the AOF's `appendfsync` policy instead of `always` (production's is
    /// `everysec`: a Redis crash may lose up to a second of writes, a killed process none).
    pub appendfsync: Option<&'static str>,
    /// Replicas of a service beyond the first, as more processes of it. Extra metadata and
    /// embeddings replicas are spread over the gateway replicas.
    pub replicas: Vec<(&'static str, usize)>,
    /// TLS on every connection ([`StackOptions::tls`]).
    pub tls: bool,
}

impl StackOptions {
    /// A slow upstream (300 ms a call), chunks of 45 tokens in batches of 2 and one metadata call
    /// at a time: a long document's job runs for seconds, long enough to cancel or delete it
    /// part-way.
    pub fn slow_pipeline() -> Self {
        Self::default()
            .upstream(&["--latency-ms", "300", "--embedding-dim", "384"])
            .service_env("chunking", "MILLRACE_CHUNK_SIZE", 45)
            .service_env("chunking", "MILLRACE_BATCH_SIZE", 2)
            .service_env("metadata", "MILLRACE_CONCURRENCY", 1)
    }

    pub fn env(mut self, key: &str, value: impl ToString) -> Self {
        self.env.push((key.to_owned(), value.to_string()));
        self
    }

    pub fn service_env(mut self, service: &'static str, key: &str, value: impl ToString) -> Self {
        self.service_env.push((service, key.to_owned(), value.to_string()));
        self
    }

    pub fn upstream(mut self, flags: &[&str]) -> Self {
        self.upstream = Some(flags.iter().map(|f| (*f).to_owned()).collect());
        self
    }

    pub fn durable_redis(mut self) -> Self {
        self.durable_redis = true;
        self
    }

    /// Redis with AOF persistence and this `appendfsync` policy (`always`, `everysec`, `no`).
    pub fn durable_redis_with(mut self, appendfsync: &'static str) -> Self {
        self.durable_redis = true;
        self.appendfsync = Some(appendfsync);
        self
    }

    /// Runs `count` processes of `service` in all (at least 1).
    pub fn replicas(mut self, service: &'static str, count: usize) -> Self {
        self.replicas.push((service, count));
        self
    }

    pub fn skip(mut self, service: &'static str) -> Self {
        self.skip.push(service);
        self
    }

    /// TLS on every connection: Redis speaks only TLS and requires client certificates,
    /// services reach each other over `https://` with mutual TLS (each has its own certificate;
    /// all but ingestion require one of their callers), and PostgreSQL runs with `ssl=on`
    /// ([`Postgres::tls_bin_dir`]'s build) and the services connect with `sslmode=verify-full`.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }
}

/// The certificates of a stack on TLS, all signed by one test CA.
pub struct StackTls {
    pub ca: TestCa,
    redis_server: ServerTls,
    postgres_server: ServerTls,
    /// The services' client certificate for Redis.
    pub redis_client: CertFiles,
    /// Each service's certificate: its gRPC server's, and its client certificate to the others.
    pub services: BTreeMap<&'static str, CertFiles>,
}

impl StackTls {
    fn new() -> anyhow::Result<Self> {
        let ca = TestCa::new("millrace-e2e")?;
        let services = SERVICES
            .iter()
            .map(|name| Ok((*name, ca.issue(name, &["127.0.0.1", name])?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            redis_server: ca.server("redis", true)?,
            postgres_server: ca.server("postgres", false)?,
            redis_client: ca.issue("redis-client", &["millrace"])?,
            services,
            ca,
        })
    }

    /// The settings every service gets: Redis' CA and client certificate, the services' CA,
    /// and mutual TLS on every gRPC server (ingestion overrides it).
    fn env(&self) -> Vec<(String, String)> {
        let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
        vec![
            ("MILLRACE_REDIS_CA_FILE".into(), path(self.ca.ca_file())),
            ("MILLRACE_REDIS_CLIENT_CERT_FILE".into(), path(&self.redis_client.cert)),
            ("MILLRACE_REDIS_CLIENT_KEY_FILE".into(), path(&self.redis_client.key)),
            ("MILLRACE_GRPC_TLS_CA_FILE".into(), path(self.ca.ca_file())),
            ("MILLRACE_GRPC_TLS_CLIENT_AUTH".into(), "require".into()),
            ("MILLRACE_DATABASE_CA_FILE".into(), path(self.ca.ca_file())),
        ]
    }

    /// A service's own settings: its certificate; ingestion's gRPC is public (key-authenticated).
    fn service_env(&self, name: &str) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if let Some(files) = self.services.get(name) {
            env.push(("MILLRACE_GRPC_TLS_CERT_FILE".into(), files.cert.to_string_lossy().into_owned()));
            env.push(("MILLRACE_GRPC_TLS_KEY_FILE".into(), files.key.to_string_lossy().into_owned()));
        }
        if name == "ingestion" {
            env.push(("MILLRACE_GRPC_TLS_CLIENT_AUTH".into(), "none".into()));
        }
        env
    }

    /// A Redis client with the services' CA and client certificate.
    fn redis_client(&self, url: &str) -> redis::RedisResult<redis::Client> {
        let read = |p: &std::path::Path| std::fs::read(p).map_err(redis::RedisError::from);
        redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: Some(redis::ClientTlsConfig {
                    client_cert: read(&self.redis_client.cert)?,
                    client_key: read(&self.redis_client.key)?,
                }),
                root_cert: Some(read(self.ca.ca_file())?),
            },
        )
    }
}

pub struct Service {
    pub process: ChildProcess,
    pub http_port: u16,
    pub grpc_port: u16,
    /// Where `/metrics` is served: the http port, but for the gateway (a port of its own).
    pub metrics_port: u16,
}

pub struct Stack {
    pub redis: RedisServer,
    pub postgres: Postgres,
    pub database_url: String,
    pub fake: Option<(ChildProcess, u16)>,
    pub services: BTreeMap<&'static str, Service>,
    /// Replicas beyond the first (`StackOptions::replicas`), named `metadata-2`, `metadata-3`, …
    pub replicas: Vec<(String, Service)>,
    pub http: reqwest::Client,
    pub key_prefix: String,
    /// The certificates, when the stack runs on TLS.
    pub tls: Option<StackTls>,
    /// The settings every service got (a test starts another process with them).
    pub env: Vec<(String, String)>,
}

impl Stack {
    pub async fn start(options: StackOptions) -> anyhow::Result<Self> {
        let tls = if options.tls { Some(StackTls::new()?) } else { None };
        let durable: &[&str] = if options.durable_redis {
            &["--appendonly", "yes", "--appendfsync", options.appendfsync.unwrap_or("always")]
        } else {
            &[]
        };
        let redis = match &tls {
            Some(tls) => RedisServer::start_tls(&tls.redis_server, durable)?,
            None => RedisServer::start_with_args(durable)?,
        };
        let postgres = match &tls {
            Some(tls) => Postgres::builder().bin_dir(Postgres::tls_bin_dir()?).tls(&tls.postgres_server).start()?,
            None => Postgres::start()?,
        };
        let database_url = postgres.create_database("millrace")?;
        // The services check the server's certificate and name; the harness' own connections
        // (`Stack::postgres`) stay cleartext, which the server's pg_hba lets in.
        let service_database_url = match &tls {
            Some(_) => format!("{database_url}?sslmode=verify-full"),
            None => database_url.clone(),
        };
        let key_prefix = "e2e".to_owned();

        let fake = match &options.upstream {
            Some(flags) => {
                let port = free_port();
                let process = ChildProcess::builder(cargo_bin("millrace-fake-openai")?)
                    .name("fake-openai")
                    .arg("--addr")
                    .arg(format!("127.0.0.1:{port}"))
                    .args(flags)
                    .spawn()?;
                wait_for_http(&format!("http://127.0.0.1:{port}/v1/models"), Duration::from_secs(20)).await?;
                Some((process, port))
            }
            None => None,
        };

        let ports: BTreeMap<&str, (u16, u16)> = SERVICES.iter().map(|s| (*s, (free_port(), free_port()))).collect();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let grpc_url = |name: &str| format!("{scheme}://127.0.0.1:{}", ports[name].1);
        let mut common: Vec<(String, String)> = vec![
            ("MILLRACE_REDIS_URL".into(), redis.url.clone()),
            ("MILLRACE_DATABASE_URL".into(), service_database_url),
            ("MILLRACE_ADMIN_KEY".into(), ADMIN_KEY.into()),
            ("MILLRACE_KEY_PREFIX".into(), key_prefix.clone()),
            ("MILLRACE_STORAGE_URL".into(), grpc_url("storage")),
            ("MILLRACE_EMBEDDINGS_URL".into(), grpc_url("embeddings")),
            ("MILLRACE_LLM_GATEWAY_URL".into(), grpc_url("llm-gateway")),
            ("MILLRACE_CHUNKING_URL".into(), grpc_url("chunking")),
            ("MILLRACE_METADATA_URL".into(), grpc_url("metadata")),
            ("MILLRACE_BLOCK_MS".into(), "500".into()),
            ("MILLRACE_VISIBILITY_TIMEOUT_MS".into(), "2000".into()),
            ("MILLRACE_RECLAIM_INTERVAL_MS".into(), "300".into()),
            ("MILLRACE_MAX_DELIVERIES".into(), "3".into()),
            ("MILLRACE_TRIM_INTERVAL_MS".into(), "1000".into()),
            ("MILLRACE_SHUTDOWN_DEADLINE_MS".into(), "3000".into()),
            ("MILLRACE_LLM_MAX_RETRIES".into(), "0".into()),
            ("RUST_LOG".into(), "info".into()),
            // A service that fails to start prints its error, not a backtrace that would fill
            // the log tail a failed test shows.
            ("RUST_BACKTRACE".into(), "0".into()),
        ];
        if let Some((_, port)) = &fake {
            common.push(("MILLRACE_LLM_BASE_URL".into(), format!("http://127.0.0.1:{port}/v1")));
            common.push(("MILLRACE_LLM_CHAT_MODEL".into(), "fake-chat".into()));
            common.push(("MILLRACE_LLM_EMBED_MODEL".into(), "fake-embed".into()));
        } else {
            // Most tests are about delivery, not vectors: the hashing embedder keeps them fast.
            // A test that wants the local model sets MILLRACE_EMBEDDINGS_PROVIDER=local.
            common.push(("MILLRACE_EMBEDDINGS_PROVIDER".into(), "hashing".into()));
        }
        if let Some(tls) = &tls {
            common.extend(tls.env());
        }
        common.extend(options.env.iter().cloned());

        let spawn = |name: &str, replica: usize, ports: (u16, u16), gateway_grpc: Option<u16>| {
            let consumer = if replica == 1 { format!("{name}-e2e") } else { format!("{name}-e2e-{replica}") };
            let label = if replica == 1 { name.to_owned() } else { format!("{name}-{replica}") };
            let mut builder = ChildProcess::builder(cargo_bin(&format!("millrace-{name}"))?)
                .name(&label)
                .envs(common.iter().cloned())
                .env("MILLRACE_HTTP_ADDR", format!("127.0.0.1:{}", ports.0))
                .env("MILLRACE_GRPC_ADDR", format!("127.0.0.1:{}", ports.1))
                .env("MILLRACE_CONSUMER_NAME", consumer);
            if let Some(tls) = &tls {
                builder = builder.envs(tls.service_env(name));
            }
            if let Some(port) = gateway_grpc {
                builder = builder.env("MILLRACE_LLM_GATEWAY_URL", format!("{scheme}://127.0.0.1:{port}"));
            }
            // The gateway serves /metrics apart from its API, on a port of its own.
            let metrics_port = if name == "llm-gateway" { free_port() } else { ports.0 };
            if metrics_port != ports.0 {
                builder = builder.env("MILLRACE_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"));
            }
            for (service, key, value) in &options.service_env {
                if *service == name {
                    builder = builder.env(key, value);
                }
            }
            let service = Service { process: builder.spawn()?, http_port: ports.0, grpc_port: ports.1, metrics_port };
            anyhow::Ok((label, service))
        };
        let count = |name: &str| options.replicas.iter().find(|(s, _)| *s == name).map_or(1, |(_, n)| (*n).max(1));
        let mut services = BTreeMap::new();
        let mut replicas = Vec::new();
        // Gateway replicas first, so the stages' replicas can be spread over them.
        let mut gateway_ports = vec![ports["llm-gateway"].1];
        for name in SERVICES {
            if options.skip.contains(&name) {
                continue;
            }
            let (_, service) = spawn(name, 1, ports[name], None)?;
            services.insert(name, service);
            for replica in 2..=count(name) {
                let extra_ports = (free_port(), free_port());
                let gateway = match name {
                    "metadata" | "embeddings" => Some(gateway_ports[(replica - 1) % gateway_ports.len()]),
                    _ => None,
                };
                if name == "llm-gateway" {
                    gateway_ports.push(extra_ports.1);
                }
                replicas.push(spawn(name, replica, extra_ports, gateway)?);
            }
        }
        let stack = Self {
            redis,
            postgres,
            database_url,
            fake,
            services,
            replicas,
            http: with_key(reqwest::Client::builder(), ADMIN_KEY).timeout(Duration::from_secs(30)).build()?,
            key_prefix,
            tls,
            env: common,
        };
        let all = stack.services.iter().map(|(name, service)| ((*name).to_owned(), service));
        for (name, service) in all.chain(stack.replicas.iter().map(|(name, service)| (name.clone(), service))) {
            wait_for_http(&format!("http://127.0.0.1:{}/healthz", service.http_port), Duration::from_secs(30))
                .await
                .with_context(|| format!("{name} did not start:\n{}", service.process.log_tail(40)))?;
        }
        Ok(stack)
    }

    pub fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.services["ingestion"].http_port)
    }

    /// A gRPC channel to a service whose calls carry `key`.
    pub async fn grpc_channel(&self, service: &str, key: &str) -> Authed {
        let port = self.services[service].grpc_port;
        let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Authed::new(channel, Bearer::new(key))
    }

    /// Ingestion's gRPC API, called with the admin key.
    pub async fn ingestion_grpc(&self) -> millrace_proto::v1::ingestion_client::IngestionClient<Authed> {
        millrace_proto::v1::ingestion_client::IngestionClient::new(self.grpc_channel("ingestion", ADMIN_KEY).await)
    }

    pub fn service(&mut self, name: &str) -> &mut Service {
        self.services.get_mut(name).unwrap_or_else(|| panic!("service {name} is not running"))
    }

    /// Waits until a restarted service answers again.
    pub async fn wait_healthy(&self, name: &str) -> anyhow::Result<()> {
        let port = self.services[name].http_port;
        wait_for_http(&format!("http://127.0.0.1:{port}/healthz"), Duration::from_secs(30)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value, reqwest::header::HeaderMap) {
        let response = self.http.post(format!("{}{path}", self.api())).json(body).send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)), headers)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(format!("{}{path}", self.api())).send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let response = self.http.delete(format!("{}{path}", self.api())).send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Submits a text document and returns its job id.
    pub async fn ingest(&self, document_id: &str, content: &str) -> String {
        let (status, body, _) = self
            .post("/v1/ingest", &json!({"document_id": document_id, "content": content, "content_type": "text/plain"}))
            .await;
        assert_eq!(status, 202, "ingest refused: {body}");
        body["job_id"].as_str().unwrap().to_owned()
    }

    pub async fn job(&self, job_id: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/jobs/{job_id}")).await;
        assert_eq!(status, 200, "job {job_id}: {body}");
        body
    }

    /// Waits until the job is completed, failed or cancelled, and returns it.
    pub async fn wait_for_job(&self, job_id: &str, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let job = self.job(job_id).await;
            if matches!(job["status"].as_str(), Some("completed" | "failed" | "cancelled")) {
                return Ok(job);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("job {job_id} still {} after {timeout:?}: {job}\n{}", job["status"], self.logs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn search(&self, query: &str, top_k: u32) -> Vec<Value> {
        let (status, body, _) = self.post("/v1/search", &json!({"query": query, "top_k": top_k})).await;
        assert_eq!(status, 200, "search failed: {body}");
        body["results"].as_array().unwrap().clone()
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        let client = match &self.tls {
            Some(tls) => tls.redis_client(&self.redis.url),
            None => redis::Client::open(self.redis.url.as_str()),
        };
        client.unwrap().get_multiplexed_async_connection().await.unwrap()
    }

    pub async fn postgres(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.database_url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    }

    /// Rows of a document in the chunks table, every version included.
    pub async fn stored_chunks(&self, document_id: &str) -> Vec<(i64, i32)> {
        let client = self.postgres().await;
        client
            .query("SELECT version, chunk_index FROM chunks WHERE document_id = $1 ORDER BY 1, 2", &[&document_id])
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect()
    }

    pub async fn fake_stats(&self) -> Value {
        let (_, port) = self.fake.as_ref().expect("no fake upstream in this stack");
        self.http.get(format!("http://127.0.0.1:{port}/stats")).send().await.unwrap().json().await.unwrap()
    }

    /// The fake upstream's log of requests: endpoint, started_ms, finished_ms.
    pub async fn fake_requests(&self) -> Vec<Value> {
        let (_, port) = self.fake.as_ref().expect("no fake upstream in this stack");
        let log: Value =
            self.http.get(format!("http://127.0.0.1:{port}/requests")).send().await.unwrap().json().await.unwrap();
        log["requests"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until at least `chunks` chunks of the job are stored.
    pub async fn wait_until_progress(&self, job_id: &str, chunks: u64) {
        for _ in 0..600 {
            if self.job(job_id).await["chunks"]["stored"].as_u64().unwrap_or(0) >= chunks {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("job {job_id} stored fewer than {chunks} chunks in time\n{}", self.logs());
    }

    /// A service's `/metrics`, parsed (`name` as in [`SERVICES`], or a replica's label).
    pub async fn scrape(&self, name: &str) -> prometheus::Scrape {
        let service = self
            .services
            .get(name)
            .or_else(|| self.replicas.iter().find(|(label, _)| label == name).map(|(_, service)| service))
            .unwrap_or_else(|| panic!("service {name} is not running"));
        let url = format!("http://127.0.0.1:{}/metrics", service.metrics_port);
        let response = self.http.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200, "GET {url}");
        let text = response.text().await.unwrap();
        prometheus::Scrape::parse(&text).unwrap_or_else(|err| panic!("{name}'s /metrics does not parse: {err}\n{text}"))
    }

    /// The last lines of every service's log, for failure messages.
    pub fn logs(&self) -> String {
        self.services
            .iter()
            .map(|(name, service)| ((*name).to_owned(), service))
            .chain(self.replicas.iter().map(|(name, service)| (name.clone(), service)))
            .map(|(name, service)| format!("--- {name} ---\n{}", service.process.log_tail(15)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A text of `paragraphs` distinct paragraphs, each about 400 characters.
pub fn long_text(topic: &str, paragraphs: usize) -> String {
    (0..paragraphs)
        .map(|i| {
            format!(
                "Paragraph {i} about {topic}. The {topic} keeps record number {i} of many facts. \
                 Each sentence in paragraph {i} mentions the {topic} and the marker word item{i}. \
                 This text exists to be chunked, enriched, embedded and stored by millrace, \
                 and then found again through search with the marker item{i} and the {topic}."
            )
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Search helpers (hybrid search, issue 14).
impl Stack {
    /// Submits a document given as the whole JSON body of `POST /v1/ingest` and returns its job id.
    pub async fn ingest_json(&self, body: &Value) -> String {
        let (status, answer, _) = self.post("/v1/ingest", body).await;
        assert_eq!(status, 202, "ingest refused: {answer}");
        answer["job_id"].as_str().unwrap().to_owned()
    }

    /// Waits for every job and asserts that each completed.
    pub async fn wait_for_jobs_completed(&self, job_ids: &[String], timeout: Duration) {
        for job_id in job_ids {
            let job = self.wait_for_job(job_id, timeout).await.unwrap();
            assert_eq!(job["status"], "completed", "{job}");
        }
    }

    /// `POST /v1/search` with this body, which must succeed; the whole answer.
    pub async fn search_body(&self, body: &Value) -> Value {
        let (status, answer, _) = self.post("/v1/search", body).await;
        assert_eq!(status, 200, "search {body} failed: {answer}");
        answer
    }
}

/// The parts of `text` a search result's `highlights` point at (code point offsets, end
/// exclusive); panics on an offset outside the text.
pub fn highlighted(text: &str, highlights: &Value) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    highlights
        .as_array()
        .unwrap_or_else(|| panic!("highlights is not an array: {highlights}"))
        .iter()
        .map(|span| {
            let (start, end) = (span["start"].as_u64().unwrap() as usize, span["end"].as_u64().unwrap() as usize);
            assert!(start < end && end <= chars.len(), "highlight {span} outside a text of {} chars", chars.len());
            chars[start..end].iter().collect()
        })
        .collect()
}
