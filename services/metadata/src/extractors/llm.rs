//! Metadata from an LLM through the llm-gateway, answered as JSON constrained by a schema
//! (title, summary, keywords, entities, and questions the chunk answers).
//!
//! Several chunks go in one Chat request (`MILLRACE_METADATA_CHUNKS_PER_REQUEST`), so a
//! requests-per-minute quota goes further, with the document's title and each chunk's heading
//! path as context. An answer is validated against the schema; an invalid one gets one repair
//! attempt (the model is shown its answer and what is wrong with it). If the repair fails too,
//! those chunks keep extractive metadata, carry `llm_error`, and are counted as failed on the
//! job: never a silent gap.

use millrace_common::HandlerError;
use millrace_common::telemetry::{GrpcChannel, PropagateContext};
use millrace_proto::llm_gateway_client::LlmGatewayClient;
use millrace_proto::{ChatMessage, ChatRequest, ChatResponse, Chunk};
use millrace_resilience::CircuitBreaker;
use serde::Deserialize;
use serde_json::{Value, json};
use tonic::transport::Channel;
use tracing::warn;

use super::extractive;

/// Characters of each chunk sent to the model; enough for a title and summary.
const MAX_CHUNK_CHARS: usize = 4_000;
const MAX_KEYWORDS: usize = 8;
const MAX_ENTITIES: usize = 10;
const MAX_QUESTIONS: usize = 3;

const SYSTEM_PROMPT: &str = "You write metadata for search indexing. For each chunk of a document you give a short \
     title, a one-sentence summary, keywords, the named entities it mentions (people, places, organisations, products), \
     and up to 3 questions a reader could ask that the chunk answers. Answer only with JSON that fits the schema.";

/// The chunks of one request and where they sit in their batch.
pub struct Group<'a> {
    pub document_id: &'a str,
    pub document_title: &'a str,
    pub job_id: &'a str,
    pub chunks: Vec<&'a Chunk>,
}

/// What the model gave for one group of chunks.
pub struct GroupResult {
    /// One object per chunk, in order.
    pub metadata: Vec<Value>,
    /// Whether the model's answer was unusable even after the repair attempt.
    pub failed: bool,
}

pub struct LlmExtractor {
    channel: Channel,
    client: LlmGatewayClient<GrpcChannel>,
    model: String,
    breaker: CircuitBreaker,
}

/// One chunk's answer: exactly the schema's fields (unknown fields make the answer invalid).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChunkAnswer {
    title: String,
    summary: String,
    keywords: Vec<String>,
    entities: Vec<String>,
    questions: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    chunks: Vec<ChunkAnswer>,
}

impl LlmExtractor {
    pub fn new(channel: Channel, model: String, breaker: CircuitBreaker) -> Self {
        Self { client: LlmGatewayClient::with_interceptor(channel.clone(), PropagateContext), channel, model, breaker }
    }

