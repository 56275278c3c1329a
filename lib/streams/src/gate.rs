//! Lets a stage stop pulling work while its downstream cannot take it, so that entries wait in
//! the stream instead of being read, failed and counted towards the dead-letter stream.

use futures::future::BoxFuture;

/// Decides when a worker may pull entries and how many: a stage's circuit breaker toward its
/// downstream implements it.
///
/// The worker asks before every read (and before reclaiming and resuming its own pending
/// entries). The answer bounds how many of this worker's entries may be in flight, those already
/// in flight included: the worker reads at most the answer minus its entries in flight (and never
/// more than its free permits), and when that leaves no room it waits for an entry to finish and
/// asks again. So an answer of 1 (a half-open breaker's single probe) keeps at most one entry in
/// flight, and `usize::MAX` leaves only the concurrency limit.
///
/// A `ready()` that does not resolve at once, or that answers 0, pauses reads: the worker logs it,
/// sets `millrace_stage_paused{stage}` to 1 and waits (still stopping promptly on shutdown). An
/// entry read just as the gate closes is the handler's to turn down with
/// [`HandlerError::Deferred`](crate::HandlerError::Deferred).
pub trait Gate: Send + Sync + 'static {
    /// Resolves when entries may be pulled, with how many may be in flight at most
    /// (`usize::MAX` for no limit; e.g. a half-open breaker's probe slots).
    fn ready(&self) -> BoxFuture<'_, usize>;
}

/// A stage pulls while its breaker toward the downstream lets calls through: freely while
/// closed, as many as there are probe slots while half-open, and nothing while open.
impl Gate for millrace_resilience::CircuitBreaker {
    fn ready(&self) -> BoxFuture<'_, usize> {
        Box::pin(millrace_resilience::CircuitBreaker::ready(self))
    }
}
