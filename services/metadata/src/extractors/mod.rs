//! The metadata extractors: one file per backend, chosen by configuration.

pub mod extractive;
mod llm;

use millrace_proto::ChunkBatch;
use serde_json::Value;
use tonic::transport::Channel;

use crate::Provider;

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The backend may answer later (rate limited, unavailable).
    #[error("{0}")]
    Retryable(String),
    #[error("{0}")]
    Fatal(String),
}

pub enum Extractor {
    Extractive,
    Llm(Box<llm::LlmExtractor>),
}

impl Extractor {
    pub fn new(provider: &Provider) -> anyhow::Result<Self> {
        Ok(match provider {
            Provider::Extractive => Self::Extractive,
            Provider::Llm { gateway_url, model } => {
                let channel = millrace_common::grpc_client::lazy_channel("LLM_GATEWAY_URL", gateway_url, None)?;
                Self::Llm(Box::new(llm::LlmExtractor::new(channel, model.clone())))
            }
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Extractive => "extractive",
            Self::Llm(_) => "llm",
        }
    }

    /// The gateway channel to check for readiness, if this extractor uses one.
    pub fn readiness(&self) -> Option<GatewayCheck> {
        match self {
            Self::Extractive => None,
            Self::Llm(llm) => Some(GatewayCheck(llm.channel())),
        }
    }

    /// One metadata object per chunk, in chunk order.
    pub async fn extract(&self, batch: &ChunkBatch) -> Result<Vec<Value>, ExtractError> {
        match self {
            Self::Extractive => Ok(batch.chunks.iter().map(|chunk| extractive::extract(&chunk.text)).collect()),
            Self::Llm(llm) => llm.extract(batch).await,
        }
    }
}

#[derive(Clone)]
pub struct GatewayCheck(Channel);

impl GatewayCheck {
    pub async fn check(self) -> Result<(), String> {
        millrace_common::grpc_client::check_health(self.0).await
    }
}
