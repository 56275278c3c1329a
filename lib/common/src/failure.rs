//! How a step of the pipeline failed, which decides what happens next: one type for the stream
//! handlers and for the backends they call (embedders, extractors, other services), so that
//! retry, defer and give up are spelled once.

/// How a step failed, which decides what happens to its work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// Worth trying again: the entry stays pending and is redelivered after the visibility
    /// timeout, until `max_deliveries`.
    #[error("{0}")]
    Retry(String),
    /// Trying again cannot help (bad input): the entry is dead-lettered at once.
    #[error("{0}")]
    Fatal(String),
    /// The entry did not get a fair try because a downstream is unavailable (its circuit breaker
    /// is open, or it answered that it is unavailable). The entry goes back to the end of the
    /// stream without using up a delivery, after a short pause (`MILLRACE_DEFER_DELAY_MS`).
    ///
    /// Use it only for the downstream's availability, never for a failure of this entry (that
    /// is `Retry`): a downstream that stays down makes its entries wait, and their jobs stay
    /// running, until it comes back or the jobs are cancelled. That is the intent: waiting work
    /// is not poisoned work. A stage that defers should also give its stream worker a gate
    /// (`millrace_streams::Gate`, its circuit breaker), so that it stops reading while the
    /// downstream is down; a breaker counts exactly the deferred failures against it.
    #[error("{0}")]
    Deferred(String),
}

impl HandlerError {
    /// What a failed call to another millrace service means for the step; `service` names it
    /// in the reason. Down or too slow (it, or what it depends on): deferred. A quota or a
    /// conflict: retried. Anything else (bad input): fatal.
    pub fn from_status(service: &str, status: &tonic::Status) -> Self {
        use tonic::Code;
        let reason = format!("{service}: {}", status.message());
        match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Internal | Code::Cancelled => {
                Self::Deferred(reason)
            }
            code if crate::ErrorCode::from_grpc(code).is_retryable() => Self::Retry(reason),
            _ => Self::Fatal(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::{Code, Status};

    use super::*;

    fn kind(code: Code) -> &'static str {
        match HandlerError::from_status("svc", &Status::new(code, "m")) {
            HandlerError::Retry(_) => "retry",
            HandlerError::Deferred(_) => "deferred",
            HandlerError::Fatal(_) => "fatal",
        }
    }

    #[test]
    fn an_unavailable_service_defers_a_quota_retries_and_bad_input_is_fatal() {
        for code in [Code::Unavailable, Code::DeadlineExceeded, Code::Unknown, Code::Internal, Code::Cancelled] {
            assert_eq!(kind(code), "deferred", "{code:?}");
        }
        for code in [Code::ResourceExhausted, Code::Aborted] {
            assert_eq!(kind(code), "retry", "{code:?}");
        }
        for code in [Code::InvalidArgument, Code::NotFound, Code::FailedPrecondition, Code::OutOfRange] {
            assert_eq!(kind(code), "fatal", "{code:?}");
        }
        let err = HandlerError::from_status("llm-gateway", &Status::unavailable("no upstream"));
        assert_eq!(err.to_string(), "llm-gateway: no upstream");
    }
}
