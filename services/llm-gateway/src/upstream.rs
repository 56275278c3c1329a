//! One LLM upstream, as a trait so that other providers can stand in for the OpenAI-compatible
//! one; [`crate::upstreams`] puts each behind its own limits and breaker.

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

/// One piece of a streamed chat answer. The last one carries the finish reason, and usage when
/// the upstream reports it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatDelta {
    pub model: String,
    pub content: String,
    pub finish_reason: Option<String>,
    pub usage: Option<Usage>,
}

/// A streamed chat answer; an error item ends it.
pub type ChatStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<ChatDelta, UpstreamError>> + Send>>;

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

    /// The same answer as [`Upstream::chat`], in pieces as the upstream produces them. A failure
    /// before the first byte of the answer is the `Err`; once the stream has begun, a failure
    /// (the body cut off, an unreadable chunk, `timeout` reached) is its last item. The whole
    /// stream, not only its start, must end within `timeout`.
    async fn chat_stream(&self, request: &ChatCompletion, timeout: Duration) -> Result<ChatStream, UpstreamError>;

    async fn embed(&self, model: &str, inputs: &[String], timeout: Duration) -> Result<EmbeddingAnswer, UpstreamError>;

    /// Whether the upstream answers at all (the background probe shown in `/v1/limits`); the
    /// error says why not.
    async fn health(&self) -> Result<(), String>;
}
