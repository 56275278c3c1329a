//! `POST /v1/chat/completions`: deterministic answers in OpenAI's response shape — plain text,
//! a small JSON object, or (with a `json_schema` response format) a JSON document built to
//! validate against the caller's schema from the words of the last user message.
//!
//! With `"stream": true` the same answer goes out as server-sent events, as OpenAI sends them:
//! a first chunk with the assistant role, the content a few words per chunk, a chunk with the
//! finish reason, a usage chunk (`"choices": []`) if `stream_options.include_usage` asked for
//! it, then `data: [DONE]`. Its tokens are counted before the first byte, so quotas charge a
//! streamed answer exactly as the same answer unstreamed.
//!
//! Prompt tokens are approximated per message as ceil(chars / 4) of its text plus 4 for the role
//! and framing, plus 3 priming the reply (the shape of OpenAI's own counting recipe);
//! completion tokens as ceil(chars / 4) of the answer.

use millrace_encoder::hashing::words;
use millrace_openai::{
    ApiError, ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, Choice, ChunkChoice, Delta,
    ResponseMessage, Usage,
};
use serde_json::{Value, json};

use crate::{Answer, Body, approx_tokens, schema, unix_ms};

const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool", "function"];
const TOKENS_PER_MESSAGE: u64 = 4;
const TOKENS_PRIMING_REPLY: u64 = 3;
const MAX_CHOICES: u32 = 8;
/// Words per streamed content chunk, and the longest chunk in bytes (JSON has few spaces).
const WORDS_PER_CHUNK: usize = 3;
const MAX_CHUNK_BYTES: usize = 24;

enum Format {
    Text,
    JsonObject,
    JsonSchema(Value),
}

struct Message {
    role: String,
    text: String,
}

/// The whole answer to one request body; `request_number` makes the completion id unique, and
/// `malformed` cuts a JSON answer off half-way (a fault injected by `--malformed-json-rate`).
pub(crate) fn answer(body: &[u8], request_number: u64, malformed: bool) -> Result<Answer, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(ApiError::unparsable_json)?;
    let request: ChatCompletionRequest<Value> = serde_json::from_value(value)
        .map_err(|err| ApiError::invalid("", "invalid_type", format!("Invalid request body: {err}")))?;
    let model = request.model.filter(|m| !m.is_empty()).ok_or_else(|| ApiError::missing("model"))?;
    let messages = messages(request.messages)?;
    let stream = request.stream == Some(true);
    if request.stream_options.is_some() && !stream {
        return Err(ApiError::invalid(
            "stream_options",
            "invalid_value",
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
        ));
    }
    let include_usage = request.stream_options.and_then(|o| o.include_usage).unwrap_or(false);
    if let Some(t) = request.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(ApiError::invalid(
            "temperature",
            "invalid_value",
            format!("Invalid 'temperature': {t}. Expected a value between 0 and 2."),
        ));
    }
    let limit = match (request.max_completion_tokens, request.max_tokens) {
        (Some(0), _) => return Err(below_one("max_completion_tokens")),
        (None, Some(0)) => return Err(below_one("max_tokens")),
        (limit, other) => limit.or(other),
    };
    let choices = match request.n {
        None => 1,
        Some(n) if (1..=u64::from(MAX_CHOICES)).contains(&n) => u32::try_from(n).unwrap_or(MAX_CHOICES),
        Some(n) => {
            return Err(ApiError::invalid(
                "n",
                "invalid_value",
                format!("Invalid 'n': {n}. Expected a value between 1 and {MAX_CHOICES}."),
            ));
        }
    };
    let format = format(request.response_format)?;
    if matches!(format, Format::JsonObject) && !messages.iter().any(|m| m.text.to_lowercase().contains("json")) {
        return Err(ApiError::invalid(
            "messages",
            "invalid_value",
            "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.",
        ));
    }

    let prompt_words = prompt_words(&messages);
    let mut content = match &format {
        Format::Text => {
            let start: Vec<&str> = prompt_words.iter().take(12).map(String::as_str).collect();
            format!("This is a fake answer from millrace-fake-openai about \"{}\".", start.join(" "))
        }
        Format::JsonObject => {
            let shape = json!({"type": "object", "properties": {
                "title": {"type": "string"}, "summary": {"type": "string"}, "word_count": {"type": "integer"}
            }});
            schema::generate(&shape, &prompt_words).to_string()
        }
        Format::JsonSchema(shape) => schema::generate(shape, &prompt_words).to_string(),
    };
    if malformed && !matches!(format, Format::Text) {
        let half = content.chars().count() / 2;
        content = content.chars().take(half.max(1)).collect();
    }
    let mut finish_reason = "stop";
    if let Some(limit) = limit
        && approx_tokens(&content) > limit
    {
        // What a real model does at the limit: stop mid-answer, even mid-JSON.
        content = content.chars().take((limit * 4) as usize).collect();
        finish_reason = "length";
    }

    let prompt_tokens =
        messages.iter().map(|m| approx_tokens(&m.text) + TOKENS_PER_MESSAGE).sum::<u64>() + TOKENS_PRIMING_REPLY;
    let completion_tokens = approx_tokens(&content) * u64::from(choices);
    let usage = Usage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens };
    let id = format!("chatcmpl-fake{request_number:012x}");
    let created = unix_ms() / 1000;
    let body = if stream {
        let reply = Reply { id: &id, created, model: &model, choices, content: &content, finish_reason };
        events(&reply, usage, include_usage)
    } else {
        let response = ChatCompletionResponse {
            id,
            object: ChatCompletionResponse::OBJECT,
            created,
            model: model.clone(),
            choices: (0..choices)
                .map(|index| Choice {
                    index,
                    message: ResponseMessage::assistant(Some(content.clone()), None),
                    logprobs: None,
                    finish_reason: Some(finish_reason.to_owned()),
                })
                .collect(),
            usage: Some(usage),
            system_fingerprint: Some(SYSTEM_FINGERPRINT.to_owned()),
        };
        Body::Json(serde_json::to_vec(&response).map_err(internal)?)
    };
    Ok(Answer { body, model, usage: crate::Usage { prompt_tokens, completion_tokens }, inputs: 1 })
}

