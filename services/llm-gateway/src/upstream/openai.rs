//! An OpenAI-compatible HTTP API (OpenAI itself, vLLM, Ollama, LiteLLM, the project's fake):
//! `POST {base}/chat/completions`, `POST {base}/embeddings`, `GET {base}/models`, where the
//! base URL includes the version path (`…/v1`), as the OpenAI SDKs take it.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;
use tokio::time::Instant;

use super::{ChatAnswer, ChatCompletion, EmbeddingAnswer, Upstream, Usage};
use crate::config::{ApiKey, UpstreamConfig};
use crate::error::UpstreamError;
use crate::telemetry;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// How much of an unreadable error body to quote.
const MAX_QUOTED_BODY: usize = 300;

pub struct OpenAiUpstream {
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
        Ok(Self { client, base_url: config.base_url.clone(), api_key: config.api_key.clone() })
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
        let url = format!("{}/{}", self.base_url, path(endpoint));
        let request = self.authorized(self.client.post(url).timeout(timeout).json(body));
        let started = Instant::now();
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => {
                let error = transport_error(&err, timeout);
                let label = if matches!(error, UpstreamError::Timeout(_)) { "timeout" } else { "connect_error" };
                telemetry::upstream_request(endpoint, label.to_owned(), started.elapsed());
                return Err(error);
            }
        };
        let status = response.status();
        if status.is_success() {
            let body = response.json::<R>().await;
            telemetry::upstream_request(endpoint, status.as_u16().to_string(), started.elapsed());
            return body.map_err(|err| {
                if err.is_decode() {
                    UpstreamError::InvalidResponse(err.to_string())
                } else {
                    transport_error(&err, timeout)
                }
            });
        }
        let retry_after = retry_after(response.headers());
        let text = response.text().await.unwrap_or_default();
        telemetry::upstream_request(endpoint, status.as_u16().to_string(), started.elapsed());
        Err(status_error(status, retry_after, &text))
    }
}

fn path(endpoint: &str) -> &str {
    match endpoint {
        "chat" => "chat/completions",
        other => other,
    }
}

fn transport_error(err: &reqwest::Error, timeout: Duration) -> UpstreamError {
    if err.is_timeout() {
        UpstreamError::Timeout(timeout)
    } else {
        // reqwest's own message is generic ("error sending request"); the causes say what failed.
        let mut message = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            message = format!("{message}: {cause}");
            source = cause.source();
        }
        UpstreamError::Connect(message)
    }
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

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: String,
    #[serde(default)]
    code: Option<serde_json::Value>,
}

/// OpenAI's `{"error":{"message","code"}}`, else the start of whatever the body was.
fn error_message(body: &str) -> (String, Option<String>) {
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(parsed) => {
            let code = parsed.error.code.and_then(|c| c.as_str().map(str::to_owned));
            (parsed.error.message, code)
        }
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
    let value = text(RETRY_AFTER.as_str())?;
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = OffsetDateTime::parse(value, &Rfc2822).ok()?;
    let wait = at - OffsetDateTime::now_utc();
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

#[derive(Serialize)]
struct ChatBody<'a> {
    model: &'a str,
    messages: Vec<MessageBody<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<&'a serde_json::Value>,
}

#[derive(Serialize)]
struct MessageBody<'a> {
    role: &'a str,
    content: &'a str,
}

#[derive(Deserialize)]
struct ChatReply {
    #[serde(default)]
    model: String,
    #[serde(default)]
    choices: Vec<ChoiceReply>,
    #[serde(default)]
    usage: Option<UsageReply>,
}

#[derive(Deserialize)]
struct ChoiceReply {
    message: MessageReply,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct MessageReply {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
}

#[derive(Deserialize, Default)]
struct UsageReply {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
}

impl From<UsageReply> for Usage {
    fn from(usage: UsageReply) -> Self {
        let narrow = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        Self {
            prompt_tokens: narrow(usage.prompt_tokens),
            completion_tokens: narrow(usage.completion_tokens),
            total_tokens: narrow(usage.total_tokens.max(usage.prompt_tokens + usage.completion_tokens)),
        }
    }
}

#[derive(Serialize)]
struct EmbedBody<'a> {
    model: &'a str,
    input: &'a [String],
    encoding_format: &'static str,
}

#[derive(Deserialize)]
struct EmbedReply {
    #[serde(default)]
    model: String,
    data: Vec<EmbeddingReply>,
    #[serde(default)]
    usage: Option<UsageReply>,
}

#[derive(Deserialize)]
struct EmbeddingReply {
    index: usize,
    embedding: Vec<f32>,
}

#[tonic::async_trait]
impl Upstream for OpenAiUpstream {
    async fn chat(&self, request: &ChatCompletion, timeout: Duration) -> Result<ChatAnswer, UpstreamError> {
        let body = ChatBody {
            model: &request.model,
            messages: request.messages.iter().map(|m| MessageBody { role: &m.role, content: &m.content }).collect(),
            temperature: request.temperature,
            max_tokens: request.max_tokens,
            response_format: request.response_format.as_ref(),
        };
        let reply: ChatReply = self.post("chat", &body, timeout).await?;
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
        let model = if reply.model.is_empty() { request.model.clone() } else { reply.model };
        Ok(ChatAnswer { model, content, finish_reason, usage: reply.usage.unwrap_or_default().into() })
    }

    async fn embed(&self, model: &str, inputs: &[String], timeout: Duration) -> Result<EmbeddingAnswer, UpstreamError> {
        let body = EmbedBody { model, input: inputs, encoding_format: "float" };
        let mut reply: EmbedReply = self.post("embeddings", &body, timeout).await?;
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
            usage: reply.usage.unwrap_or_default().into(),
        })
    }

    async fn health(&self) -> Result<(), String> {
        let url = format!("{}/models", self.base_url);
        let started = Instant::now();
        let result = self.authorized(self.client.get(&url).timeout(HEALTH_TIMEOUT)).send().await;
        let status = result.as_ref().map_or_else(|_| "connect_error".to_owned(), |r| r.status().as_u16().to_string());
        telemetry::upstream_request("models", status, started.elapsed());
        match result {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("GET {url} answered {}", response.status())),
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
}
