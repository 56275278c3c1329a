//! An OpenAI-compatible HTTP API (OpenAI itself, vLLM, Ollama, LiteLLM, the project's fake):
//! `POST {base}/chat/completions`, `POST {base}/embeddings`, `GET {base}/models`, where the
//! base URL includes the version path (`…/v1`), as the OpenAI SDKs take it.
//!
//! Streamed chat answers arrive as server-sent events (`data: {chunk}` … `data: [DONE]`). The
//! SSE framing is decoded here by hand ([`SseDecoder`]): it is a few lines of the WHATWG
//! format, and owning it lets a cut-off or garbled stream end in one clear error item instead
//! of a library's generic one.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use millrace_openai::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ChatMessage, EmbeddingsRequest,
    EmbeddingsResponse, ErrorBody, StreamOptions,
};
use millrace_resilience::retry::parse_retry_after;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::{ChatAnswer, ChatCompletion, ChatDelta, ChatStream, EmbeddingAnswer, Upstream, Usage};
use crate::config::{ApiKey, UpstreamConfig};
use crate::error::UpstreamError;
use crate::metrics;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// How much of an unreadable error body to quote.
const MAX_QUOTED_BODY: usize = 300;
/// The longest SSE line accepted; a longer one means the body is not the event stream it claims.
const MAX_SSE_LINE_BYTES: usize = 4 * 1024 * 1024;

pub struct OpenAiUpstream {
    /// The upstream's configured name, the `upstream` label of its metrics.
    name: String,
    client: reqwest::Client,
    base_url: String,
    api_key: Option<ApiKey>,
}

impl OpenAiUpstream {
    pub fn new(config: &UpstreamConfig) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("millrace-llm-gateway/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            name: config.name.clone(),
            client,
            base_url: config.base_url.clone(),
            api_key: config.api_key.clone(),
        })
    }

    fn authorized(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.api_key {
            // reqwest marks the header sensitive, so it is redacted from its own debug output too.
            Some(key) => request.bearer_auth(key.expose()),
            None => request,
        }
    }

    async fn post<B: Serialize + Sync, R: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        body: &B,
        timeout: Duration,
    ) -> Result<R, UpstreamError> {
        let (response, started) = self.send(endpoint, body, timeout).await?;
        let status = response.status();
        let body = response.json::<R>().await;
        metrics::upstream_request(&self.name, endpoint, status.as_u16().to_string(), started.elapsed());
        body.map_err(|err| read_error(&err, timeout))
    }

    /// Sends one request and returns a success response with its body unread (and when the
    /// request started); failures are counted in the metrics here.
    async fn send<B: Serialize + Sync>(
        &self,
        endpoint: &'static str,
        body: &B,
        timeout: Duration,
    ) -> Result<(Response, Instant), UpstreamError> {
        let url = format!("{}/{}", self.base_url, path(endpoint));
        let request = self.authorized(self.client.post(url).timeout(timeout).json(body));
        let started = Instant::now();
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => {
                let error = transport_error(&err, timeout);
                let label = if matches!(error, UpstreamError::Timeout(_)) { "timeout" } else { "connect_error" };
                metrics::upstream_request(&self.name, endpoint, label.to_owned(), started.elapsed());
                return Err(error);
            }
        };
        let status = response.status();
        if status.is_success() {
            return Ok((response, started));
        }
        let retry_after = retry_after(response.headers());
        let text = response.text().await.unwrap_or_default();
        metrics::upstream_request(&self.name, endpoint, status.as_u16().to_string(), started.elapsed());
        Err(status_error(status, retry_after, &text))
    }
}

fn path(endpoint: &str) -> &str {
    match endpoint {
        "chat" | "chat_stream" => "chat/completions",
        other => other,
    }
}

fn transport_error(err: &reqwest::Error, timeout: Duration) -> UpstreamError {
    if err.is_timeout() { UpstreamError::Timeout(timeout) } else { UpstreamError::Connect(with_causes(err)) }
}

