//! `POST /v1/embeddings`: the request and the answer, a `list` of `embedding` objects.
//!
//! `encoding_format: "base64"` matters: the OpenAI SDKs ask for it by default and decode the
//! string as little-endian `f32`s, so that is what it must hold.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The request. `I` is the input: the texts as a client sends them, or `Value` for a server that
/// takes a string, texts, token ids or lists of them and checks each item itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EmbeddingsRequest<I = Vec<String>> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<I>,
    /// `"float"` (the default) or `"base64"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u64>,
}

/// The answer. `V` is a vector: `Vec<f32>` as a client reads it (having asked for floats), or
/// [`EncodedEmbedding`] as a server writes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmbeddingsResponse<V = Vec<f32>> {
    #[serde(skip_deserializing)]
    pub object: &'static str,
    pub data: Vec<Embedding<V>>,
    #[serde(default)]
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<EmbeddingUsage>,
}

impl<V> EmbeddingsResponse<V> {
    /// The answer with one vector per input, in input order.
    pub fn new(model: String, vectors: impl IntoIterator<Item = V>, usage: EmbeddingUsage) -> Self {
        let data = vectors
            .into_iter()
            .enumerate()
            .map(|(index, embedding)| Embedding { object: "embedding", index, embedding })
            .collect();
        Self { object: "list", data, model, usage: Some(usage) }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Embedding<V = Vec<f32>> {
    #[serde(skip_deserializing)]
    pub object: &'static str,
    pub index: usize,
    pub embedding: V,
}

/// A vector as the request's `encoding_format` asked for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EncodedEmbedding {
    Float(Vec<f32>),
    /// Little-endian `f32` bytes in standard base64, as OpenAI encodes them.
    Base64(String),
}

impl EncodedEmbedding {
    pub fn new(vector: Vec<f32>, base64: bool) -> Self {
        if base64 {
            let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
            Self::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
        } else {
            Self::Float(vector)
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Not in OpenAI's answer (so not written when zero), but counted when a server sends it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl From<EmbeddingUsage> for crate::Usage {
    fn from(usage: EmbeddingUsage) -> Self {
        Self {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: usage.total_tokens,
        }
    }
}
