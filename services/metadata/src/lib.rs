//! The metadata stage: for each batch of chunks, a title, summary, keywords and language per
//! chunk, from an LLM through the gateway when an upstream is configured, else extracted locally.

mod extractors;
mod handler;

use std::net::SocketAddr;
use std::time::Duration;

use millrace_common::server::{Listeners, Readiness};
use millrace_common::{ConfigError, ServiceConfig, Settings, redis_conn};
use millrace_pipeline::runtime::{StageService, worker_config};
use millrace_pipeline::{JobStore, Keys, Stage, payload_ttl_default};
use millrace_streams::WorkerConfig;
use tokio_util::sync::CancellationToken;

pub use extractors::{Extractor, extractive::extract as extract_locally};

/// Which extractor runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    Extractive,
    /// Through the llm-gateway's Chat at this gRPC URL.
    Llm {
        gateway_url: String,
        model: String,
    },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    pub worker: WorkerConfig,
    pub provider: Provider,
    pub retention: Duration,
}

impl Config {
    /// `MILLRACE_METADATA_PROVIDER` is `llm` or `extractive`; by default `llm` when an upstream
    /// is configured (`MILLRACE_LLM_BASE_URL`), else `extractive`.
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let service = ServiceConfig::load(settings, "metadata", 8062, 9062)?;
        let worker = worker_config(settings, &service, Stage::Metadata, 8)?;
        let default_provider = if settings.raw("LLM_BASE_URL").is_some() { "llm" } else { "extractive" };
        let provider = match settings.get_or("METADATA_PROVIDER", default_provider.to_owned())?.as_str() {
            "extractive" => Provider::Extractive,
            "llm" => Provider::Llm {
                gateway_url: settings.get_or("LLM_GATEWAY_URL", "http://127.0.0.1:9065".to_owned())?,
                model: settings.get_or("LLM_CHAT_MODEL", String::new())?,
            },
            other => {
                return Err(ConfigError::new("METADATA_PROVIDER", format!("{other:?} is not one of: llm, extractive")));
            }
        };
        Ok(Self {
            service,
            worker,
            provider,
            retention: Duration::from_secs(settings.get_or("JOB_RETENTION_SECS", payload_ttl_default().as_secs())?),
        })
    }
}

pub struct Application {
    service: StageService<handler::MetadataHandler>,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let listeners = Listeners::bind(&config.service).await?;
        let client = redis_conn::client(&config.service.redis_url)?;
        let pool = redis_conn::pool(&config.service.redis_url, 16).map_err(anyhow::Error::msg)?;
        let store = JobStore::new(pool.clone(), Keys::new(config.service.key_prefix.clone()), config.retention);
        let extractor = Extractor::new(&config.provider)?;
        tracing::info!(extractor = extractor.name(), "metadata extractor chosen");
        let readiness_pool = pool.clone();
        let mut readiness = Readiness::default().with("redis", move || {
            let pool = readiness_pool.clone();
            async move { redis_conn::ping(&pool).await }
        });
        if let Some(check) = extractor.readiness() {
            readiness = readiness.with("llm-gateway", move || check.clone().check());
        }
        Ok(Self {
            service: StageService {
                stage: Stage::Metadata,
                config: config.service,
                worker: config.worker,
                listeners,
                client,
                pool,
                handler: handler::MetadataHandler::new(store, extractor),
                router: axum::Router::new(),
                grpc: tonic::service::Routes::builder().routes(),
                readiness,
            },
        })
    }

    pub fn http_addr(&self) -> std::io::Result<SocketAddr> {
        self.service.listeners.http_addr()
    }

    pub fn grpc_addr(&self) -> std::io::Result<SocketAddr> {
        self.service.listeners.grpc_addr()
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        self.service.run(shutdown).await
    }
}
