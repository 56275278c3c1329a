//! `POST /v1/chat/completions`: OpenAI's request and answer shapes around [`Gateway::chat`], and
//! with `"stream": true` around [`Gateway::chat_stream`], relayed as OpenAI's server-sent
//! events.
//!
//! A streamed answer waits for its first delta before sending the `200`: failures up to then
//! (a 429, an unreachable upstream, a stream cut off before any content) still answer with
//! their status and OpenAI's error body, which clients handle better than an error event. Once
//! the stream has begun, a failure becomes a last `data: {"error": …}` event without
//! `data: [DONE]`, which the OpenAI SDKs raise as an `APIError`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt as _};
use millrace_openai::{
    ApiError, ChatCompletionChunk, ChatCompletionResponse, Choice, ChunkChoice, Delta, ResponseMessage,
};
use serde_json::{Map, Value};

use millrace_auth::Caller;

use super::{NO_JOB, OpenAiError, field, field_at, finish, json_object, kind, unix_now, virtual_key};
use crate::core::Gateway;
use crate::error::UpstreamError;
use crate::key_limits::VirtualKey;
use crate::metrics;
use crate::upstream::{ChatAnswer, ChatCompletion, ChatDelta, ChatStream, Message, Usage};

const METHOD: &str = "openai_chat";
const STREAM_METHOD: &str = "openai_chat_stream";

pub(super) async fn completions(
    State(gateway): State<Arc<Gateway>>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let key = virtual_key(&caller);
    let request = match parse(body) {
        Ok(request) => request,
        Err(err) => return OpenAiError::from(err).into_response(),
    };
    if request.stream {
        return match stream(&gateway, request, key).await {
            Ok(response) => response,
            Err(err) => err.into_response(),
        };
    }
    match finish(METHOD, &key.id, gateway.chat(request.completion, NO_JOB, Some(&key)).await) {
        Ok(answer) => axum::Json(completion(answer)).into_response(),
        Err(err) => err.into_response(),
    }
}

/// What the gateway needs from an OpenAI chat request.
#[derive(Debug)]
struct ChatRequest {
    completion: ChatCompletion,
    stream: bool,
    include_usage: bool,
}

fn parse(body: Result<Bytes, BytesRejection>) -> Result<ChatRequest, ApiError> {
    let mut object = json_object(body)?;
    // Empty or absent: the gateway's default chat model.
    let model = field::<String>(&mut object, "model", "a string")?.unwrap_or_default();
    let messages = messages(object.remove("messages"))?;
    let response_format = match object.remove("response_format") {
        None | Some(Value::Null) => None,
        Some(format @ Value::Object(_)) => Some(format),
        Some(other) => return Err(ApiError::invalid_type("response_format", "an object", kind(&other))),
    };
    let temperature = field::<f32>(&mut object, "temperature", "a decimal")?;
    let max_completion_tokens = field::<u32>(&mut object, "max_completion_tokens", "a positive integer")?;
    let max_tokens = field::<u32>(&mut object, "max_tokens", "a positive integer")?;
    if field::<u32>(&mut object, "n", "a positive integer")?.is_some_and(|n| n != 1) {
        return Err(ApiError::unsupported("n", "Only one choice (n = 1) is supported by this gateway."));
    }
    let stream = field::<bool>(&mut object, "stream", "a boolean")?.unwrap_or(false);
    let include_usage = match field::<Map<String, Value>>(&mut object, "stream_options", "an object")? {
        None => false,
        Some(_) if !stream => {
            return Err(ApiError::invalid(
                "stream_options",
                "invalid_value",
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            ));
        }
        Some(mut options) => {
            field_at::<bool>(&mut options, "include_usage", "stream_options.include_usage", "a boolean")?
                .unwrap_or(false)
        }
    };
    Ok(ChatRequest {
        completion: ChatCompletion {
            model,
            messages,
            response_format,
            temperature,
            max_tokens: max_completion_tokens.or(max_tokens),
        },
        stream,
        include_usage,
    })
}

fn messages(raw: Option<Value>) -> Result<Vec<Message>, ApiError> {
    let raw = match raw {
        None | Some(Value::Null) => return Err(ApiError::missing("messages")),
        Some(Value::Array(raw)) => raw,
        Some(other) => return Err(ApiError::invalid_type("messages", "an array", kind(&other))),
    };
    if raw.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "empty_array",
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
        ));
    }
    raw.into_iter().enumerate().map(|(i, message)| self::message(&format!("messages[{i}]"), message)).collect()
}

