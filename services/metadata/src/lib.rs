//! The metadata stage: for each batch of chunks, a title, summary, keywords, entities, questions
//! and language per chunk, from an LLM through the gateway when an upstream is configured, else
//! extracted locally; unchanged chunks of a re-ingested document keep their stored metadata.

pub mod config;
mod extractors;
mod handler;
pub mod metrics;

use millrace_common::Host;
use millrace_pipeline::Stage;
use millrace_pipeline::runtime::StageBase;

pub use extractors::{Extractor, extractive::extract as extract_locally};

pub use config::{Config, Provider};

/// The metadata service's wiring onto the common host.
pub struct Application;

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Host> {
        let base = StageBase::open(Stage::Metadata, &config.service).await?;
        metrics::describe_all();
        let extractor = Extractor::new(&config.provider, &config.gateway_breaker, &config.service.grpc_tls)?;
        tracing::info!(extractor = extractor.name(), "metadata extractor chosen");
        metrics::register(extractor.name());
        let gateway = extractor.readiness();
        let breaker = extractor.breaker();
        let handler = handler::MetadataHandler::new(base.jobs.clone(), extractor);
        let mut service = base.into_service(config.worker, handler);
        if let Some(breaker) = breaker {
            service = service.with_breaker(breaker);
        }
        if let Some(check) = gateway {
            service = service.with_check("llm-gateway", move || check.clone().check());
        }
        Ok(service.into_host())
    }
}
