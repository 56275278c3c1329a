//! The LLM upstream behind the gateway, as a trait so that other providers (and, later, a
//! pool of upstreams with their own limits) can stand in for the OpenAI-compatible one.

mod openai;

use std::time::Duration;

pub use openai::OpenAiUpstream;

use crate::error::UpstreamError;

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatCompletion {
    pub model: String,
    pub messages: Vec<Message>,
    /// The OpenAI `response_format` object, passed through untouched.
    pub response_format: Option<serde_json::Value>,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatAnswer {
    /// The model that answered, as the upstream names it.
    pub model: String,
    pub content: String,
    pub finish_reason: String,
    pub usage: Usage,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingAnswer {
    pub model: String,
    /// One vector per input, in input order.
    pub vectors: Vec<Vec<f32>>,
    pub usage: Usage,
}

/// One attempt at each operation; retries are the caller's business.
#[tonic::async_trait]
pub trait Upstream: Send + Sync {
    /// Answers within `timeout` or fails with [`UpstreamError::Timeout`].
    async fn chat(&self, request: &ChatCompletion, timeout: Duration) -> Result<ChatAnswer, UpstreamError>;

    async fn embed(&self, model: &str, inputs: &[String], timeout: Duration) -> Result<EmbeddingAnswer, UpstreamError>;

    /// Whether the upstream answers at all (for `/readyz`); the error says why not.
    async fn health(&self) -> Result<(), String>;
}