/// reqwest's own message is generic ("error sending request"); the causes say what failed.
fn with_causes(err: &reqwest::Error) -> String {
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    message
}

/// A failure while reading a success answer's body.
fn read_error(err: &reqwest::Error, timeout: Duration) -> UpstreamError {
    if err.is_decode() { UpstreamError::InvalidResponse(err.to_string()) } else { transport_error(err, timeout) }
}

/// The error for a non-success answer, with the upstream's own message when it sent one.
fn status_error(status: StatusCode, retry_after: Option<Duration>, body: &str) -> UpstreamError {
    let (message, code) = error_message(body);
    let message = if message.is_empty() { status.to_string() } else { message };
    match status.as_u16() {
        429 => UpstreamError::RateLimited {
            retryable: code.as_deref() != Some("insufficient_quota"),
            message,
            retry_after,
        },
        // 408 and 409 are what the OpenAI SDKs retry besides 429 and 5xx.
        408 | 409 | 500..=599 => UpstreamError::Server { status: status.as_u16(), message },
        other => UpstreamError::Rejected { status: other, message },
    }
}

/// OpenAI's `{"error":{"message","code"}}`, else the start of whatever the body was.
fn error_message(body: &str) -> (String, Option<String>) {
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(parsed) => (parsed.error.message, parsed.error.code),
        Err(_) => (body.trim().chars().take(MAX_QUOTED_BODY).collect(), None),
    }
}

/// `retry-after-ms` (OpenAI's), else `Retry-After` in seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) =
        text("retry-after-ms").and_then(|v| v.parse::<f64>().ok()).filter(|ms| ms.is_finite() && *ms >= 0.0)
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    parse_retry_after(text(RETRY_AFTER.as_str())?, SystemTime::now())
}

fn chat_body(request: &ChatCompletion, stream: bool) -> ChatCompletionRequest {
    ChatCompletionRequest {
        model: Some(request.model.clone()),
        messages: Some(
            request.messages.iter().map(|m| ChatMessage { role: m.role.clone(), content: m.content.clone() }).collect(),
        ),
        temperature: request.temperature.map(wire_f64),
        max_tokens: request.max_tokens.map(u64::from),
        response_format: request.response_format.clone(),
        stream: stream.then_some(true),
        // Asked for whenever streaming, so the gateway can account for the tokens.
        stream_options: stream.then_some(StreamOptions { include_usage: Some(true) }),
        ..ChatCompletionRequest::default()
    }
}

/// The `f64` whose JSON is the `f32`'s (`0.7`, not `0.699999988079071`): the upstream gets the
/// number the caller wrote.
fn wire_f64(value: f32) -> f64 {
    value.to_string().parse().unwrap_or(f64::from(value))
}

fn usage(usage: millrace_openai::Usage) -> Usage {
    let narrow = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    Usage {
        prompt_tokens: narrow(usage.prompt_tokens),
        completion_tokens: narrow(usage.completion_tokens),
        total_tokens: narrow(usage.total_tokens.max(usage.prompt_tokens + usage.completion_tokens)),
    }
}

fn chat_answer(reply: ChatCompletionResponse, requested_model: &str) -> Result<ChatAnswer, UpstreamError> {
    let choice = reply
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| UpstreamError::InvalidResponse("no choices in the answer".to_owned()))?;
    let (content, finish_reason) = match (choice.message.content, choice.message.refusal) {
        (Some(content), _) => (content, choice.finish_reason.unwrap_or_else(|| "stop".to_owned())),
        // A refusal has no content; say so where callers look.
        (None, Some(refusal)) => (refusal, "refusal".to_owned()),
        (None, None) => (String::new(), choice.finish_reason.unwrap_or_else(|| "stop".to_owned())),
    };
    let model = if reply.model.is_empty() { requested_model.to_owned() } else { reply.model };
    Ok(ChatAnswer { model, content, finish_reason, usage: usage(reply.usage.unwrap_or_default()) })
}