fn message(param: &str, raw: Value) -> Result<Message, ApiError> {
    let mut raw = match raw {
        Value::Object(raw) => raw,
        other => return Err(ApiError::invalid_type(param, "an object", kind(&other))),
    };
    let role_param = format!("{param}.role");
    let role =
        field_at::<String>(&mut raw, "role", &role_param, "a string")?.ok_or_else(|| ApiError::missing(&role_param))?;
    let content_param = format!("{param}.content");
    let content = match raw.remove("content") {
        // An assistant turn that only called tools has no content.
        None | Some(Value::Null) if role == "assistant" => String::new(),
        None | Some(Value::Null) => return Err(ApiError::missing(&content_param)),
        Some(Value::String(text)) => text,
        Some(Value::Array(parts)) => {
            let texts = parts
                .into_iter()
                .enumerate()
                .map(|(j, part)| text_part(&format!("{content_param}[{j}]"), part))
                .collect::<Result<Vec<_>, _>>()?;
            texts.join("\n")
        }
        Some(other) => {
            return Err(ApiError::invalid_type(&content_param, "a string or an array of content parts", kind(&other)));
        }
    };
    Ok(Message { role, content })
}

/// The text of one `{"type": "text", "text": …}` part; the gateway's upstreams take text only.
fn text_part(param: &str, part: Value) -> Result<String, ApiError> {
    let mut part = match part {
        Value::Object(part) => part,
        other => return Err(ApiError::invalid_type(param, "an object", kind(&other))),
    };
    let type_param = format!("{param}.type");
    match field_at::<String>(&mut part, "type", &type_param, "a string")?.as_deref() {
        None => return Err(ApiError::missing(&type_param)),
        Some("text") => {}
        Some(other) => {
            let message = format!(
                "Invalid value for '{type_param}': only text content parts are supported by this gateway, but got '{other}'."
            );
            return Err(ApiError::invalid(type_param, "unsupported_value", message));
        }
    }
    let text_param = format!("{param}.text");
    field_at::<String>(&mut part, "text", &text_param, "a string")?.ok_or_else(|| ApiError::missing(&text_param))
}

/// OpenAI's `chat.completion` object for the gateway's answer.
fn completion(answer: ChatAnswer) -> ChatCompletionResponse {
    // The upstream layer reports a refusal as its text with finish reason "refusal"; OpenAI
    // puts the text in `refusal`, with no content, and finishes with "stop".
    let message = if answer.finish_reason == "refusal" {
        ResponseMessage::assistant(None, Some(answer.content))
    } else {
        ResponseMessage::assistant(Some(answer.content), None)
    };
    ChatCompletionResponse {
        id: completion_id(),
        object: ChatCompletionResponse::OBJECT,
        created: unix_now(),
        model: answer.model,
        choices: vec![Choice {
            index: 0,
            message,
            logprobs: None,
            finish_reason: Some(openai_finish_reason(answer.finish_reason)),
        }],
        usage: Some(wire_usage(answer.usage)),
        system_fingerprint: None,
    }
}

fn wire_usage(usage: Usage) -> millrace_openai::Usage {
    millrace_openai::Usage {
        prompt_tokens: usage.prompt_tokens.into(),
        completion_tokens: usage.completion_tokens.into(),
        total_tokens: usage.total_tokens.into(),
    }
}

fn completion_id() -> String {
    format!("chatcmpl-{:032x}", rand::random::<u128>())
}

fn openai_finish_reason(reason: String) -> String {
    if reason == "refusal" { "stop".to_owned() } else { reason }
}

