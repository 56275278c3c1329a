//! What can go wrong when a document is fetched, in terms a caller can act on: whether the URL
//! was refused (never retried), the document is unusable (too large, wrong status) or the
//! network failed (worth retrying).

use std::time::Duration;

/// Why a fetch (or the check of a URL) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The URL cannot be parsed.
    #[error("not a valid URL: {reason}")]
    InvalidUrl { reason: String },
    /// The URL or an address it resolves to is not allowed (scheme, credentials, a private or
    /// metadata address…); `reason` says which rule, e.g. "127.0.0.1 is a loopback address".
    #[error("refused: {reason}")]
    Refused { reason: String },
    /// The body is larger than the limit (announced by `Content-Length` or seen while reading).
    #[error("the document is larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// The whole fetch (redirects and body included) took longer than the limit.
    #[error("the fetch took longer than {}ms", limit.as_millis())]
    Timeout { limit: Duration },
    /// More redirects than allowed.
    #[error("more than {limit} redirects")]
    TooManyRedirects { limit: u32 },
    /// The server answered with a status other than 2xx (after redirects).
    #[error("the server answered HTTP {0}")]
    Status(u16),
    /// Connecting, sending or reading failed (DNS, TCP, TLS, a reset connection).
    #[error("network error: {0}")]
    Network(String),
    /// The fetcher could not be set up (a bad setting, the HTTP client could not be built).
    #[error("fetcher setup: {0}")]
    Setup(String),
}

impl FetchError {
    /// Whether the same fetch may succeed later: network failures, time-outs and the statuses
    /// that mean "not now" (408, 425, 429, 5xx). A refused URL, a document that is too large
    /// or a redirect loop stays so.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Timeout { .. } | Self::Network(_) => true,
            Self::Status(code) => matches!(code, 408 | 425 | 429) || (500..600).contains(code),
            Self::InvalidUrl { .. }
            | Self::Refused { .. }
            | Self::TooLarge { .. }
            | Self::TooManyRedirects { .. }
            | Self::Setup(_) => false,
        }
    }

    /// A short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidUrl { .. } => "invalid_url",
            Self::Refused { .. } => "refused",
            Self::TooLarge { .. } => "too_large",
            Self::Timeout { .. } => "timeout",
            Self::TooManyRedirects { .. } => "too_many_redirects",
            Self::Status(_) => "status",
            Self::Network(_) => "network",
            Self::Setup(_) => "setup",
        }
    }

    pub(crate) fn refused(reason: impl Into<String>) -> Self {
        Self::Refused { reason: reason.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_failures_are_retryable() {
        assert!(FetchError::Network("reset".into()).is_retryable());
        assert!(FetchError::Timeout { limit: Duration::from_secs(1) }.is_retryable());
        assert!(FetchError::Status(503).is_retryable());
        assert!(FetchError::Status(429).is_retryable());
        assert!(!FetchError::Status(404).is_retryable());
        assert!(!FetchError::refused("127.0.0.1 is a loopback address").is_retryable());
        assert!(!FetchError::TooLarge { limit: 10 }.is_retryable());
        assert!(!FetchError::TooManyRedirects { limit: 5 }.is_retryable());
    }

    #[test]
    fn messages_carry_the_reason() {
        let err = FetchError::refused("10.0.0.1 is a private address");
        assert_eq!(err.to_string(), "refused: 10.0.0.1 is a private address");
        assert_eq!(
            FetchError::Timeout { limit: Duration::from_millis(1500) }.to_string(),
            "the fetch took longer than 1500ms"
        );
    }
}