/// Reads `response`'s event stream into deltas until `[DONE]`, the end of the body, a failure or
/// `deadline`.
fn sse_stream(response: Response, events: ChatEvents, deadline: Instant, timeout: Duration) -> ChatStream {
    struct Reading {
        response: Response,
        events: ChatEvents,
        ready: VecDeque<Result<ChatDelta, UpstreamError>>,
    }
    let reading = Reading { response, events, ready: VecDeque::new() };
    Box::pin(futures::stream::unfold(reading, move |mut reading| async move {
        loop {
            if let Some(item) = reading.ready.pop_front() {
                return Some((item, reading));
            }
            if !reading.events.is_open() {
                return None;
            }
            match tokio::time::timeout_at(deadline, reading.response.chunk()).await {
                Ok(Ok(Some(bytes))) => reading.ready.extend(reading.events.feed(&bytes)),
                Ok(Ok(None)) => reading.ready.extend(reading.events.end()),
                Ok(Err(err)) => {
                    let error =
                        if err.is_timeout() { UpstreamError::Timeout(timeout) } else { truncated(&with_causes(&err)) };
                    reading.ready.extend(reading.events.fail(error));
                }
                Err(_) => reading.ready.extend(reading.events.fail(UpstreamError::Timeout(timeout))),
            }
        }
    }))
}

/// The server-sent events framing (WHATWG HTML, "Parsing an event stream"), reduced to what
/// OpenAI-compatible APIs use: `data:` lines joined into one payload per event, ended by a blank
/// line; comments (`: keep-alive`) and other fields ignored; lines ended by LF, CRLF or CR, which
/// may fall anywhere across the chunks the network delivers.
#[derive(Default)]
struct SseDecoder {
    line: Vec<u8>,
    data: Option<String>,
    /// The last chunk ended in CR: a LF starting the next one belongs to the same line end.
    after_cr: bool,
}

impl SseDecoder {
    /// The payloads of the events `bytes` completes.
    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<String>, String> {
        let mut events = Vec::new();
        for &byte in bytes {
            let after_cr = std::mem::take(&mut self.after_cr);
            match byte {
                b'\n' if after_cr => {}
                b'\n' => self.end_line(&mut events)?,
                b'\r' => {
                    self.end_line(&mut events)?;
                    self.after_cr = true;
                }
                _ if self.line.len() >= MAX_SSE_LINE_BYTES => {
                    return Err(format!("an event stream line longer than {MAX_SSE_LINE_BYTES} bytes"));
                }
                _ => self.line.push(byte),
            }
        }
        Ok(events)
    }

    /// At the end of the body: the payload of an event left without its blank line, if any
    /// (the format says to drop it; servers that end on `data: [DONE]` alone are common enough
    /// to be taken at their word).
    fn finish(&mut self) -> Result<Option<String>, String> {
        let mut events = Vec::new();
        if !self.line.is_empty() {
            self.end_line(&mut events)?;
        }
        self.end_line(&mut events)?;
        Ok(events.pop())
    }

    fn end_line(&mut self, events: &mut Vec<String>) -> Result<(), String> {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            events.extend(self.data.take());
            return Ok(());
        }
        let line = String::from_utf8(line).map_err(|_| "an event stream line that is not UTF-8".to_owned())?;
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = line.split_once(':').unwrap_or((&line, ""));
        if field == "data" {
            let value = value.strip_prefix(' ').unwrap_or(value);
            match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            }
        }
        Ok(())
    }
}

/// The chat completion chunks of an event stream, as deltas: stops at `[DONE]`, and turns a body
/// that ends early or carries something unreadable into one final error.
struct ChatEvents {
    decoder: SseDecoder,
    requested_model: String,
    /// The answer so far is a refusal (streamed in `delta.refusal`).
    refusing: bool,
    state: EventsState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventsState {
    Open,
    Done,
    Failed,
}

impl ChatEvents {
    fn new(requested_model: &str) -> Self {
        Self {
            decoder: SseDecoder::default(),
            requested_model: requested_model.to_owned(),
            refusing: false,
            state: EventsState::Open,
        }
    }

