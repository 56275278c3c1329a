//! `POST /v1/chat/completions`: the request, the whole answer, and the chunks of a streamed one
//! (`"stream": true`, sent as server-sent events `data: {chunk}` … `data: [DONE]`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ErrorDetail;

/// The request. `M` is a message: [`ChatMessage`] as a client sends it, or `Value` for a server
/// that checks each message itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChatCompletionRequest<M = ChatMessage> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<M>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u64>,
    /// `{"type": "text" | "json_object" | "json_schema", "json_schema": {"name", "schema", …}}`,
    /// kept as JSON: the gateway passes it through untouched and the fake checks it itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Asks for a last chunk with the usage (and `"usage": null` on every chunk before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
}

/// The whole answer, a `chat.completion` object.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChatCompletionResponse {
    #[serde(skip_deserializing)]
    pub id: String,
    #[serde(skip_deserializing)]
    pub object: &'static str,
    #[serde(skip_deserializing)]
    pub created: u64,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub choices: Vec<Choice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
}

impl ChatCompletionResponse {
    pub const OBJECT: &'static str = "chat.completion";
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Choice {
    #[serde(skip_deserializing)]
    pub index: u32,
    pub message: ResponseMessage,
    #[serde(default)]
    pub logprobs: Option<Value>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// The assistant's message in an answer: its text, or, when the model refused, no text and the
/// refusal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseMessage {
    #[serde(skip_deserializing)]
    pub role: &'static str,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub refusal: Option<String>,
}

impl ResponseMessage {
    pub fn assistant(content: Option<String>, refusal: Option<String>) -> Self {
        Self { role: "assistant", content, refusal }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
}

/// One `chat.completion.chunk` of a streamed answer; read back, also an `{"error": …}` event,
/// which OpenAI sends in place of a chunk when the stream fails part-way.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    #[serde(skip_deserializing)]
    pub id: String,
    #[serde(skip_deserializing)]
    pub object: &'static str,
    #[serde(skip_deserializing)]
    pub created: u64,
    #[serde(default)]
    pub model: String,
    #[serde(skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    /// Absent unless usage was asked for; then `Some(None)` (`null`) on every chunk but the
    /// last, which has no choices and the usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

impl ChatCompletionChunk {
    /// A chunk of the answer `id`; `include_usage` as the request asked
    /// ([`StreamOptions::include_usage`]).
    pub fn new(id: &str, created: u64, model: &str, choices: Vec<ChunkChoice>, include_usage: bool) -> Self {
        Self {
            id: id.to_owned(),
            object: "chat.completion.chunk",
            created,
            model: model.to_owned(),
            choices,
            usage: include_usage.then_some(None),
            ..Self::default()
        }
    }

    /// The last chunk when usage was asked for: no choices, the usage.
    pub fn usage(id: &str, created: u64, model: &str, usage: Usage) -> Self {
        Self { usage: Some(Some(usage)), ..Self::new(id, created, model, Vec::new(), true) }
    }

    pub fn with_system_fingerprint(self, fingerprint: &str) -> Self {
        Self { system_fingerprint: Some(fingerprint.to_owned()), ..self }
    }

    /// The JSON of its server-sent event's `data:`.
    pub fn to_data(&self) -> String {
        // Cannot fail: every map in a chunk has string keys.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChunkChoice {
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub delta: Option<Delta>,
    #[serde(default)]
    pub logprobs: Option<Value>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

impl ChunkChoice {
    pub fn new(index: u32, delta: Delta, finish_reason: Option<String>) -> Self {
        Self { index, delta: Some(delta), logprobs: None, finish_reason }
    }
}

/// What a chunk adds to a choice: the role and an empty content first, then pieces of content
/// (or of a refusal), then nothing with the finish reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    #[serde(skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Absent, `null` (`Some(None)`, in the first chunk) or a piece of the refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Option<String>>,
}

impl Delta {
    /// The first delta of a choice: `{"role": "assistant", "content": "", "refusal": null}`.
    pub fn start() -> Self {
        Self { role: Some("assistant"), content: Some(String::new()), refusal: Some(None) }
    }

    pub fn content(text: impl Into<String>) -> Self {
        Self { content: Some(text.into()), ..Self::default() }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn a_client_request_sends_only_what_is_set() {
        let request = ChatCompletionRequest {
            model: Some("m".into()),
            messages: Some(vec![ChatMessage { role: "user".into(), content: "hi".into() }]),
            stream: Some(true),
            stream_options: Some(StreamOptions { include_usage: Some(true) }),
            ..ChatCompletionRequest::default()
        };
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true,
                   "stream_options": {"include_usage": true}})
        );
    }

    #[test]
    fn chunks_carry_usage_null_only_when_asked() {
        let first = ChunkChoice::new(0, Delta::start(), None);
        let chunk = serde_json::to_value(ChatCompletionChunk::new("c", 7, "m", vec![first.clone()], false)).unwrap();
        assert!(chunk.get("usage").is_none() && chunk.get("error").is_none());
        assert_eq!(
            chunk["choices"][0],
            json!({"index": 0, "delta": {"role": "assistant", "content": "", "refusal": null},
                   "logprobs": null, "finish_reason": null})
        );
        let chunk = serde_json::to_value(ChatCompletionChunk::new("c", 7, "m", vec![first], true)).unwrap();
        assert!(chunk["usage"].is_null() && chunk.get("usage").is_some());
        let usage = Usage { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 };
        let last = serde_json::to_value(ChatCompletionChunk::usage("c", 7, "m", usage)).unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"], json!({"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}));
        assert_eq!(last["object"], "chat.completion.chunk");
    }

    #[test]
    fn reading_ignores_what_clients_do_not_use() {
        let answer: ChatCompletionResponse = serde_json::from_value(json!({
            "id": 5, "object": null, "created": 1.5, "model": "m", "system_fingerprint": 3,
            "choices": [{"index": "x", "message": {"role": 1, "content": "hi"}, "finish_reason": "stop",
                         "logprobs": {"content": []}, "extra": true}],
            "usage": null, "service_tier": "default"
        }))
        .unwrap();
        assert_eq!(answer.choices[0].message.content.as_deref(), Some("hi"));
        assert!(answer.usage.is_none());
        let chunk: ChatCompletionChunk =
            serde_json::from_value(json!({"choices": [{"delta": {"refusal": null}}], "usage": null})).unwrap();
        assert_eq!(chunk.usage, None);
        assert_eq!(chunk.choices[0].delta.as_ref().unwrap().refusal, None);
    }
}
