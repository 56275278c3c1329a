use std::net::SocketAddr;

use millrace_auth::{KeyStore, NewKey, Scope};
use millrace_common::Settings;
use millrace_fake_openai::FakeOpenAi;
use millrace_llm_gateway::{Application, Config};
use millrace_proto::v1::llm_gateway_client::LlmGatewayClient;
use millrace_proto::v1::{ChatMessage, ChatRequest};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub struct TestGateway {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// `/metrics` is served here, not on the HTTP port.
    pub metrics_addr: SocketAddr,
    pub client: LlmGatewayClient<Channel>,
    pub shutdown: CancellationToken,
    pub task: Option<JoinHandle<std::io::Result<()>>>,
    pub redis_url: String,
    pub key_prefix: String,
    /// Where this gateway's keys live (a database of its own on the test process's PostgreSQL).
    pub store: KeyStore,
    pub database_url: String,
    /// `MILLRACE_ADMIN_KEY`: holds every scope but `llm`.
    pub admin_key: String,
    /// A key with the `llm` scope and no limits of its own, for the OpenAI-compatible API.
    pub llm_key: String,
}

/// The bootstrap admin key every test gateway gets.
pub const ADMIN_KEY: &str = "mr_test-admin-key-for-the-gateway-tests";

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestGateway {
    /// A GET with the admin key (the ops routes need none; `/v1/limits` needs `admin`).
    pub async fn get(&self, path: &str) -> reqwest::Response {
        let url = format!("http://{}{path}", self.http_addr);
        reqwest::Client::new().get(url).bearer_auth(&self.admin_key).send().await.unwrap()
    }

    /// A GET with the `llm` key (the OpenAI-compatible routes).
    pub async fn api_get(&self, path: &str) -> reqwest::Response {
        self.http().get(format!("http://{}{path}", self.http_addr)).send().await.unwrap()
    }

    /// A client that sends the `llm` key on every request, as an OpenAI SDK configured with it.
    pub fn http(&self) -> reqwest::Client {
        client_with(&self.llm_key)
    }

    /// A new key of this gateway's store: its secret.
    pub async fn key(&self, key: NewKey) -> String {
        self.store.create(&key).await.unwrap().1
    }

    /// A new `llm` key with these limits: its id and secret.
    pub async fn llm_key_with(
        &self,
        rpm: Option<u32>,
        tpm: Option<u32>,
        daily_budget_usd: Option<f64>,
    ) -> (String, String) {
        let (record, secret) = self.store.create(&llm_key(rpm, tpm, daily_budget_usd)).await.unwrap();
        (record.id, secret)
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis_url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap()
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.metrics_addr)).await.unwrap().text().await.unwrap()
    }

    /// The first upstream's last probe in `/v1/limits`, once there is one (the sampler probes
    /// at start, then every 30 s).
    pub async fn probe(&self) -> serde_json::Value {
        for _ in 0..100 {
            let limits: serde_json::Value = self.get("/v1/limits").await.json().await.unwrap();
            let probe = &limits["upstreams"][0]["probe"];
            if !probe.is_null() {
                return probe.clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("no probe in /v1/limits after 5 s");
    }
}

/// A key of the `llm` scope in the default tenant, with these limits.
pub fn llm_key(rpm: Option<u32>, tpm: Option<u32>, daily_budget_usd: Option<f64>) -> NewKey {
    NewKey {
        tenant: "default".into(),
        name: "gateway-test".into(),
        scopes: vec![Scope::Llm],
        collections: None,
        rpm,
        tpm,
        daily_budget_usd,
    }
}

/// A client that sends `key` as `Authorization: Bearer`.
pub fn client_with(key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {key}").parse().unwrap());
    reqwest::Client::builder().default_headers(headers).build().unwrap()
}

/// A gateway on free ports with these settings (names with or without `MILLRACE_`).
pub async fn spawn_gateway(pairs: &[(&str, &str)]) -> TestGateway {
    // Limits and spend live in Redis: each gateway gets the test process's own server and a
    // prefix of its own, never the machine's. Keys live in PostgreSQL: a database of its own.
    let redis = millrace_testkit::RedisServer::shared().unwrap();
    let postgres = millrace_testkit::Postgres::shared().unwrap();
    let database_url = postgres.create_unique_database("gwtest").unwrap();
    let prefix = format!("gwtest-{}", uuid::Uuid::now_v7());
    let mut all = vec![
        ("DATABASE_URL", database_url.as_str()),
        ("ADMIN_KEY", ADMIN_KEY),
        ("HTTP_ADDR", "127.0.0.1:0"),
        ("GRPC_ADDR", "127.0.0.1:0"),
        ("METRICS_ADDR", "127.0.0.1:0"),
        ("SHUTDOWN_DEADLINE_MS", "2000"),
        ("REDIS_URL", redis.url.as_str()),
        ("KEY_PREFIX", prefix.as_str()),
        // Tests count what the fake served: no background probe unless a test asks for one.
        ("LLM_PROBE_INTERVAL_MS", "3600000"),
    ];
    all.extend_from_slice(pairs);
    let config = Config::from_settings(&Settings::from_pairs(all)).unwrap();
    // A test may name another gateway's database (two replicas of one deployment).
    let database_url = pairs
        .iter()
        .find(|(name, _)| *name == "DATABASE_URL")
        .map_or(database_url.clone(), |(_, url)| (*url).to_owned());
    let store = KeyStore::new("DATABASE_URL", &database_url, &Default::default()).unwrap();
    let llm_key = store.create(&llm_key(None, None, None)).await.unwrap().1;
    let app = Application::build(config).await.unwrap();
    let (http_addr, grpc_addr) = (app.http_addr(), app.grpc_addr());
    let metrics_addr = app.metrics_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let client = LlmGatewayClient::connect(format!("http://{grpc_addr}")).await.unwrap();
    TestGateway {
        http_addr,
        grpc_addr,
        metrics_addr,
        client,
        shutdown,
        task: Some(task),
        redis_url: redis.url.clone(),
        key_prefix: prefix,
        store,
        database_url,
        admin_key: ADMIN_KEY.to_owned(),
        llm_key,
    }
}

/// A fake upstream on a free port.
pub async fn spawn_fake(config: millrace_fake_openai::Config) -> FakeOpenAi {
    let config = millrace_fake_openai::Config { addr: "127.0.0.1:0".parse().unwrap(), ..config };
    millrace_fake_openai::spawn(config).await.unwrap()
}

/// A gateway in front of `fake`, with quick retries.
pub async fn gateway_for(fake: &FakeOpenAi, extra: &[(&str, &str)]) -> TestGateway {
    let base_url = fake.base_url();
    let mut pairs = vec![("LLM_BASE_URL", base_url.as_str()), ("LLM_RETRY_BASE_MS", "10")];
    pairs.extend_from_slice(extra);
    spawn_gateway(&pairs).await
}

pub fn chat_request(text: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![
            ChatMessage { role: "system".into(), content: "Extract metadata.".into() },
            ChatMessage { role: "user".into(), content: text.into() },
        ],
        ..Default::default()
    }
}