    fn is_open(&self) -> bool {
        self.state == EventsState::Open
    }

    /// The deltas (and at most one error, last) that `bytes` completes.
    fn feed(&mut self, bytes: &[u8]) -> Vec<Result<ChatDelta, UpstreamError>> {
        if !self.is_open() {
            return Vec::new();
        }
        match self.decoder.feed(bytes) {
            Ok(payloads) => self.payloads(payloads),
            Err(reason) => self.fail(truncated(&reason)),
        }
    }

    /// The end of the body: fine after `[DONE]`, else the stream was cut off.
    fn end(&mut self) -> Vec<Result<ChatDelta, UpstreamError>> {
        if !self.is_open() {
            return Vec::new();
        }
        let mut items = match self.decoder.finish() {
            Ok(last) => self.payloads(last.into_iter().collect()),
            Err(reason) => return self.fail(truncated(&reason)),
        };
        if self.is_open() {
            items.extend(self.fail(truncated("the body ended without `data: [DONE]`")));
        }
        items
    }

    /// Ends the stream with `error`.
    fn fail(&mut self, error: UpstreamError) -> Vec<Result<ChatDelta, UpstreamError>> {
        if !self.is_open() {
            return Vec::new();
        }
        self.state = EventsState::Failed;
        vec![Err(error)]
    }

    fn payloads(&mut self, payloads: Vec<String>) -> Vec<Result<ChatDelta, UpstreamError>> {
        let mut items = Vec::new();
        for payload in payloads {
            if payload.trim() == "[DONE]" {
                self.state = EventsState::Done;
                break;
            }
            match self.delta(&payload) {
                Ok(Some(delta)) => items.push(Ok(delta)),
                Ok(None) => {}
                Err(error) => {
                    items.extend(self.fail(error));
                    break;
                }
            }
        }
        items
    }

    /// One chunk's delta; None for a chunk that carries nothing (the role-only first chunk).
    fn delta(&mut self, payload: &str) -> Result<Option<ChatDelta>, UpstreamError> {
        let chunk: ChatCompletionChunk = serde_json::from_str(payload).map_err(|err| {
            let start: String = payload.chars().take(MAX_QUOTED_BODY).collect();
            truncated(&format!("an unreadable chunk ({err}): {start}"))
        })?;
        if let Some(error) = chunk.error {
            // OpenAI reports a failure after the stream began as an `error` event.
            let message = if error.message.is_empty() { "error event in the stream".to_owned() } else { error.message };
            return Err(UpstreamError::Server { status: 500, message });
        }
        let mut content = String::new();
        let mut finish_reason = None;
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            let delta = choice.delta.unwrap_or_default();
            if let Some(refusal) = delta.refusal.flatten().filter(|r| !r.is_empty()) {
                self.refusing = true;
                content.push_str(&refusal);
            }
            content.push_str(delta.content.as_deref().unwrap_or_default());
            finish_reason = choice.finish_reason.or(finish_reason);
        }
        if self.refusing && finish_reason.is_some() {
            finish_reason = Some("refusal".to_owned());
        }
        let usage = chunk.usage.flatten().map(usage);
        if content.is_empty() && finish_reason.is_none() && usage.is_none() {
            return Ok(None);
        }
        let model = if chunk.model.is_empty() { self.requested_model.clone() } else { chunk.model };
        Ok(Some(ChatDelta { model, content, finish_reason, usage }))
    }
}

fn truncated(reason: &str) -> UpstreamError {
    UpstreamError::InvalidResponse(format!("stream truncated: {reason}"))
}

