//! Failures in OpenAI's shape ([`ApiError`]), with the status and headers the OpenAI SDKs act
//! on: they pick their exception from the status, wait out `retry-after-ms` / `Retry-After`
//! before retrying, and do not retry at all when told `x-should-retry: false`.

use std::time::Duration;

use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use millrace_common::ErrorCode;
use millrace_common::time::retry_after_secs;
use millrace_openai::ApiError;

use crate::error::UpstreamError;

/// OpenAI's error with what the gateway adds in headers: how long to wait, and whether waiting
/// can help at all.
#[derive(Debug, Clone)]
pub struct OpenAiError {
    pub error: ApiError,
    pub retry_after: Option<Duration>,
    /// Whether waiting can help at all (a spent budget or quota: no).
    pub retryable: bool,
}

impl From<ApiError> for OpenAiError {
    fn from(error: ApiError) -> Self {
        Self { error, retry_after: None, retryable: true }
    }
}

impl std::ops::Deref for OpenAiError {
    type Target = ApiError;

    fn deref(&self) -> &ApiError {
        &self.error
    }
}

/// The body could not be read at all (too large, or the connection failed).
pub fn unreadable_body(rejection: BytesRejection) -> ApiError {
    ApiError::new(rejection.status(), "invalid_request_error", rejection.body_text()).with_code("invalid_body")
}

pub fn model_not_found(model: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!("The model '{model}' does not exist or is not served by this gateway."),
    )
    .with_param("model")
    .with_code("model_not_found")
}

impl From<UpstreamError> for OpenAiError {
    fn from(err: UpstreamError) -> Self {
        let message = err.to_string();
        let mut retryable = true;
        let error = match &err {
            UpstreamError::InvalidRequest(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
            }
            UpstreamError::UnknownModel(model) => model_not_found(model).with_message(message),
            UpstreamError::RateLimited { retryable: waiting_helps, .. } => {
                let limited = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message);
                retryable = *waiting_helps;
                limited.with_code(if *waiting_helps { "rate_limit_exceeded" } else { "insufficient_quota" })
            }
            UpstreamError::BudgetExceeded { .. } => {
                retryable = false;
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "insufficient_quota", message)
                    .with_code("insufficient_quota")
            }
            UpstreamError::KeyRateLimited { retry_after, .. } => {
                // Waiting helps unless the request can never fit the key's TPM.
                retryable = retry_after.is_some();
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message)
                    .with_code("rate_limit_exceeded")
            }
            UpstreamError::KeyBudgetExceeded { .. } => {
                retryable = false;
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "insufficient_quota", message)
                    .with_code("insufficient_quota")
            }
            UpstreamError::NotConfigured => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message).with_code("not_configured")
            }
            UpstreamError::Server { .. } | UpstreamError::Connect(_) | UpstreamError::InvalidResponse(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "server_error", message).with_code("upstream_error")
            }
            UpstreamError::Timeout(_) => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout", message).with_code("timeout")
            }
            UpstreamError::Rejected { status, .. } => {
                // The upstream's own verdict on this request, passed on as it gave it.
                let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY);
                ApiError::new(status, "invalid_request_error", message)
            }
            // Whatever else the gateway refuses with, by the shared code (circuit open, no free
            // slot: 503).
            other => {
                let (status, kind) = match other.code() {
                    ErrorCode::BadRequest | ErrorCode::InvalidArgument => {
                        (StatusCode::BAD_REQUEST, "invalid_request_error")
                    }
                    ErrorCode::Unauthenticated => (StatusCode::UNAUTHORIZED, "authentication_error"),
                    ErrorCode::PermissionDenied => (StatusCode::FORBIDDEN, "permission_error"),
                    ErrorCode::NotFound => (StatusCode::NOT_FOUND, "invalid_request_error"),
                    ErrorCode::Conflict => (StatusCode::CONFLICT, "invalid_request_error"),
                    ErrorCode::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error"),
                    ErrorCode::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request_error"),
                    ErrorCode::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error"),
                    ErrorCode::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "server_error"),
                    ErrorCode::BadGateway => (StatusCode::BAD_GATEWAY, "server_error"),
                    ErrorCode::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
                    ErrorCode::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
                };
                ApiError::new(status, kind, message).with_code(other.kind())
            }
        };
        Self { error, retry_after: err.retry_after(), retryable }
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
    use serde_json::json;

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
        let body = OpenAiError::from(ApiError::missing("messages")).body();
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