async fn stream(gateway: &Gateway, request: ChatRequest, key: VirtualKey) -> Result<Response, OpenAiError> {
    let failed = |err| super::failed(STREAM_METHOD, &key.id, err);
    let mut upstream = gateway.chat_stream(request.completion, NO_JOB, Some(&key)).await.map_err(failed)?;
    let first = match upstream.next().await {
        Some(Ok(delta)) => delta,
        Some(Err(err)) => return Err(failed(err)),
        None => return Err(failed(UpstreamError::InvalidResponse("the stream ended before any content".to_owned()))),
    };
    let relay = Relay::new(first, upstream, request.include_usage, key.id);
    let events = relay.events().map(|data| Ok::<_, Infallible>(Event::default().data(data)));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

/// Turns the gateway's deltas into the `data:` payloads of OpenAI's chunks: the role first, then
/// content, one finish chunk, the usage chunk if asked for, and `[DONE]`.
struct Relay {
    upstream: ChatStream,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    key_id: String,
    usage: Option<Usage>,
    finish_sent: bool,
    ready: VecDeque<String>,
    ended: bool,
}

impl Relay {
    fn new(first: ChatDelta, upstream: ChatStream, include_usage: bool, key_id: String) -> Self {
        let mut relay = Self {
            upstream,
            id: completion_id(),
            created: unix_now(),
            model: first.model.clone(),
            include_usage,
            key_id,
            usage: None,
            finish_sent: false,
            ready: VecDeque::new(),
            ended: false,
        };
        relay.push_chunk(Delta::start(), None);
        relay.push_delta(first);
        relay
    }

    fn events(self) -> impl Stream<Item = String> + Send {
        futures::stream::unfold(self, |mut relay| async move {
            loop {
                if let Some(data) = relay.ready.pop_front() {
                    return Some((data, relay));
                }
                if relay.ended {
                    return None;
                }
                match relay.upstream.next().await {
                    Some(Ok(delta)) => relay.push_delta(delta),
                    Some(Err(err)) => relay.push_error(err),
                    None => relay.push_end(),
                }
            }
        })
    }

    fn push_chunk(&mut self, delta: Delta, finish_reason: Option<String>) {
        let choices = vec![ChunkChoice::new(0, delta, finish_reason)];
        // As OpenAI: with usage asked for, every chunk carries `"usage": null` but the last.
        let chunk = ChatCompletionChunk::new(&self.id, self.created, &self.model, choices, self.include_usage);
        self.ready.push_back(chunk.to_data());
    }

    fn push_delta(&mut self, delta: ChatDelta) {
        if !delta.content.is_empty() {
            self.push_chunk(Delta::content(delta.content), None);
        }
        if let Some(reason) = delta.finish_reason
            && !self.finish_sent
        {
            self.finish_sent = true;
            self.push_chunk(Delta::default(), Some(openai_finish_reason(reason)));
        }
        if delta.usage.is_some() {
            self.usage = delta.usage;
        }
    }

    fn push_end(&mut self) {
        if !self.finish_sent {
            self.finish_sent = true;
            self.push_chunk(Delta::default(), Some("stop".to_owned()));
        }
        if self.include_usage
            && let Some(usage) = self.usage
        {
            let last = ChatCompletionChunk::usage(&self.id, self.created, &self.model, wire_usage(usage));
            self.ready.push_back(last.to_data());
        }
        self.ready.push_back("[DONE]".to_owned());
        self.ended = true;
        metrics::call(STREAM_METHOD, "ok");
    }

    fn push_error(&mut self, err: UpstreamError) {
        let answer = super::failed(STREAM_METHOD, &self.key_id, err);
        self.ready.push_back(answer.body().to_string());
        self.ended = true;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse_json(body: Value) -> Result<ChatRequest, ApiError> {
        parse(Ok(Bytes::from(body.to_string())))
    }

    #[test]
    fn an_openai_request_becomes_a_completion() {
        let request = parse_json(json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "world"}]},
                {"role": "assistant", "content": null, "tool_calls": []}
            ],
            "temperature": 0.5,
            "max_completion_tokens": 20,
            "max_tokens": 99,
            "response_format": {"type": "json_object"},
            "stream": true,
            "stream_options": {"include_usage": true},
            "seed": 3,
            "user": "someone"
        }))
        .unwrap();
        let completion = request.completion;
        assert_eq!(completion.model, "gpt-4o-mini");
        assert_eq!(completion.messages[1], Message { role: "user".into(), content: "Hello\nworld".into() });
        assert_eq!(completion.messages[2].content, "");
        assert_eq!(completion.temperature, Some(0.5));
        assert_eq!(completion.max_tokens, Some(20), "max_completion_tokens wins");
        assert_eq!(completion.response_format, Some(json!({"type": "json_object"})));
        assert!(request.stream && request.include_usage);

        let request = parse_json(json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 7})).unwrap();
        assert_eq!(request.completion.model, "", "the gateway fills in its default");
        assert_eq!(request.completion.max_tokens, Some(7));
        assert!(!request.stream && !request.include_usage);
    }

    #[test]
    fn bad_requests_name_the_field() {
        let cases = [
            (json!({"model": "m"}), "messages", "missing_required_parameter"),
            (json!({"model": "m", "messages": "hi"}), "messages", "invalid_type"),
            (json!({"model": "m", "messages": []}), "messages", "empty_array"),
            (json!({"model": 5, "messages": [{"role": "user", "content": "x"}]}), "model", "invalid_type"),
            (json!({"messages": [{"content": "x"}]}), "messages[0].role", "missing_required_parameter"),
            (json!({"messages": [{"role": "user"}]}), "messages[0].content", "missing_required_parameter"),
            (json!({"messages": [{"role": "user", "content": 3}]}), "messages[0].content", "invalid_type"),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}),
                "messages[0].content[0].type",
                "unsupported_value",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}),
                "temperature",
                "invalid_type",
            ),
            (json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}), "max_tokens", "invalid_type"),
            (json!({"messages": [{"role": "user", "content": "x"}], "n": 2}), "n", "unsupported_parameter"),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "response_format": "json"}),
                "response_format",
                "invalid_type",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": true}}),
                "stream_options",
                "invalid_value",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "stream": true, "stream_options": {"include_usage": "yes"}}),
                "stream_options.include_usage",
                "invalid_type",
            ),
        ];
        for (body, param, code) in cases {
            let err = parse_json(body.clone()).unwrap_err();
            assert_eq!(err.status, 400, "{body}");
            assert_eq!(err.param.as_deref(), Some(param), "{body}: {}", err.message);
            assert_eq!(err.code, Some(code), "{body}");
            assert!(err.message.contains(param), "{body}: {}", err.message);
        }
    }

    #[test]
    fn a_refusal_is_answered_in_openais_refusal_field() {
        let answer = ChatAnswer {
            model: "m".into(),
            content: "I can't help with that.".into(),
            finish_reason: "refusal".into(),
            usage: Usage::default(),
        };
        let body = serde_json::to_value(completion(answer)).unwrap();
        let choice = &body["choices"][0];
        assert_eq!(
            choice["message"],
            json!({"role": "assistant", "content": null, "refusal": "I can't help with that."})
        );
        assert_eq!(choice["finish_reason"], "stop");
        assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    }

    fn delta(content: &str) -> ChatDelta {
        ChatDelta { model: "m-1".into(), content: content.into(), ..Default::default() }
    }

    async fn relay(items: Vec<Result<ChatDelta, UpstreamError>>, include_usage: bool) -> Vec<String> {
        let mut items = items.into_iter();
        let first = items.next().unwrap().unwrap();
        let rest: ChatStream = Box::pin(futures::stream::iter(items.collect::<Vec<_>>()));
        Relay::new(first, rest, include_usage, "job".into()).events().collect().await
    }

    fn parsed(events: &[String]) -> Vec<Value> {
        events.iter().filter(|e| *e != "[DONE]").map(|e| serde_json::from_str(e).unwrap()).collect()
    }

    #[tokio::test]
    async fn deltas_are_relayed_as_openai_chunks() {
        let usage = Usage { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 };
        let items = vec![
            Ok(delta("Hello")),
            Ok(delta(", world")),
            Ok(ChatDelta { finish_reason: Some("length".into()), ..delta("") }),
            Ok(ChatDelta { usage: Some(usage), ..delta("") }),
        ];
        let events = relay(items.clone(), false).await;
        assert_eq!(events.last().unwrap(), "[DONE]");
        let chunks = parsed(&events);
        assert_eq!(chunks.len(), 4);
        assert_eq!(chunks[0]["choices"][0]["delta"], json!({"role": "assistant", "content": "", "refusal": null}));
        assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Hello");
        assert_eq!(chunks[2]["choices"][0]["delta"]["content"], ", world");
        assert_eq!(chunks[3]["choices"][0]["finish_reason"], "length");
        assert!(chunks.iter().all(|c| c["id"] == chunks[0]["id"] && c["model"] == "m-1" && c.get("usage").is_none()));
        assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));

        let events = relay(items, true).await;
        let chunks = parsed(&events);
        assert_eq!(chunks.len(), 5);
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"], json!({"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}));
        assert!(chunks[..4].iter().all(|c| c["usage"].is_null() && c.get("usage").is_some()));
    }

    #[tokio::test]
    async fn a_stream_without_a_finish_reason_still_gets_one() {
        let chunks = parsed(&relay(vec![Ok(delta("Hi"))], true).await);
        assert_eq!(chunks.len(), 3, "role, content, finish; no usage chunk without usage");
        assert_eq!(chunks[2]["choices"][0]["finish_reason"], "stop");
    }

    #[tokio::test]
    async fn a_failure_part_way_ends_with_an_error_event_and_no_done() {
        let items = vec![Ok(delta("Hel")), Err(UpstreamError::InvalidResponse("stream truncated: cut".into()))];
        let events = relay(items, true).await;
        assert!(!events.contains(&"[DONE]".to_owned()));
        let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
        assert_eq!(last["error"]["type"], "server_error");
        assert!(last["error"]["message"].as_str().unwrap().contains("truncated"));
    }
}
