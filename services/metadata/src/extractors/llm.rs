//! Metadata from an LLM through the llm-gateway: one Chat request per batch (several chunks
//! per request, so a requests-per-minute quota goes further), answered as JSON constrained by
//! a schema. An answer that does not fit the schema falls back to the extractive metadata for
//! that batch, labelled as such, never a silent gap.

use millrace_common::ErrorCode;
use millrace_proto::llm_gateway_client::LlmGatewayClient;
use millrace_proto::{ChatMessage, ChatRequest, ChunkBatch};
use serde_json::{Value, json};
use tonic::transport::Channel;
use tracing::warn;

use super::{ExtractError, extractive};

/// Characters of each chunk sent to the model; enough for a title and summary.
const MAX_CHUNK_CHARS: usize = 4_000;

pub struct LlmExtractor {
    channel: Channel,
    client: LlmGatewayClient<Channel>,
    model: String,
}

impl LlmExtractor {
    pub fn new(channel: Channel, model: String) -> Self {
        Self { client: LlmGatewayClient::new(channel.clone()), channel, model }
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub async fn extract(&self, batch: &ChunkBatch) -> Result<Vec<Value>, ExtractError> {
        let count = batch.chunks.len();
        let mut prompt = format!(
            "Document {:?}. For each of the {count} chunks below, in order, give a short title, a one-sentence \
             summary and up to 8 keywords.\n",
            batch.document_id
        );
        for (i, chunk) in batch.chunks.iter().enumerate() {
            let text: String = chunk.text.chars().take(MAX_CHUNK_CHARS).collect();
            prompt.push_str(&format!("\n### Chunk {}\n{text}\n", i + 1));
        }
        let request = ChatRequest {
            model: self.model.clone(),
            messages: vec![
                ChatMessage {
                    role: "system".into(),
                    content: "You write metadata for search indexing. Answer only with JSON that fits the schema."
                        .into(),
                },
                ChatMessage { role: "user".into(), content: prompt },
            ],
            response_format_json: response_format(count).to_string(),
            temperature: Some(0.0),
            max_tokens: None,
            job_id: batch.job_id.clone(),
        };
        let response = self.client.clone().chat(request).await.map_err(|status| {
            let message = format!("llm-gateway: {}", status.message());
            if ErrorCode::from_grpc(status.code()).is_retryable() {
                ExtractError::Retryable(message)
            } else {
                ExtractError::Fatal(message)
            }
        })?;
        let response = response.into_inner();
        match parse_answer(&response.content, count) {
            Ok(items) => Ok(items
                .into_iter()
                .zip(&batch.chunks)
                .map(|(item, chunk)| {
                    json!({
                        "extractor": "llm",
                        "model": response.model,
                        "title": item["title"],
                        "summary": item["summary"],
                        "keywords": item["keywords"],
                        "language": extractive::extract(&chunk.text)["language"],
                    })
                })
                .collect()),
            Err(reason) => {
                warn!(job_id = %batch.job_id, batch = batch.batch_index, reason, "LLM answer unusable; using extractive metadata");
                Ok(batch
                    .chunks
                    .iter()
                    .map(|chunk| {
                        let mut meta = extractive::extract(&chunk.text);
                        meta["llm_error"] = json!(reason);
                        meta
                    })
                    .collect())
            }
        }
    }
}

fn response_format(count: usize) -> Value {
    json!({
        "type": "json_schema",
        "json_schema": {
            "name": "chunk_metadata",
            "strict": true,
            "schema": {
                "type": "object",
                "additionalProperties": false,
                "required": ["chunks"],
                "properties": {
                    "chunks": {
                        "type": "array",
                        "minItems": count,
                        "maxItems": count,
                        "items": {
                            "type": "object",
                            "additionalProperties": false,
                            "required": ["title", "summary", "keywords"],
                            "properties": {
                                "title": {"type": "string"},
                                "summary": {"type": "string"},
                                "keywords": {"type": "array", "items": {"type": "string"}, "maxItems": 8}
                            }
                        }
                    }
                }
            }
        }
    })
}

/// The answer's items, if the answer has one well-formed item per chunk.
fn parse_answer(content: &str, count: usize) -> Result<Vec<Value>, String> {
    let answer: Value = serde_json::from_str(content).map_err(|err| format!("not JSON: {err}"))?;
    let items = answer.get("chunks").and_then(Value::as_array).ok_or("no \"chunks\" array")?;
    if items.len() != count {
        return Err(format!("{} items for {count} chunks", items.len()));
    }
    for item in items {
        let fits = item.get("title").is_some_and(Value::is_string)
            && item.get("summary").is_some_and(Value::is_string)
            && item.get("keywords").and_then(Value::as_array).is_some_and(|k| k.iter().all(Value::is_string));
        if !fits {
            return Err(format!("item does not fit the schema: {item}"));
        }
    }
    Ok(items.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_well_formed_answer_is_accepted() {
        let answer = r#"{"chunks":[{"title":"T","summary":"S","keywords":["k"]}]}"#;
        assert_eq!(parse_answer(answer, 1).unwrap()[0]["title"], "T");
    }

    #[test]
    fn wrong_counts_and_shapes_are_rejected() {
        assert!(parse_answer("not json", 1).is_err());
        assert!(parse_answer(r#"{"chunks":[]}"#, 1).is_err());
        assert!(parse_answer(r#"{"chunks":[{"title":1,"summary":"S","keywords":[]}]}"#, 1).is_err());
    }
}
