//! Vectors from an upstream embedding model through the llm-gateway.

use millrace_common::ErrorCode;
use millrace_proto::LlmEmbedRequest;
use millrace_proto::llm_gateway_client::LlmGatewayClient;
use tonic::transport::Channel;

use super::EmbedError;

pub struct GatewayEmbedder {
    channel: Channel,
    model: String,
    dimensions: usize,
}

impl GatewayEmbedder {
    pub fn new(channel: Channel, model: String, dimensions: usize) -> Self {
        Self { channel, model, dimensions }
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub fn model(&self) -> String {
        if self.model.is_empty() { "gateway-default".to_owned() } else { self.model.clone() }
    }

    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    pub async fn embed(&self, texts: &[String], job_id: &str) -> Result<Vec<Vec<f32>>, EmbedError> {
        let request = LlmEmbedRequest { model: self.model.clone(), inputs: texts.to_vec(), job_id: job_id.to_owned() };
        let response = LlmGatewayClient::new(self.channel.clone()).embed(request).await.map_err(|status| {
            let message = format!("llm-gateway: {}", status.message());
            if ErrorCode::from_grpc(status.code()).is_retryable() {
                EmbedError::Retryable(message)
            } else {
                EmbedError::Fatal(message)
            }
        })?;
        let vectors: Vec<Vec<f32>> = response.into_inner().vectors.into_iter().map(|v| v.values).collect();
        if vectors.len() != texts.len() {
            return Err(EmbedError::Retryable(format!("{} vectors for {} texts", vectors.len(), texts.len())));
        }
        if let Some(bad) = vectors.iter().find(|v| v.len() != self.dimensions) {
            return Err(EmbedError::Fatal(format!(
                "the model returned {}-dimensional vectors but MILLRACE_EMBEDDING_DIM is {}",
                bad.len(),
                self.dimensions
            )));
        }
        Ok(vectors)
    }
}