    pub fn breaker(&self) -> CircuitBreaker {
        self.breaker.clone()
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Whether metadata stored by an earlier run can stand for this extractor's: it came from
    /// the LLM (not a fallback) and, when a model is configured, from that model (the answer
    /// names a dated variant such as `gpt-4o-mini-2024-07-18`, hence the prefix test).
    pub fn accepts(&self, stored: &Value) -> bool {
        stored["extractor"] == "llm"
            && stored.get("llm_error").is_none()
            && (self.model.is_empty() || stored["model"].as_str().is_some_and(|m| m.starts_with(&self.model)))
    }

    /// Metadata for one group of chunks: one request, and one repair request if the answer does
    /// not fit the schema. Gateway errors are returned (the batch is retried); a bad answer is not.
    pub async fn extract(&self, group: &Group<'_>) -> Result<GroupResult, HandlerError> {
        let count = group.chunks.len();
        let mut messages = vec![
            ChatMessage { role: "system".into(), content: SYSTEM_PROMPT.into() },
            ChatMessage { role: "user".into(), content: prompt(group) },
        ];
        let first = self.chat(group.job_id, messages.clone(), count).await?;
        let first_error = match parse_answer(&first, count) {
            Ok(items) => return Ok(GroupResult { metadata: self.to_metadata(items, &first, group), failed: false }),
            Err(reason) => reason,
        };
        metrics::counter!(crate::metrics::REPAIRS).increment(1);
        messages.push(ChatMessage { role: "assistant".into(), content: first.content.clone() });
        messages.push(ChatMessage {
            role: "user".into(),
            content: format!(
                "That answer is invalid: {first_error}. Answer again for the same {count} chunks with only the JSON \
                 object, fitting the schema."
            ),
        });
        let second = self.chat(group.job_id, messages, count).await?;
        match parse_answer(&second, count) {
            Ok(items) => Ok(GroupResult { metadata: self.to_metadata(items, &second, group), failed: false }),
            Err(reason) => {
                warn!(
                    job_id = group.job_id,
                    chunks = count,
                    first_error,
                    reason,
                    "LLM metadata invalid after a repair attempt; using extractive metadata"
                );
                let metadata = group
                    .chunks
                    .iter()
                    .map(|chunk| {
                        let mut meta = extractive::extract(&chunk.text);
                        meta["llm_error"] = json!(reason);
                        meta
                    })
                    .collect();
                Ok(GroupResult { metadata, failed: true })
            }
        }
    }

    /// One Chat call through the breaker: the gateway (or every upstream behind it) being down
    /// or too slow counts against it and makes the batch wait; a quota or a bad request says
    /// nothing about the gateway's health.
    async fn chat(&self, job_id: &str, messages: Vec<ChatMessage>, count: usize) -> Result<ChatResponse, HandlerError> {
        let request = ChatRequest {
            model: self.model.clone(),
            messages,
            response_format_json: response_format(count).to_string(),
            temperature: Some(0.0),
            max_tokens: None,
            job_id: job_id.to_owned(),
        };
        let mut client = self.client.clone();
        let call =
            async { client.chat(request).await.map_err(|status| HandlerError::from_status("llm-gateway", &status)) };
        Ok(self.breaker.call(call).await?.into_inner())
    }

    fn to_metadata(&self, items: Vec<ChunkAnswer>, response: &ChatResponse, group: &Group<'_>) -> Vec<Value> {
        items
            .into_iter()
            .zip(&group.chunks)
            .map(|(item, chunk)| {
                json!({
                    "extractor": "llm",
                    "model": response.model,
                    "title": item.title,
                    "summary": item.summary,
                    "keywords": item.keywords,
                    "entities": item.entities,
                    "questions": item.questions,
                    "language": extractive::extract(&chunk.text)["language"],
                })
            })
            .collect()
    }
}

/// The user message: the document's title, then each chunk with its heading path.
fn prompt(group: &Group<'_>) -> String {
    let count = group.chunks.len();
    let title = if group.document_title.is_empty() { group.document_id } else { group.document_title };
    let mut prompt = format!("Document: {title:?}. Write metadata for each of the {count} chunks below, in order.\n");
    for (i, chunk) in group.chunks.iter().enumerate() {
        let text: String = chunk.text.chars().take(MAX_CHUNK_CHARS).collect();
        prompt.push_str(&format!("\n### Chunk {}\n", i + 1));
        if !chunk.heading_path.is_empty() {
            prompt.push_str(&format!("Section: {}\n", chunk.heading_path.join(" > ")));
        }
        if chunk.page_start > 0 {
            prompt.push_str(&format!("Page: {}\n", chunk.page_start));
        }
        prompt.push_str(&text);
        prompt.push('\n');
    }
    prompt
}

/// The OpenAI `response_format` for `count` chunks. [`ChunkAnswer`] is its Rust twin: keep the
/// two in step.
fn response_format(count: usize) -> Value {
    let strings = |max: usize| json!({"type": "array", "items": {"type": "string"}, "maxItems": max});
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
                            "required": ["title", "summary", "keywords", "entities", "questions"],
                            "properties": {
                                "title": {"type": "string", "minLength": 1},
                                "summary": {"type": "string", "minLength": 1},
                                "keywords": strings(MAX_KEYWORDS),
                                "entities": strings(MAX_ENTITIES),
                                "questions": strings(MAX_QUESTIONS)
                            }
                        }
                    }
                }
            }
        }
    })
}

