//! One error code shared by HTTP and gRPC, so a failure means the same thing on both sides
//! of every call and callers can tell whether to retry.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// What went wrong, independent of transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request could not be read (malformed JSON, wrong types).
    BadRequest,
    /// The request was read but a field is invalid.
    InvalidArgument,
    /// No credentials, or credentials that are unknown or revoked.
    Unauthenticated,
    /// Valid credentials without the scope the call needs.
    PermissionDenied,
    NotFound,
    /// The request conflicts with the object's state (a job too far along to cancel).
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    /// A quota or budget is used up; retry later.
    RateLimited,
    /// The service (or one it depends on) cannot take work now; retry later.
    Unavailable,
    /// A service it called answered with something it cannot use (a model's answer that does
    /// not fit the schema asked for). A model may answer differently next time: retryable.
    BadGateway,
    DeadlineExceeded,
    Internal,
}

impl ErrorCode {
    pub fn http_status(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::InvalidArgument => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::PermissionDenied => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Conflict => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadGateway => StatusCode::BAD_GATEWAY,
            Self::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn grpc_code(self) -> tonic::Code {
        match self {
            Self::BadRequest | Self::InvalidArgument | Self::UnsupportedMediaType => tonic::Code::InvalidArgument,
            Self::Unauthenticated => tonic::Code::Unauthenticated,
            Self::PermissionDenied => tonic::Code::PermissionDenied,
            Self::NotFound => tonic::Code::NotFound,
            Self::Conflict => tonic::Code::FailedPrecondition,
            Self::PayloadTooLarge => tonic::Code::OutOfRange,
            Self::RateLimited => tonic::Code::ResourceExhausted,
            // gRPC has no code of its own for it (Google's HTTP mapping gives 502 to UNAVAILABLE
            // too); the message names the service that answered badly.
            Self::Unavailable | Self::BadGateway => tonic::Code::Unavailable,
            Self::DeadlineExceeded => tonic::Code::DeadlineExceeded,
            Self::Internal => tonic::Code::Internal,
        }
    }

    /// The code a gRPC status maps back to.
    pub fn from_grpc(code: tonic::Code) -> Self {
        match code {
            tonic::Code::InvalidArgument => Self::InvalidArgument,
            tonic::Code::FailedPrecondition => Self::Conflict,
            tonic::Code::NotFound => Self::NotFound,
            tonic::Code::Unauthenticated => Self::Unauthenticated,
            tonic::Code::PermissionDenied => Self::PermissionDenied,
            tonic::Code::OutOfRange => Self::PayloadTooLarge,
            tonic::Code::ResourceExhausted => Self::RateLimited,
            tonic::Code::Unavailable | tonic::Code::Aborted | tonic::Code::Cancelled => Self::Unavailable,
            tonic::Code::DeadlineExceeded => Self::DeadlineExceeded,
            _ => Self::Internal,
        }
    }

    /// The code as clients see it in `{"error":{"code"}}` (and as a metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::InvalidArgument => "invalid_argument",
            Self::Unauthenticated => "unauthenticated",
            Self::PermissionDenied => "permission_denied",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::BadGateway => "bad_gateway",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::Internal => "internal",
        }
    }

    /// Whether the same request may succeed later.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::RateLimited | Self::Unavailable | Self::BadGateway | Self::DeadlineExceeded | Self::Internal
        )
    }
}

/// An error as answered to a caller: `{"error":{"code","message"}}` over HTTP, a status over gRPC.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Seconds after which a retry may succeed (sent as `Retry-After`).
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), retry_after_secs: None }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, message)
    }
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PermissionDenied, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: ErrorCode,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code, message: &self.message } };
        let mut response = (self.code.http_status(), axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// gRPC metadata key carrying `Retry-After` seconds between services.
pub const RETRY_AFTER_METADATA: &str = "retry-after";

impl From<ApiError> for tonic::Status {
    fn from(err: ApiError) -> Self {
        let mut status = tonic::Status::new(err.code.grpc_code(), err.message);
        if let Some(secs) = err.retry_after_secs {
            status.metadata_mut().insert(RETRY_AFTER_METADATA, tonic::metadata::MetadataValue::from(secs));
        }
        status
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        let retry_after_secs = status
            .metadata()
            .get(RETRY_AFTER_METADATA)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok());
        Self { code: ErrorCode::from_grpc(status.code()), message: status.message().to_owned(), retry_after_secs }
    }
}

impl From<deadpool_redis::PoolError> for ApiError {
    fn from(err: deadpool_redis::PoolError) -> Self {
        Self::unavailable(format!("redis unavailable: {err}"))
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(err: redis::RedisError) -> Self {
        Self::unavailable(format!("redis error: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_grpc() {
        for code in [ErrorCode::NotFound, ErrorCode::RateLimited, ErrorCode::Unavailable, ErrorCode::Internal] {
            assert_eq!(ErrorCode::from_grpc(code.grpc_code()), code);
        }
    }

    #[test]
    fn retry_after_travels_through_grpc() {
        let status = tonic::Status::from(ApiError::new(ErrorCode::RateLimited, "slow down").with_retry_after(7));
        let back = ApiError::from(status);
        assert_eq!((back.code, back.retry_after_secs), (ErrorCode::RateLimited, Some(7)));
    }

    #[test]
    fn the_text_of_a_code_is_its_json_form() {
        for code in
            [ErrorCode::BadRequest, ErrorCode::UnsupportedMediaType, ErrorCode::BadGateway, ErrorCode::DeadlineExceeded]
        {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
        assert_eq!(ErrorCode::BadGateway.http_status(), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn client_errors_are_not_retryable() {
        assert!(!ErrorCode::InvalidArgument.is_retryable());
        assert!(!ErrorCode::NotFound.is_retryable());
        assert!(ErrorCode::Unavailable.is_retryable());
    }
}
