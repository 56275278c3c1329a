//! The resilience kit every millrace service puts around every downstream call (the LLM
//! gateway toward upstream OpenAI-compatible APIs, the metadata and embeddings stages toward
//! the gateway), so that each one fails, waits and gives up the same way.
//!
//! Four independent parts, usually stacked in this order around one call:
//!
//! 1. [`limiter`]: requests/minute and tokens/minute quotas, shared by all replicas through one
//!    sliding-window log in Redis (with a local per-replica share while Redis is unreachable).
//!    It waits for quota rather than failing, up to the call's deadline.
//! 2. [`concurrency`]: per-replica concurrency is a semaphore (tokio's [`tokio::sync::Semaphore`],
//!    or tower's `ConcurrencyLimitLayer`, both re-exported there); [`concurrency::Concurrency`]
//!    adds a snapshot of the limit and the permits in use.
//! 3. [`breaker`]: a circuit breaker per downstream, which stops calling one that fails most
//!    calls and probes it again after a pause that doubles while it stays broken.
//! 4. [`retry`]: retries with full-jitter backoff or the downstream's `Retry-After`, within the
//!    call's deadline, for errors that say another attempt can succeed.
//!
//! After a call, [`coalesce`] lets its bookkeeping in Redis (settling the quota reservation,
//! adding up cost) share one round trip with that of other calls finishing at the same time.
//!
//! Every part reports metrics (`millrace_breaker_*`, `millrace_retries_total`,
//! `millrace_limiter_*`, named in [`metrics`]) and has a serializable snapshot for status pages.

pub mod breaker;
pub mod coalesce;
pub mod concurrency;
pub mod limiter;
pub mod metrics;
pub mod retry;

#[cfg(test)]
mod test_metrics;

pub use breaker::{
    BreakerConfig, BreakerError, BreakerLayer, BreakerOpen, BreakerService, BreakerSnapshot, BreakerState, CallPermit,
    CircuitBreaker,
};
pub use coalesce::Coalescer;
pub use concurrency::{Concurrency, ConcurrencySnapshot};
pub use limiter::{LimiterConfig, LimiterSnapshot, Quota, RateLimited, RateLimiter, Reservation};
pub use retry::{RetryPolicy, Retryable, Verdict};

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;

    fn is_send<T: Send>(_: T) {}

    /// Services box these futures as `Send` (a stage's gate, a tower stack).
    #[test]
    fn futures_are_send() {
        let breaker = CircuitBreaker::new("b", BreakerConfig::default());
        is_send(breaker.ready());
        is_send(breaker.call(|| async { Ok::<_, ()>(()) }, Result::is_err));
        let limiter = RateLimiter::local("l", Quota::default(), LimiterConfig::default());
        is_send(limiter.acquire(1, Instant::now()));
        is_send(Concurrency::new("c", 1).acquire());
        is_send(retry::run(&RetryPolicy::default(), "c", Instant::now(), |_| async { Ok::<_, RateLimited>(()) }));
    }
}
