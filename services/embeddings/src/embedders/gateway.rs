//! Vectors from an upstream embedding model through the llm-gateway.

use millrace_common::HandlerError;
use millrace_common::telemetry::PropagateContext;
use millrace_proto::LlmEmbedRequest;
use millrace_proto::llm_gateway_client::LlmGatewayClient;
use millrace_resilience::CircuitBreaker;
use tonic::transport::Channel;

pub struct GatewayEmbedder {
    channel: Channel,
    model: String,
    dimensions: usize,
    breaker: CircuitBreaker,
}

impl GatewayEmbedder {
    pub fn new(channel: Channel, model: String, dimensions: usize, breaker: CircuitBreaker) -> Self {
        Self { channel, model, dimensions, breaker }
    }

    pub fn breaker(&self) -> CircuitBreaker {
        self.breaker.clone()
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

    pub async fn embed(&self, texts: &[String], job_id: &str) -> Result<Vec<Vec<f32>>, HandlerError> {
        let request = LlmEmbedRequest { model: self.model.clone(), inputs: texts.to_vec(), job_id: job_id.to_owned() };
        let mut client = LlmGatewayClient::with_interceptor(self.channel.clone(), PropagateContext);
        let call =
            async { client.embed(request).await.map_err(|status| HandlerError::from_status("llm-gateway", &status)) };
        let response = self.breaker.call(call).await?;
        let vectors: Vec<Vec<f32>> = response.into_inner().vectors.into_iter().map(|v| v.values).collect();
        if vectors.len() != texts.len() {
            return Err(HandlerError::Retry(format!("{} vectors for {} texts", vectors.len(), texts.len())));
        }
        if let Some(bad) = vectors.iter().find(|v| v.len() != self.dimensions) {
            return Err(HandlerError::Fatal(format!(
                "the model returned {}-dimensional vectors but MILLRACE_EMBEDDING_DIM is {}",
                bad.len(),
                self.dimensions
            )));
        }
        Ok(vectors)
    }
}
