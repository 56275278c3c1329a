//! The metadata stage: for each batch of chunks, a title, summary, keywords, entities, questions
//! and language per chunk, from an LLM through the gateway when an upstream is configured, else
//! extracted locally; unchanged chunks of a re-ingested document keep their stored metadata.

mod extractors;
mod handler;
pub mod metrics;

use std::net::SocketAddr;

use millrace_common::{ConfigError, ServiceConfig, Settings};
use millrace_pipeline::Stage;
use millrace_pipeline::runtime::{StageBase, StageService, worker_config};
use millrace_resilience::BreakerConfig;
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
        /// Chunks sent in one Chat request.
        chunks_per_request: usize,
    },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    pub worker: WorkerConfig,
    pub provider: Provider,
    /// The breaker toward the gateway (`MILLRACE_GATEWAY_BREAKER_*`).
    pub gateway_breaker: BreakerConfig,
}

impl Config {
    /// `MILLRACE_METADATA_PROVIDER` is `llm` or `extractive`; by default `llm` when an upstream
    /// is configured (`MILLRACE_LLM_BASE_URL` or `MILLRACE_LLM_UPSTREAMS_FILE`), else `extractive`.
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let service = ServiceConfig::load(settings, "metadata", 8062, 9062)?;
        let worker = worker_config(settings, &service, Stage::Metadata, 8)?;
        let default_provider = if millrace_common::llm_configured(settings) { "llm" } else { "extractive" };
        let provider = match settings.get_or("METADATA_PROVIDER", default_provider.to_owned())?.as_str() {
            "extractive" => Provider::Extractive,
            "llm" => Provider::Llm {
                gateway_url: settings.grpc_url("LLM_GATEWAY_URL", "http://127.0.0.1:9065")?,
                model: settings.get_or("LLM_CHAT_MODEL", String::new())?,
                chunks_per_request: settings.positive("METADATA_CHUNKS_PER_REQUEST", 8)?,
            },
            other => {
                return Err(ConfigError::new("METADATA_PROVIDER", format!("{other:?} is not one of: llm, extractive")));
            }
        };
        let gateway_breaker = BreakerConfig::from_settings(settings, "GATEWAY_")?;
        Ok(Self { service, worker, provider, gateway_breaker })
    }
}

pub struct Application {
    service: StageService<handler::MetadataHandler>,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let base = StageBase::open(&config.service).await?;
        metrics::describe_all();
        let extractor = Extractor::new(&config.provider, &config.gateway_breaker)?;
        tracing::info!(extractor = extractor.name(), "metadata extractor chosen");
        metrics::register(extractor.name());
        let gateway = extractor.readiness();
        let breaker = extractor.breaker();
        let handler = handler::MetadataHandler::new(base.jobs.clone(), extractor);
        let mut service = base.into_service(Stage::Metadata, config.worker, handler);
        if let Some(breaker) = breaker {
            service = service.with_breaker(breaker);
        }
        if let Some(check) = gateway {
            service = service.with_check("llm-gateway", move || check.clone().check());
        }
        Ok(Self { service })
    }

    pub fn http_addr(&self) -> std::io::Result<SocketAddr> {
        self.service.http_addr()
    }

    pub fn grpc_addr(&self) -> std::io::Result<SocketAddr> {
        self.service.grpc_addr()
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        self.service.run(shutdown).await
    }
}
