//! The embeddings stage: vectors for each batch of chunks, from a local embedder or from an
//! upstream model through the llm-gateway; and `Embeddings.Embed` for query vectors, so a
//! query is embedded exactly like the chunks it is compared with.

mod cache;
pub mod config;
mod embedders;
mod grpc;
mod handler;
pub mod metrics;

use std::sync::Arc;

use millrace_common::Host;
use millrace_pipeline::Stage;
use millrace_pipeline::runtime::StageBase;
use millrace_proto::embeddings_server::EmbeddingsServer;

pub use embedders::batcher::{BatchConfig, BatchModel, Batcher};
pub use embedders::local::LocalEmbedder;
pub use embedders::{Embedder, hashing::HashingEmbedder};

/// The model `make setup` installs, and the folder name recorded with its vectors.
pub use millrace_common::config::DEFAULT_EMBEDDING_MODEL as DEFAULT_MODEL;

pub use config::{Config, LocalConfig, Provider};

/// The embeddings service's wiring onto the common host.
pub struct Application;

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Host> {
        // The model loads first: a missing model stops the service before it touches Redis.
        metrics::describe_all();
        let embedder = Arc::new(Embedder::new(
            &config.provider,
            config.dimensions,
            &config.gateway_breaker,
            &config.service.grpc_tls,
        )?);
        let base = StageBase::open(Stage::Embeddings, &config.service).await?;
        tracing::info!(embedder = embedder.name(), model = %embedder.model(), dimensions = config.dimensions, "embedder chosen");
        metrics::register(embedder.name());
        let grpc = tonic::service::Routes::new(EmbeddingsServer::new(grpc::EmbeddingsService::new(embedder.clone())));
        let gateway = embedder.gateway_channel();
        let cache = cache::EmbeddingCache::new(base.pool.clone(), base.jobs.keys().clone(), config.cache_ttl);
        let breaker = embedder.breaker();
        let handler = handler::EmbeddingsHandler::new(base.jobs.clone(), embedder, cache);
        let mut service = base.into_service(config.worker, handler).with_grpc(grpc);
        if let Some(breaker) = breaker {
            service = service.with_breaker(breaker);
        }
        if let Some(channel) = gateway {
            service =
                service.with_check("llm-gateway", move || millrace_common::grpc_client::check_health(channel.clone()));
        }
        Ok(service.into_host())
    }
}
