//! What can go wrong between a caller and the upstream, classified once: which shared
//! [`ErrorCode`] each failure becomes, and which failures are worth another attempt.

use std::time::Duration;

use millrace_common::time::retry_after_secs;
use millrace_common::{ApiError, ErrorCode};

/// The metadata key that carries `Retry-After` (whole seconds) on gRPC errors.
pub use millrace_common::RETRY_AFTER_METADATA;

#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("no upstream configured (set MILLRACE_LLM_BASE_URL)")]
    NotConfigured,
    /// The caller's request is wrong before it reaches the upstream.
    #[error("{0}")]
    InvalidRequest(String),
    /// 429. `retryable` is false for a spent budget (`insufficient_quota`), which waiting won't fix.
    #[error("upstream rate limit: {message}")]
    RateLimited { message: String, retry_after: Option<Duration>, retryable: bool },
    /// 5xx, 408 and 409.
    #[error("upstream answered {status}: {message}")]
    Server { status: u16, message: String },
    /// Other 4xx: the upstream refused this request and will refuse it again.
    #[error("upstream refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("upstream unreachable: {0}")]
    Connect(String),
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    /// A success status with a body that is not what the API promises.
    #[error("upstream answered an unreadable body: {0}")]
    InvalidResponse(String),
    /// No upstream serves this model.
    #[error("model {0:?} is not served by any upstream of this gateway")]
    UnknownModel(String),
    /// Every upstream of the model has its circuit breaker open.
    #[error("every upstream of model {model:?} is failing (circuit open); retry in {retry_in:?}")]
    AllOpen { model: String, retry_in: Duration },
    /// Every concurrency slot of the upstream stayed taken until the call's deadline.
    #[error("upstream {upstream} had no free concurrency slot before the call's deadline")]
    Busy { upstream: String },
    /// Today's spend reached `MILLRACE_MAX_DAILY_COST_USD`.
    #[error(
        "the daily LLM budget is spent: ${spent_usd:.4} of ${budget_usd:.2} (MILLRACE_MAX_DAILY_COST_USD); it resets at 00:00 UTC"
    )]
    BudgetExceeded { spent_usd: f64, budget_usd: f64, resets_in: Duration },
    /// The calling key's own requests or tokens per minute are used up (`retry_after` None: the
    /// request is larger than the key's whole TPM).
    #[error("{}", key_rate_limited(key_id, limit, *retry_after))]
    KeyRateLimited { key_id: String, limit: &'static str, retry_after: Option<Duration> },
    /// The calling key's spend of the UTC day reached its `daily_budget_usd`.
    #[error("the daily budget of key {key_id} is spent: ${spent_usd:.4} of ${budget_usd:.2}; it resets at 00:00 UTC")]
    KeyBudgetExceeded { key_id: String, spent_usd: f64, budget_usd: f64, resets_in: Duration },
}

fn key_rate_limited(key_id: &str, limit: &str, retry_after: Option<Duration>) -> String {
    match retry_after {
        Some(wait) => {
            format!("key {key_id} is over its {limit} per minute limit; retry in {} s", retry_after_secs(wait))
        }
        None => format!("the request is larger than the tokens per minute key {key_id} may use at all"),
    }
}

