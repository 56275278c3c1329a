//! Retries of retryable upstream failures within one call's time budget: exponential backoff
//! with full jitter (a pause drawn uniformly from zero to `base · 2^retry`, capped), or exactly
//! the upstream's `Retry-After` when it gave one.
//!
//! A `Retry-After` longer than the cap, or one that would end past the call's deadline, is not
//! shortened: a retry before the upstream's quota returns is a sure failure that also spends
//! quota. The gateway then answers at once with the rate-limit error and its `Retry-After`, so
//! the caller (who knows whether the work can wait) decides.
//!
//! Hand-written and kept alone in this module because the shared resilience layers (rate
//! limits shared through Redis, circuit breakers) will replace it.

use std::future::Future;
use std::time::Duration;

use rand::Rng as _;
use tokio::time::Instant;

use crate::error::UpstreamError;
use crate::telemetry;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts after the first.
    pub max_retries: u32,
    /// The ceiling of the first backoff pause; it doubles with each retry.
    pub base_delay: Duration,
    /// The longest pause, and the longest `Retry-After` the gateway waits out.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_retries: 3, base_delay: Duration::from_millis(250), max_delay: Duration::from_secs(10) }
    }
}

impl RetryPolicy {
    /// The pause before retry number `retry` (0 for the first), or None if `error` says
    /// waiting within the cap cannot help.
    pub fn pause(&self, retry: u32, error: &UpstreamError) -> Option<Duration> {
        if let Some(wait) = error.retry_after() {
            return (wait <= self.max_delay).then_some(wait);
        }
        let ceiling = self.base_delay.saturating_mul(2u32.saturating_pow(retry)).min(self.max_delay);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Some(Duration::from_millis(rand::rng().random_range(0..=millis)))
    }
}

/// Runs `call` until it succeeds, fails for good, runs out of retries, or the next attempt
/// could not finish before `deadline`. `call` gets the time left, to use as its own timeout.
pub async fn run<T, F, Fut>(
    policy: &RetryPolicy,
    endpoint: &'static str,
    deadline: Instant,
    mut call: F,
) -> Result<T, UpstreamError>
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Result<T, UpstreamError>>,
{
    let mut retry = 0;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let error = match call(remaining).await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        if !error.is_retryable() || retry >= policy.max_retries {
            return Err(error);
        }
        let Some(pause) = policy.pause(retry, &error) else {
            return Err(error);
        };
        if Instant::now() + pause >= deadline {
            return Err(error);
        }
        retry += 1;
        telemetry::retry(endpoint, error.kind());
        tracing::debug!(endpoint, retry, pause_ms = pause.as_millis() as u64, error = %error, "retrying upstream call");
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn policy(max_retries: u32) -> RetryPolicy {
        RetryPolicy { max_retries, base_delay: Duration::from_millis(2), max_delay: Duration::from_millis(50) }
    }

    fn server_error() -> UpstreamError {
        UpstreamError::Server { status: 500, message: "boom".into() }
    }

    #[test]
    fn backoff_is_capped_and_jittered_within_its_ceiling() {
        let policy =
            RetryPolicy { max_retries: 10, base_delay: Duration::from_millis(100), max_delay: Duration::from_secs(1) };
        for retry in 0..10 {
            let ceiling = Duration::from_millis(100 * 2u64.pow(retry)).min(Duration::from_secs(1));
            for _ in 0..20 {
                assert!(policy.pause(retry, &server_error()).unwrap() <= ceiling);
            }
        }
        assert!(policy.pause(u32::MAX, &server_error()).unwrap() <= Duration::from_secs(1));
    }

    #[test]
    fn retry_after_is_honoured_exactly_or_not_at_all() {
        let limited = |secs| UpstreamError::RateLimited {
            message: String::new(),
            retry_after: Some(Duration::from_secs(secs)),
            retryable: true,
        };
        let policy = RetryPolicy { max_delay: Duration::from_secs(10), ..RetryPolicy::default() };
        assert_eq!(policy.pause(0, &limited(3)), Some(Duration::from_secs(3)));
        assert_eq!(policy.pause(0, &limited(11)), None);
    }

    #[tokio::test]
    async fn retries_until_success() {
        let calls = AtomicU32::new(0);
        let deadline = Instant::now() + Duration::from_secs(5);
        let result = run(&policy(3), "test", deadline, |_| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move { if n < 2 { Err(server_error()) } else { Ok(n) } }
        })
        .await;
        assert_eq!(result.unwrap(), 2);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_retry_after_within_the_cap_is_waited_out() {
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let result = run(&policy(1), "test", started + Duration::from_secs(5), |_| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err(UpstreamError::RateLimited {
                        message: "wait".into(),
                        retry_after: Some(Duration::from_millis(40)),
                        retryable: true,
                    })
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert!(result.is_ok());
        assert!(started.elapsed() >= Duration::from_millis(40));
    }

    #[tokio::test]
    async fn gives_up_after_max_retries_with_the_last_error() {
        let calls = AtomicU32::new(0);
        let deadline = Instant::now() + Duration::from_secs(5);
        let result: Result<(), _> = run(&policy(2), "test", deadline, |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(server_error()) }
        })
        .await;
        assert!(matches!(result, Err(UpstreamError::Server { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn does_not_retry_what_cannot_succeed() {
        let calls = AtomicU32::new(0);
        let deadline = Instant::now() + Duration::from_secs(5);
        let result: Result<(), _> = run(&policy(5), "test", deadline, |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(UpstreamError::Rejected { status: 400, message: "no".into() }) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_retry_after_past_the_deadline_returns_at_once() {
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let policy = RetryPolicy { max_delay: Duration::from_secs(30), ..policy(5) };
        let result: Result<(), _> = run(&policy, "test", started + Duration::from_secs(1), |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                Err(UpstreamError::RateLimited {
                    message: "wait".into(),
                    retry_after: Some(Duration::from_secs(20)),
                    retryable: true,
                })
            }
        })
        .await;
        assert_eq!(result.unwrap_err().retry_after(), Some(Duration::from_secs(20)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(started.elapsed() < Duration::from_millis(500));
    }

    #[tokio::test]
    async fn each_attempt_gets_the_time_left() {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut budgets = Vec::new();
        let _: Result<(), _> = run(&policy(2), "test", deadline, |left| {
            budgets.push(left);
            async { Err(server_error()) }
        })
        .await;
        assert_eq!(budgets.len(), 3);
        assert!(budgets.windows(2).all(|w| w[1] <= w[0]));
        assert!(budgets[0] <= Duration::from_secs(2));
    }
}
