//! OpenAI's wire types, in one place for the three parts that speak them: the gateway's
//! OpenAI-compatible HTTP API (a server), its upstream client, and `tools/fake-openai` (a
//! server that plays the upstream).
//!
//! Types only: no HTTP client or server. Fields that are optional on the wire are skipped when
//! absent, and unknown fields are ignored. On reading, only what a client uses is read: fields a
//! server writes for form (`id`, `object`, `created`, `system_fingerprint`, a message's `role`)
//! are not read back, so an odd value in them fails nothing. A request is generic over the
//! items a server checks one by one (`serde_json::Value` there, so it can name the faulty field
//! in its own words) and a client sends typed.

pub mod chat;
pub mod embeddings;
pub mod error;
pub mod models;

pub use chat::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ChatMessage, Choice, ChunkChoice, Delta,
    ResponseMessage, StreamOptions, Usage,
};
pub use embeddings::{Embedding, EmbeddingUsage, EmbeddingsRequest, EmbeddingsResponse, EncodedEmbedding};
pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use models::{Model, ModelList};

/// Reads a field a client only glances at: a value of another type reads as absent instead of
/// failing the whole answer (servers disagree on, say, an error `code` being text or a number).
fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let value = <serde_json::Value as serde::Deserialize>::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}
