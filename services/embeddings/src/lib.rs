//! The embeddings stage: vectors for each batch of chunks, from a local embedder or from an
//! upstream model through the llm-gateway; and `Embeddings.Embed` for query vectors, so a
//! query is embedded exactly like the chunks it is compared with.

mod embedders;
mod grpc;
mod handler;

use std::net::SocketAddr;
use std::sync::Arc;

use millrace_common::{ConfigError, ServiceConfig, Settings};
use millrace_pipeline::Stage;
use millrace_pipeline::runtime::{StageBase, StageService, worker_config};
use millrace_proto::embeddings_server::EmbeddingsServer;
use millrace_streams::WorkerConfig;
use tokio_util::sync::CancellationToken;

pub use embedders::{EmbedError, Embedder, hashing::HashingEmbedder};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    /// Feature hashing of words and word pairs: deterministic, no model, for tests and benchmarks.
    Hashing,
    /// An upstream embedding model through the llm-gateway's Embed.
    Gateway { gateway_url: String, model: String },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    pub worker: WorkerConfig,
    pub provider: Provider,
    /// Dimension of every vector; must match the storage table.
    pub dimensions: usize,
}

impl Config {
    /// `MILLRACE_EMBEDDINGS_PROVIDER` is `gateway` or `hashing`; by default `gateway` when an
    /// upstream is configured (`MILLRACE_LLM_BASE_URL`), else `hashing`.
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let service = ServiceConfig::load(settings, "embeddings", 8063, 9063)?;
        let worker = worker_config(settings, &service, Stage::Embeddings, 4)?;
        let default_provider = if settings.raw("LLM_BASE_URL").is_some() { "gateway" } else { "hashing" };
        let provider = match settings.get_or("EMBEDDINGS_PROVIDER", default_provider.to_owned())?.as_str() {
            "hashing" => Provider::Hashing,
            "gateway" => Provider::Gateway {
                gateway_url: settings.grpc_url("LLM_GATEWAY_URL", "http://127.0.0.1:9065")?,
                model: settings.get_or("LLM_EMBED_MODEL", String::new())?,
            },
            other => {
                return Err(ConfigError::new(
                    "EMBEDDINGS_PROVIDER",
                    format!("{other:?} is not one of: gateway, hashing"),
                ));
            }
        };
        Ok(Self { service, worker, provider, dimensions: settings.positive("EMBEDDING_DIM", 384)? })
    }
}

pub struct Application {
    service: StageService<handler::EmbeddingsHandler>,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let base = StageBase::open(&config.service).await?;
        let embedder = Arc::new(Embedder::new(&config.provider, config.dimensions)?);
        tracing::info!(embedder = embedder.name(), dimensions = config.dimensions, "embedder chosen");
        let grpc = tonic::service::Routes::new(EmbeddingsServer::new(grpc::EmbeddingsService::new(embedder.clone())));
        let gateway = embedder.gateway_channel();
        let handler = handler::EmbeddingsHandler::new(base.jobs.clone(), embedder);
        let mut service = base.into_service(Stage::Embeddings, config.worker, handler).with_grpc(grpc);
        if let Some(channel) = gateway {
            service =
                service.with_check("llm-gateway", move || millrace_common::grpc_client::check_health(channel.clone()));
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
