//! Errors in the shape OpenAI answers them ([`ApiError`]), so clients under test parse the
//! fake's failures exactly as they would parse the real ones.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use millrace_openai::ApiError;

/// What can stop the fake from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("server failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// An error answered to a client, OpenAI style, with the `Retry-After` of a 429.
#[derive(Debug, Clone)]
pub struct OpenAiError {
    pub error: ApiError,
    pub retry_after_secs: Option<u64>,
}

impl From<ApiError> for OpenAiError {
    fn from(error: ApiError) -> Self {
        Self { error, retry_after_secs: None }
    }
}

impl OpenAiError {
    /// 429; `kind` is "requests" or "tokens", as OpenAI says which limit was hit.
    pub fn rate_limited(kind: &'static str, message: impl Into<String>, retry_after_secs: u64) -> Self {
        let error = ApiError::new(StatusCode::TOO_MANY_REQUESTS, kind, message).with_code("rate_limit_exceeded");
        Self { error, retry_after_secs: Some(retry_after_secs) }
    }

    pub fn server_error() -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "The server had an error while processing your request. Sorry about that! (injected by millrace-fake-openai)",
        )
        .into()
    }

    pub fn timeout() -> Self {
        ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout", "Request timed out. (injected by millrace-fake-openai)")
            .with_code("timeout")
            .into()
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let mut response = (self.error.status, axum::Json(self.error.body())).into_response();
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
