//! The resilience kit every millrace service puts around every downstream call (the LLM
//! gateway toward upstream OpenAI-compatible APIs, the metadata and embeddings stages toward
//! the gateway), so that each one fails, waits and gives up the same way.
//!
//! Three independent parts, usually stacked in this order around one call:
//!
//! 1. [`limiter`]: requests/minute and tokens/minute quotas, shared by all replicas through one
//!    sliding-window log in Redis (with a local per-replica share while Redis is unreachable).
//!    It waits for quota rather than failing, up to the call's deadline.
//! 2. [`breaker`]: a circuit breaker per downstream, which stops calling one that fails most
//!    calls and probes it again after a pause that doubles while it stays broken. A stage's call
//!    goes through [`CircuitBreaker::call`], which counts its deferred failures (the downstream
//!    is unavailable) against the breaker; the gateway resolves a [`CallPermit`] per attempt.
//! 3. [`retry`]: the pause before another attempt, full-jitter backoff or the downstream's
//!    `Retry-After`, for errors that say another attempt can succeed.
//!
//! Per-replica concurrency toward a downstream is a plain semaphore (tokio's, or tower's
//! `ConcurrencyLimitLayer` in a service stack); nothing here wraps it.
//!
//! After a call, [`coalesce`] lets its bookkeeping in Redis (settling the quota reservation,
//! adding up cost) share one round trip with that of other calls finishing at the same time.
//!
//! The breaker and the limiter report metrics (`millrace_breaker_*`, `millrace_limiter_*`,
//! named in [`metrics`]) and have a serializable snapshot for status pages.

pub mod breaker;
pub mod coalesce;
pub mod limiter;
pub mod metrics;
pub mod retry;

#[cfg(test)]
mod test_metrics;

pub use breaker::{BreakerConfig, BreakerOpen, BreakerSnapshot, BreakerState, CallPermit, CircuitBreaker};
pub use coalesce::Coalescer;
pub use limiter::{LimiterConfig, LimiterSnapshot, PerKeyLimiters, Quota, RateLimited, RateLimiter, Reservation};
pub use retry::RetryPolicy;

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;

    fn is_send<T: Send>(_: T) {}

    /// Services box these futures as `Send` (a stage's gate, a handler's call).
    #[test]
    fn futures_are_send() {
        let breaker = CircuitBreaker::new("b", BreakerConfig::default());
        is_send(breaker.ready());
        is_send(breaker.call(async { Ok::<_, millrace_common::HandlerError>(()) }));
        let limiter = RateLimiter::local("l", Quota::default(), LimiterConfig::default());
        is_send(limiter.acquire(1, Instant::now()));
    }
}
