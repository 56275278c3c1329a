//! Failures in OpenAI's shape, `{"error":{"message","type","param","code"}}`, with the status
//! and headers the OpenAI SDKs act on: they pick their exception from the status, wait out
//! `retry-after-ms` / `Retry-After` before retrying, and do not retry at all when told
//! `x-should-retry: false`.

use std::time::Duration;

use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use millrace_common::ErrorCode;
use millrace_common::time::retry_after_secs;
use serde_json::json;

use crate::error::UpstreamError;

#[derive(Debug, Clone)]
pub struct OpenAiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `type`.
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    pub retry_after: Option<Duration>,
    /// Whether waiting can help at all (a spent budget or quota: no).
    pub retryable: bool,
}

impl OpenAiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), kind, param: None, code: None, retry_after: None, retryable: true }
    }

    fn param(mut self, param: impl Into<String>) -> Self {
        let param = param.into();
        self.param = (!param.is_empty()).then_some(param);
        self
    }

    fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// 400 for a field with a wrong value.
    pub fn invalid(param: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message).param(param).code(code)
    }

    pub fn missing(param: &str) -> Self {
        Self::invalid(param, "missing_required_parameter", format!("Missing required parameter: '{param}'."))
    }

    pub fn invalid_type(param: &str, expected: &str, got: &str) -> Self {
        Self::invalid(
            param,
            "invalid_type",
            format!("Invalid type for '{param}': expected {expected}, but got {got} instead."),
        )
    }

    pub fn unsupported(param: &str, message: impl Into<String>) -> Self {
        Self::invalid(param, "unsupported_parameter", message)
    }

    pub fn unparsable_json(err: &serde_json::Error) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            format!("We could not parse the JSON body of your request. ({err})"),
        )
        .code("invalid_json")
    }

    /// The body could not be read at all (too large, or the connection failed).
    pub fn unreadable_body(rejection: BytesRejection) -> Self {
        Self::new(rejection.status(), "invalid_request_error", rejection.body_text()).code("invalid_body")
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", message).code("not_found")
    }

    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("The model '{model}' does not exist or is not served by this gateway."),
        )
        .param("model")
        .code("model_not_found")
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", message).code("method_not_allowed")
    }

    /// The JSON body; also sent as the last event of a stream that fails part-way.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl From<UpstreamError> for OpenAiError {
    fn from(err: UpstreamError) -> Self {
        let message = err.to_string();
        let retry_after = err.retry_after();
        let mut answer = match &err {
            UpstreamError::InvalidRequest(_) => Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message),
            UpstreamError::UnknownModel(model) => Self::model_not_found(model).with_message(message),
            UpstreamError::RateLimited { retryable, .. } => {
                let limited = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message);
                if *retryable {
                    limited.code("rate_limit_exceeded")
                } else {
                    Self { retryable: false, ..limited.code("insufficient_quota") }
                }
            }
            UpstreamError::BudgetExceeded { .. } => Self {
                retryable: false,
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, "insufficient_quota", message).code("insufficient_quota")
            },
            UpstreamError::NotConfigured => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message).code("not_configured")
            }
            UpstreamError::Server { .. } | UpstreamError::Connect(_) | UpstreamError::InvalidResponse(_) => {
                Self::new(StatusCode::BAD_GATEWAY, "server_error", message).code("upstream_error")
            }
            UpstreamError::Timeout(_) => Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout", message).code("timeout"),
            UpstreamError::Rejected { status, .. } => {
                // The upstream's own verdict on this request, passed on as it gave it.
                let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY);
                Self::new(status, "invalid_request_error", message)
            }
            // Whatever else the gateway refuses with, by the shared code (circuit open, no free
            // slot: 503).
            other => {
                let (status, kind) = match other.code() {
                    ErrorCode::BadRequest | ErrorCode::InvalidArgument => {
                        (StatusCode::BAD_REQUEST, "invalid_request_error")
                    }
                    ErrorCode::NotFound => (StatusCode::NOT_FOUND, "invalid_request_error"),
                    ErrorCode::Conflict => (StatusCode::CONFLICT, "invalid_request_error"),
                    ErrorCode::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error"),
                    ErrorCode::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request_error"),
                    ErrorCode::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error"),
                    ErrorCode::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "server_error"),
                    ErrorCode::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
                    ErrorCode::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
                };
                Self::new(status, kind, message).code(other.kind())
            }
        };
        answer.retry_after = retry_after;
        answer
    }
}

impl OpenAiError {
    fn with_message(mut self, message: String) -> Self {
        self.message = message;
        self
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        let headers = response.headers_mut();
        if let Some(wait) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs(wait)));
            // The OpenAI SDKs read this first, for waits shorter than a second.
            let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            headers.insert("retry-after-ms", HeaderValue::from(millis));
        }
        if !self.retryable {
            headers.insert("x-should-retry", HeaderValue::from_static("false"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_errors_get_openai_statuses() {
        let cases = [
            (UpstreamError::InvalidRequest("messages must not be empty".into()), 400),
            (UpstreamError::NotConfigured, 503),
            (UpstreamError::Server { status: 500, message: "boom".into() }, 502),
            (UpstreamError::Connect("refused".into()), 502),
            (UpstreamError::InvalidResponse("garbled".into()), 502),
            (UpstreamError::Timeout(Duration::from_secs(3)), 504),
            (UpstreamError::Rejected { status: 401, message: "bad key".into() }, 401),
            (UpstreamError::Rejected { status: 404, message: "no such model".into() }, 404),
            (UpstreamError::UnknownModel("gpt-9".into()), 404),
        ];
        for (err, status) in cases {
            let answer = OpenAiError::from(err.clone());
            assert_eq!(answer.status.as_u16(), status, "{err:?}");
            assert_eq!(answer.message, err.to_string());
        }
        let unknown = OpenAiError::from(UpstreamError::UnknownModel("gpt-9".into()));
        assert_eq!((unknown.code, unknown.param.as_deref()), (Some("model_not_found"), Some("model")));
    }

    #[test]
    fn rate_limits_carry_retry_after_in_whole_seconds() {
        let err = UpstreamError::RateLimited {
            message: "slow down".into(),
            retry_after: Some(Duration::from_millis(1500)),
            retryable: true,
        };
        let response = OpenAiError::from(err).into_response();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(response.headers()["retry-after-ms"], "1500");
        assert!(!response.headers().contains_key("x-should-retry"));

        let spent = UpstreamError::RateLimited { message: "quota".into(), retry_after: None, retryable: false };
        let response = OpenAiError::from(spent).into_response();
        assert_eq!(response.headers()["x-should-retry"], "false");
        assert!(!response.headers().contains_key(header::RETRY_AFTER));
    }

    #[test]
    fn the_body_has_all_four_fields() {
        let body = OpenAiError::missing("messages").body();
        assert_eq!(
            body,
            json!({"error": {
                "message": "Missing required parameter: 'messages'.",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "missing_required_parameter"
            }})
        );
        let body = OpenAiError::from(UpstreamError::Timeout(Duration::from_secs(1))).body();
        assert!(body["error"]["param"].is_null());
    }
}