impl UpstreamError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotConfigured | Self::InvalidRequest(_) | Self::Rejected { .. } => ErrorCode::InvalidArgument,
            Self::UnknownModel(_) => ErrorCode::NotFound,
            Self::RateLimited { .. }
            | Self::BudgetExceeded { .. }
            | Self::KeyRateLimited { .. }
            | Self::KeyBudgetExceeded { .. } => ErrorCode::RateLimited,
            Self::Server { .. }
            | Self::Connect(_)
            | Self::InvalidResponse(_)
            | Self::AllOpen { .. }
            | Self::Busy { .. } => ErrorCode::Unavailable,
            Self::Timeout(_) => ErrorCode::DeadlineExceeded,
        }
    }

    /// Whether the gateway itself should try again (callers may still retry what it gives up on,
    /// according to [`ErrorCode::is_retryable`]).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::RateLimited { retryable, .. } => *retryable,
            Self::Server { .. } | Self::Connect(_) | Self::Timeout(_) => true,
            // An unreadable answer is worth another attempt (a truncated body, a proxy's page),
            // and counts against the upstream's breaker.
            Self::InvalidResponse(_) => true,
            Self::NotConfigured
            | Self::InvalidRequest(_)
            | Self::Rejected { .. }
            | Self::UnknownModel(_)
            | Self::AllOpen { .. }
            | Self::Busy { .. }
            | Self::BudgetExceeded { .. }
            | Self::KeyRateLimited { .. }
            | Self::KeyBudgetExceeded { .. } => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            Self::AllOpen { retry_in, .. } => Some(*retry_in),
            Self::BudgetExceeded { resets_in, .. } | Self::KeyBudgetExceeded { resets_in, .. } => Some(*resets_in),
            Self::KeyRateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether the caller's request (or the gateway's configuration) is at fault, rather than
    /// the upstream: such failures are not logged as upstream trouble.
    pub fn is_callers_fault(&self) -> bool {
        matches!(
            self,
            Self::NotConfigured
                | Self::InvalidRequest(_)
                | Self::UnknownModel(_)
                | Self::BudgetExceeded { .. }
                | Self::KeyRateLimited { .. }
                | Self::KeyBudgetExceeded { .. }
        )
    }

    /// Whether the failure says the upstream is unhealthy, which counts against its breaker.
    /// A 429 does not: it is the quota talking, and the limiter answers it.
    pub fn counts_against_upstream(&self) -> bool {
        matches!(self, Self::Server { .. } | Self::Connect(_) | Self::Timeout(_) | Self::InvalidResponse(_))
    }

    /// A short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotConfigured => "not_configured",
            Self::InvalidRequest(_) => "invalid_request",
            Self::RateLimited { .. } => "rate_limited",
            Self::Server { .. } => "server_error",
            Self::Rejected { .. } => "rejected",
            Self::Connect(_) => "connect",
            Self::Timeout(_) => "timeout",
            Self::InvalidResponse(_) => "invalid_response",
            Self::UnknownModel(_) => "unknown_model",
            Self::AllOpen { .. } => "circuit_open",
            Self::Busy { .. } => "busy",
            Self::BudgetExceeded { .. } => "budget_exceeded",
            Self::KeyRateLimited { .. } => "key_rate_limited",
            Self::KeyBudgetExceeded { .. } => "key_budget_exceeded",
        }
    }
}

impl From<UpstreamError> for ApiError {
    fn from(err: UpstreamError) -> Self {
        let retry_after = err.retry_after();
        let api = ApiError::new(err.code(), err.to_string());
        match retry_after {
            Some(wait) => api.with_retry_after(retry_after_secs(wait)),
            None => api,
        }
    }
}

/// The shared status; `retry-after` travels as metadata (see `millrace_common::error`).
impl From<UpstreamError> for tonic::Status {
    fn from(err: UpstreamError) -> Self {
        tonic::Status::from(ApiError::from(err))
    }
}

/// What can stop the gateway from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind listeners: {0}")]
    Bind(#[from] std::io::Error),
    #[error("cannot build the upstream HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
    #[error("cannot set up redis (MILLRACE_REDIS_URL): {0}")]
    Redis(String),
    #[error("cannot set up the key store: {0}")]
    Auth(millrace_common::ConfigError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_keep_retry_after_on_grpc() {
        let err = UpstreamError::RateLimited {
            message: "slow down".into(),
            retry_after: Some(Duration::from_millis(1500)),
            retryable: true,
        };
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(status.metadata().get(RETRY_AFTER_METADATA).unwrap(), "2");
    }

    #[test]
    fn classification() {
        let rejected = UpstreamError::Rejected { status: 400, message: "bad".into() };
        assert_eq!(rejected.code(), ErrorCode::InvalidArgument);
        assert!(!rejected.is_retryable());
        let server = UpstreamError::Server { status: 503, message: "busy".into() };
        assert_eq!(server.code(), ErrorCode::Unavailable);
        assert!(server.is_retryable());
        assert_eq!(UpstreamError::Timeout(Duration::from_secs(1)).code(), ErrorCode::DeadlineExceeded);
        let status = tonic::Status::from(UpstreamError::NotConfigured);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "no upstream configured (set MILLRACE_LLM_BASE_URL)");
    }
}
