//! The embedding backends: one file per backend, chosen by configuration.

pub mod batcher;
mod gateway;
pub use millrace_encoder::hashing;
pub mod local;

use millrace_common::HandlerError;
use millrace_common::tls::GrpcTls;
use millrace_pipeline::runtime::GATEWAY_BREAKER;
use millrace_resilience::{BreakerConfig, CircuitBreaker};
use tonic::transport::Channel;

use crate::Provider;

pub enum Embedder {
    Local(local::LocalEmbedder),
    Hashing(hashing::HashingEmbedder),
    Gateway(gateway::GatewayEmbedder),
}

impl Embedder {
    /// Builds the configured backend; the local one loads its model here, so a missing or
    /// broken model folder stops the service at start.
    /// `breaker` guards the calls to the gateway, if the backend makes any.
    pub fn new(provider: &Provider, dimensions: usize, breaker: &BreakerConfig, tls: &GrpcTls) -> anyhow::Result<Self> {
        Ok(match provider {
            Provider::Local(local) => Self::Local(local::LocalEmbedder::start(
                &local.model_dir,
                dimensions,
                batcher::BatchConfig { max_batch: local.max_batch, max_wait: local.max_wait },
            )?),
            Provider::Hashing => Self::Hashing(hashing::HashingEmbedder::new(dimensions)),
            Provider::Gateway { gateway_url, model } => {
                let channel = millrace_common::grpc_client::lazy_channel("LLM_GATEWAY_URL", gateway_url, None, tls)?;
                let breaker = CircuitBreaker::new(GATEWAY_BREAKER, breaker.clone());
                Self::Gateway(gateway::GatewayEmbedder::new(channel, model.clone(), dimensions, breaker))
            }
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Local(_) => "local",
            Self::Hashing(_) => "hashing",
            Self::Gateway(_) => "gateway",
        }
    }

    /// The model name recorded with every vector.
    pub fn model(&self) -> String {
        match self {
            Self::Local(l) => l.model(),
            Self::Hashing(h) => h.model(),
            Self::Gateway(g) => g.model(),
        }
    }

    pub fn dimensions(&self) -> usize {
        match self {
            Self::Local(l) => l.dimensions(),
            Self::Hashing(h) => h.dimensions(),
            Self::Gateway(g) => g.dimensions(),
        }
    }

    /// The breaker toward the gateway, if this backend calls it: the stage stops pulling while
    /// it is open.
    pub fn breaker(&self) -> Option<CircuitBreaker> {
        match self {
            Self::Local(_) | Self::Hashing(_) => None,
            Self::Gateway(g) => Some(g.breaker()),
        }
    }

    pub fn gateway_channel(&self) -> Option<Channel> {
        match self {
            Self::Local(_) | Self::Hashing(_) => None,
            Self::Gateway(g) => Some(g.channel()),
        }
    }

    /// One unit vector per text, in order.
    pub async fn embed(&self, texts: &[String], job_id: &str) -> Result<Vec<Vec<f32>>, HandlerError> {
        match self {
            Self::Local(l) => Ok(l.embed(texts).await?),
            Self::Hashing(h) => Ok(texts.iter().map(|t| h.embed(t)).collect()),
            Self::Gateway(g) => g.embed(texts, job_id).await,
        }
    }
}