const SYSTEM_FINGERPRINT: &str = "fp_millrace_fake";

fn internal(err: serde_json::Error) -> ApiError {
    ApiError::invalid("", "internal", err.to_string())
}

/// What every chunk of one streamed answer shares.
struct Reply<'a> {
    id: &'a str,
    created: u64,
    model: &'a str,
    choices: u32,
    content: &'a str,
    finish_reason: &'static str,
}

/// The streamed answer as the `data:` payloads of its events, `[DONE]` last. A truncated stream
/// keeps the role chunks and half of the content chunks.
fn events(reply: &Reply<'_>, usage: Usage, include_usage: bool) -> Body {
    // OpenAI sends `"usage": null` on every chunk but the last when usage was asked for.
    let chunk = |index: u32, delta: Delta, finish_reason: Option<&str>| {
        let choices = vec![ChunkChoice::new(index, delta, finish_reason.map(str::to_owned))];
        ChatCompletionChunk::new(reply.id, reply.created, reply.model, choices, include_usage)
            .with_system_fingerprint(SYSTEM_FINGERPRINT)
            .to_data()
    };
    let pieces = pieces(reply.content);
    let mut events = Vec::with_capacity((pieces.len() + 2) * reply.choices as usize + 2);
    for index in 0..reply.choices {
        events.push(chunk(index, Delta::start(), None));
    }
    for piece in &pieces {
        for index in 0..reply.choices {
            events.push(chunk(index, Delta::content(*piece), None));
        }
    }
    let cut = reply.choices as usize * (1 + pieces.len() / 2);
    for index in 0..reply.choices {
        events.push(chunk(index, Delta::default(), Some(reply.finish_reason)));
    }
    if include_usage {
        let last = ChatCompletionChunk::usage(reply.id, reply.created, reply.model, usage);
        events.push(last.with_system_fingerprint(SYSTEM_FINGERPRINT).to_data());
    }
    events.push("[DONE]".to_owned());
    Body::Events { events, cut }
}

/// The content in pieces of a few words (at most [`MAX_CHUNK_BYTES`] each) that concatenate back
/// to it exactly, whitespace included.
fn pieces(content: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let (mut start, mut words, mut in_space) = (0, 0, false);
    for (i, c) in content.char_indices() {
        let space = c.is_whitespace();
        if space && !in_space && i > start {
            words += 1;
        }
        let word_starts = !space && in_space;
        if i > start && ((word_starts && words >= WORDS_PER_CHUNK) || i - start >= MAX_CHUNK_BYTES) {
            pieces.push(&content[start..i]);
            start = i;
            words = 0;
        }
        in_space = space;
    }
    if start < content.len() {
        pieces.push(&content[start..]);
    }
    pieces
}