#[tonic::async_trait]
impl Upstream for OpenAiUpstream {
    async fn chat(&self, request: &ChatCompletion, timeout: Duration) -> Result<ChatAnswer, UpstreamError> {
        let reply: ChatCompletionResponse = self.post("chat", &chat_body(request, false), timeout).await?;
        chat_answer(reply, &request.model)
    }

    async fn chat_stream(&self, request: &ChatCompletion, timeout: Duration) -> Result<ChatStream, UpstreamError> {
        let deadline = Instant::now() + timeout;
        let (response, started) = self.send("chat_stream", &chat_body(request, true), timeout).await?;
        // The time to the first byte: how long callers waited before anything moved.
        metrics::upstream_request(&self.name, "chat_stream", response.status().as_u16().to_string(), started.elapsed());
        let is_json = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("application/json"));
        if is_json {
            // Some OpenAI-compatible servers ignore `stream` and answer whole: one delta, then.
            let reply = tokio::time::timeout_at(deadline, response.json::<ChatCompletionResponse>())
                .await
                .map_err(|_| UpstreamError::Timeout(timeout))?
                .map_err(|err| read_error(&err, timeout))?;
            let answer = chat_answer(reply, &request.model)?;
            let delta = ChatDelta {
                model: answer.model,
                content: answer.content,
                finish_reason: Some(answer.finish_reason),
                usage: Some(answer.usage),
            };
            return Ok(Box::pin(futures::stream::iter([Ok(delta)])));
        }
        Ok(sse_stream(response, ChatEvents::new(&request.model), deadline, timeout))
    }

    async fn embed(&self, model: &str, inputs: &[String], timeout: Duration) -> Result<EmbeddingAnswer, UpstreamError> {
        let body = EmbeddingsRequest {
            model: Some(model.to_owned()),
            input: Some(inputs.to_vec()),
            encoding_format: Some("float".to_owned()),
            dimensions: None,
        };
        let mut reply: EmbeddingsResponse = self.post("embeddings", &body, timeout).await?;
        reply.data.sort_by_key(|item| item.index);
        let in_order = reply.data.iter().enumerate().all(|(i, item)| item.index == i);
        if reply.data.len() != inputs.len() || !in_order {
            return Err(UpstreamError::InvalidResponse(format!(
                "{} embeddings for {} inputs",
                reply.data.len(),
                inputs.len()
            )));
        }
        let model = if reply.model.is_empty() { model.to_owned() } else { reply.model };
        Ok(EmbeddingAnswer {
            model,
            vectors: reply.data.into_iter().map(|item| item.embedding).collect(),
            usage: usage(reply.usage.unwrap_or_default().into()),
        })
    }

    async fn health(&self) -> Result<(), String> {
        let url = format!("{}/models", self.base_url);
        let started = Instant::now();
        let result = self.authorized(self.client.get(&url).timeout(HEALTH_TIMEOUT)).send().await;
        let status = result.as_ref().map_or_else(|_| "connect_error".to_owned(), |r| r.status().as_u16().to_string());
        metrics::upstream_request(&self.name, "models", status, started.elapsed());
        match result {
            // Many OpenAI-compatible servers serve chat without listing models (404, 405): an
            // answer is all the probe asks for. A 5xx, or a key the upstream refuses, is not.
            Ok(response)
                if response.status().is_server_error()
                    || matches!(response.status(), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) =>
            {
                Err(format!("GET {url} answered {}", response.status()))
            }
            Ok(_) => Ok(()),
            Err(err) => Err(format!("GET {url} failed: {}", transport_error(&err, HEALTH_TIMEOUT))),
        }
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn retry_after_in_seconds_milliseconds_and_dates() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));

        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"));
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn statuses_are_classified_with_the_upstream_message() {
        let body = r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
        let err = status_error(StatusCode::TOO_MANY_REQUESTS, Some(Duration::from_secs(2)), body);
        assert!(err.is_retryable());
        assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
        assert!(err.to_string().contains("Rate limit reached"));

        let quota = r#"{"error":{"message":"You exceeded your current quota","code":"insufficient_quota"}}"#;
        assert!(!status_error(StatusCode::TOO_MANY_REQUESTS, None, quota).is_retryable());

        let err = status_error(StatusCode::BAD_REQUEST, None, r#"{"error":{"message":"Missing 'model'"}}"#);
        assert!(matches!(&err, UpstreamError::Rejected { status: 400, message } if message == "Missing 'model'"));

        let err = status_error(StatusCode::BAD_GATEWAY, None, "<html>bad gateway</html>");
        assert!(
            matches!(&err, UpstreamError::Server { status: 502, message } if message == "<html>bad gateway</html>")
        );
    }

    /// Everything a stream yields when its body arrives in these pieces and then ends.
    fn run(pieces: &[&[u8]]) -> Vec<Result<ChatDelta, UpstreamError>> {
        let mut events = ChatEvents::new("asked-for");
        let mut items = Vec::new();
        for piece in pieces {
            items.extend(events.feed(piece));
        }
        items.extend(events.end());
        assert!(!events.is_open());
        items
    }

    /// Comparable: errors by their message.
    fn key(items: &[Result<ChatDelta, UpstreamError>]) -> Vec<Result<ChatDelta, String>> {
        items.iter().map(|item| item.clone().map_err(|err| err.to_string())).collect()
    }

    fn content(items: &[Result<ChatDelta, UpstreamError>]) -> String {
        items.iter().filter_map(|item| item.as_ref().ok()).map(|d| d.content.as_str()).collect()
    }

    fn chunk(content: &str) -> String {
        serde_json::json!({"model": "m-1", "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
            .to_string()
    }

    fn body() -> String {
        let role = r#"{"model":"m-1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#;
        let finish = r#"{"model":"m-1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#;
        let usage =
            r#"{"model":"m-1","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}"#;
        format!(
            "data: {role}\n\ndata: {}\n\n: keep-alive\n\ndata: {}\n\ndata: {finish}\n\ndata: {usage}\n\ndata: [DONE]\n\n",
            chunk("Grüße, "),
            chunk("wörld ✓")
        )
    }

    #[test]
    fn a_whole_stream_gives_its_deltas_then_ends_at_done() {
        let items = run(&[body().as_bytes()]);
        assert_eq!(items.len(), 4, "{items:?}");
        assert_eq!(content(&items), "Grüße, wörld ✓");
        let deltas: Vec<ChatDelta> = items.into_iter().map(Result::unwrap).collect();
        assert_eq!(deltas[0], ChatDelta { model: "m-1".into(), content: "Grüße, ".into(), ..Default::default() });
        assert_eq!(deltas[2].finish_reason.as_deref(), Some("stop"));
        assert_eq!(deltas[3].usage, Some(Usage { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 }));
        assert!(deltas[..3].iter().all(|d| d.usage.is_none()));
    }

    #[test]
    fn any_split_of_the_bytes_gives_the_same_deltas() {
        let body = body();
        let bytes = body.as_bytes();
        let whole = key(&run(&[bytes]));
        // Every cut point, including inside multi-byte characters, `data:` and `\n\n`.
        for cut in 0..=bytes.len() {
            assert_eq!(key(&run(&[&bytes[..cut], &bytes[cut..]])), whole, "cut at {cut}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(key(&run(&singles)), whole);
        let sevens: Vec<&[u8]> = bytes.chunks(7).collect();
        assert_eq!(key(&run(&sevens)), whole);
    }

    #[test]
    fn crlf_and_cr_line_ends_and_comments_are_understood() {
        let body = body();
        let crlf = body.replace('\n', "\r\n");
        let cr = body.replace('\n', "\r");
        let whole = key(&run(&[body.as_bytes()]));
        for variant in [crlf, cr] {
            let bytes = variant.as_bytes();
            assert_eq!(key(&run(&[bytes])), whole);
            // A CRLF split between two chunks is still one line end.
            for cut in 0..=bytes.len() {
                assert_eq!(key(&run(&[&bytes[..cut], &bytes[cut..]])), whole, "cut at {cut}");
            }
        }
        let noisy = format!(": comment\n:\nevent: message\nid: 7\nretry: 100\n{}", body.replace("data: ", "data:"));
        assert_eq!(key(&run(&[noisy.as_bytes()])), whole);
    }

    #[test]
    fn data_split_over_several_lines_is_one_payload() {
        let body = "data: {\"choices\":[{\"index\":0,\ndata: \"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n";
        let items = run(&[body.as_bytes()]);
        assert_eq!(content(&items), "hi");
        assert_eq!(items[0].as_ref().unwrap().model, "asked-for", "a chunk without a model names the one asked for");
    }

    fn assert_truncated(items: &[Result<ChatDelta, UpstreamError>]) {
        let (last, before) = items.split_last().unwrap();
        assert!(
            matches!(last, Err(UpstreamError::InvalidResponse(message)) if message.contains("truncated")),
            "{last:?}"
        );
        assert!(before.iter().all(Result::is_ok));
    }

    #[test]
    fn a_body_that_ends_before_done_ends_in_one_truncation_error() {
        let body = body();
        let cut = body.find("data: [DONE]").unwrap();
        let items = run(&[&body.as_bytes()[..cut]]);
        assert_eq!(items.len(), 5);
        assert_truncated(&items);
        assert_eq!(content(&items), "Grüße, wörld ✓");

        // Cut anywhere before [DONE]: whatever came whole, then exactly one error.
        for at in 0..cut {
            let items = run(&[&body.as_bytes()[..at]]);
            assert_truncated(&items);
        }
        assert_truncated(&run(&[]));
    }

    #[test]
    fn done_without_its_blank_line_still_ends_the_stream_cleanly() {
        let body = body();
        let body = body.trim_end();
        assert!(run(&[body.as_bytes()]).iter().all(Result::is_ok));
    }

    #[test]
    fn an_unreadable_chunk_or_an_error_event_ends_the_stream() {
        let body = format!("data: {}\n\ndata: {{not json\n\ndata: {}\n\ndata: [DONE]\n\n", chunk("a"), chunk("b"));
        let items = run(&[body.as_bytes()]);
        assert_eq!(items.len(), 2);
        assert_truncated(&items);

        let body = format!(
            "data: {}\n\ndata: {{\"error\":{{\"message\":\"The server had an error\",\"type\":\"server_error\"}}}}\n\n",
            chunk("a")
        );
        let items = run(&[body.as_bytes()]);
        assert!(
            matches!(&items[1], Err(UpstreamError::Server { message, .. }) if message == "The server had an error"),
            "{items:?}"
        );

        let invalid_utf8: &[u8] = b"data: \xff\xfe\n\n";
        assert_truncated(&run(&[invalid_utf8]));
    }

    #[test]
    fn a_streamed_refusal_reads_as_one() {
        let body = r#"data: {"choices":[{"index":0,"delta":{"refusal":"I can't help"}}]}

data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}

data: [DONE]

"#;
        let items = run(&[body.as_bytes()]);
        assert_eq!(content(&items), "I can't help");
        assert_eq!(items[1].as_ref().unwrap().finish_reason.as_deref(), Some("refusal"));
    }

    #[test]
    fn streaming_requests_ask_for_usage() {
        let request = ChatCompletion {
            model: "m".into(),
            messages: vec![super::super::Message { role: "user".into(), content: "hi".into() }],
            response_format: None,
            temperature: None,
            max_tokens: None,
        };
        let streamed = serde_json::to_value(chat_body(&request, true)).unwrap();
        assert_eq!(streamed["stream"], true);
        assert_eq!(streamed["stream_options"], serde_json::json!({"include_usage": true}));
        let whole = serde_json::to_value(chat_body(&request, false)).unwrap();
        assert!(whole.get("stream").is_none() && whole.get("stream_options").is_none(), "{whole}");
    }
}