/// The answer's items if it fits the schema (one item per chunk), else what is wrong with it.
fn parse_answer(response: &ChatResponse, count: usize) -> Result<Vec<ChunkAnswer>, String> {
    if response.finish_reason == "length" {
        return Err("the answer was cut off at the token limit".to_owned());
    }
    let answer: Answer =
        serde_json::from_str(&response.content).map_err(|err| format!("not valid JSON for the schema: {err}"))?;
    if answer.chunks.len() != count {
        return Err(format!("{} items for {count} chunks", answer.chunks.len()));
    }
    for (i, item) in answer.chunks.iter().enumerate() {
        let problem = if item.title.trim().is_empty() {
            Some("an empty title".to_owned())
        } else if item.summary.trim().is_empty() {
            Some("an empty summary".to_owned())
        } else if item.keywords.len() > MAX_KEYWORDS {
            Some(format!("more than {MAX_KEYWORDS} keywords"))
        } else if item.entities.len() > MAX_ENTITIES {
            Some(format!("more than {MAX_ENTITIES} entities"))
        } else if item.questions.len() > MAX_QUESTIONS {
            Some(format!("more than {MAX_QUESTIONS} questions"))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(format!("chunk {} has {problem}", i + 1));
        }
    }
    Ok(answer.chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(content: &str) -> ChatResponse {
        ChatResponse { model: "m".into(), content: content.into(), finish_reason: "stop".into(), usage: None }
    }

    const GOOD: &str =
        r#"{"chunks":[{"title":"T","summary":"S","keywords":["k"],"entities":["Rust"],"questions":["Why?"]}]}"#;

    #[test]
    fn a_well_formed_answer_is_accepted() {
        let items = parse_answer(&response(GOOD), 1).unwrap();
        assert_eq!((items[0].title.as_str(), items[0].entities[0].as_str()), ("T", "Rust"));
    }

    #[test]
    fn answers_that_break_the_schema_are_rejected_with_the_reason() {
        let reason = |content: &str| parse_answer(&response(content), 1).unwrap_err();
        assert!(reason("not json").contains("not valid JSON"));
        assert!(reason(&GOOD[..40]).contains("not valid JSON"), "truncated");
        assert!(reason(r#"{"chunks":[]}"#).contains("0 items for 1 chunks"));
        assert!(reason(&GOOD.replace(r#""title":"T""#, r#""title":1"#)).contains("not valid JSON"));
        assert!(reason(&GOOD.replace(r#","questions":["Why?"]"#, "")).contains("missing field `questions`"));
        assert!(reason(&GOOD.replace(r#""title":"T""#, r#""title":"T","extra":1"#)).contains("unknown field"));
        assert!(reason(&GOOD.replace(r#""title":"T""#, r#""title":" ""#)).contains("empty title"));
        assert!(reason(&GOOD.replace(r#"["Why?"]"#, r#"["a","b","c","d"]"#)).contains("more than 3 questions"));
        let mut cut = response(GOOD);
        cut.finish_reason = "length".into();
        assert!(parse_answer(&cut, 1).unwrap_err().contains("token limit"));
    }

    #[test]
    fn the_prompt_carries_the_document_title_and_heading_paths() {
        let chunk = Chunk {
            text: "Each value has an owner.".into(),
            heading_path: vec!["Chapter 4".into(), "What is ownership?".into()],
            ..Default::default()
        };
        let group = Group { document_id: "book", document_title: "The Rust Book", job_id: "j", chunks: vec![&chunk] };
        let text = prompt(&group);
        assert!(text.contains("\"The Rust Book\""), "{text}");
        assert!(text.contains("Section: Chapter 4 > What is ownership?"), "{text}");
    }

    #[tokio::test]
    async fn stored_metadata_is_reused_only_from_the_same_kind_of_extractor() {
        let channel = Channel::from_static("http://127.0.0.1:1").connect_lazy();
        let extractor =
            LlmExtractor::new(channel, "gpt-4o-mini".into(), CircuitBreaker::new("test", Default::default()));
        assert!(extractor.accepts(&json!({"extractor": "llm", "model": "gpt-4o-mini-2024-07-18"})));
        assert!(!extractor.accepts(&json!({"extractor": "llm", "model": "other"})));
        assert!(!extractor.accepts(&json!({"extractor": "extractive"})));
        assert!(!extractor.accepts(&json!({"extractor": "extractive", "llm_error": "bad"})));
    }
}