fn below_one(param: &str) -> ApiError {
    ApiError::invalid(
        param,
        "integer_below_min_value",
        format!("Invalid '{param}': integer below minimum value. Expected a value >= 1, but got 0 instead."),
    )
}

fn messages(raw: Option<Vec<Value>>) -> Result<Vec<Message>, ApiError> {
    let raw = raw.ok_or_else(|| ApiError::missing("messages"))?;
    if raw.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "empty_array",
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
        ));
    }
    raw.iter()
        .enumerate()
        .map(|(i, message)| {
            let param = format!("messages[{i}]");
            let Some(message) = message.as_object() else {
                return Err(ApiError::invalid(
                    &param,
                    "invalid_type",
                    format!("Invalid type for '{param}': expected an object."),
                ));
            };
            let role = match message.get("role") {
                None | Some(Value::Null) => return Err(ApiError::missing(&format!("{param}.role"))),
                Some(Value::String(role)) if ROLES.contains(&role.as_str()) => role.clone(),
                Some(other) => {
                    return Err(ApiError::invalid(
                        format!("{param}.role"),
                        "invalid_value",
                        format!("Invalid value: {other}. Supported values are: {}.", ROLES.join(", ")),
                    ));
                }
            };
            let text = match message.get("content") {
                // An assistant turn that only called tools has no content.
                None | Some(Value::Null) if role == "assistant" => String::new(),
                None | Some(Value::Null) => return Err(ApiError::missing(&format!("{param}.content"))),
                Some(Value::String(text)) => text.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(|part| part.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n"),
                Some(_) => {
                    return Err(ApiError::invalid(
                        format!("{param}.content"),
                        "invalid_type",
                        format!("Invalid type for '{param}.content': expected a string or an array of content parts."),
                    ));
                }
            };
            Ok(Message { role, text })
        })
        .collect()
}

fn format(raw: Option<Value>) -> Result<Format, ApiError> {
    let raw = match raw {
        None | Some(Value::Null) => return Ok(Format::Text),
        Some(Value::Object(raw)) => raw,
        Some(_) => {
            return Err(ApiError::invalid(
                "response_format",
                "invalid_type",
                "Invalid type for 'response_format': expected an object.",
            ));
        }
    };
    match raw.get("type").and_then(Value::as_str) {
        None => Err(ApiError::missing("response_format.type")),
        Some("text") => Ok(Format::Text),
        Some("json_object") => Ok(Format::JsonObject),
        Some("json_schema") => {
            let spec = raw
                .get("json_schema")
                .and_then(Value::as_object)
                .ok_or_else(|| ApiError::missing("response_format.json_schema"))?;
            if spec.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err(ApiError::missing("response_format.json_schema.name"));
            }
            Ok(Format::JsonSchema(spec.get("schema").cloned().unwrap_or_else(|| json!({"type": "object"}))))
        }
        Some(other) => Err(ApiError::invalid(
            "response_format.type",
            "invalid_value",
            format!("Invalid value: '{other}'. Supported values are: 'json_object', 'json_schema', and 'text'."),
        )),
    }
}

/// The words the answer is about: the last user message's, else every message's.
fn prompt_words(messages: &[Message]) -> Vec<String> {
    let last_user = messages.iter().rev().find(|m| m.role == "user").map(|m| words(&m.text).collect::<Vec<_>>());
    let chosen = match last_user {
        Some(found) if !found.is_empty() => found,
        _ => messages.iter().flat_map(|m| words(&m.text)).collect(),
    };
    chosen.into_iter().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_a_few_words_and_concatenate_back_exactly() {
        let text = "This is a fake answer from  millrace-fake-openai about \"rivers\".\nNew line ✓ ünï";
        let pieces = pieces(text);
        assert_eq!(pieces.concat(), text);
        assert!(pieces.len() > 3, "{pieces:?}");
        assert!(pieces.iter().all(|p| p.len() <= MAX_CHUNK_BYTES + 4), "{pieces:?}");
        assert_eq!(pieces[0], "This is a ");

        let json = r#"{"title":"Consumer Groups Share A Stream","keywords":["consumer","groups"]}"#;
        let pieces = super::pieces(json);
        assert_eq!(pieces.concat(), json);
        assert!(pieces.len() > 2);
        assert!(super::pieces("").is_empty());
        assert_eq!(super::pieces("   "), vec!["   "]);
    }
}
