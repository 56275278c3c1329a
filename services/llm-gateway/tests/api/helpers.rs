use std::net::SocketAddr;

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
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestGateway {
    pub async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::get(format!("http://{}{path}", self.http_addr)).await.unwrap()
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

/// A gateway on free ports with these settings (names with or without `MILLRACE_`).
pub async fn spawn_gateway(pairs: &[(&str, &str)]) -> TestGateway {
    // Limits and spend live in Redis: each gateway gets the test process's own server and a
    // prefix of its own, never the machine's.
    let redis = millrace_testkit::RedisServer::shared().unwrap();
    let prefix = format!("gwtest-{}", uuid::Uuid::now_v7());
    let mut all = vec![
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
