//! The names of the resilience kit's metrics, in one place. Each is labelled by the name of
//! the breaker or limiter (`llm-gateway` for a stage's breaker toward the gateway,
//! `upstream:<name>` for the gateway's breaker of an upstream, the upstream's name for its
//! limiter), which the configuration bounds.

millrace_common::declare_metrics! {
    /// 0 closed, 1 half-open, 2 open.
    BREAKER_STATE: gauge("millrace_breaker_state", "State of a circuit breaker: 0 closed, 1 half-open, 2 open.");
    BREAKER_TRANSITIONS: counter("millrace_breaker_transitions_total", "Circuit breaker state changes, by the state entered (`to`).");
    BREAKER_REJECTED: counter("millrace_breaker_rejected_total", "Calls a circuit breaker refused because it was open (or its probe slots were taken).");
    LIMITER_ADMITTED: counter("millrace_limiter_admitted_total", "Requests a rate limiter admitted.");
    LIMITER_WAITS: counter("millrace_limiter_waits_total", "Requests that had to wait for quota, by the limit they first waited for (`requests` or `tokens`).");
    LIMITER_WAIT: histogram("millrace_limiter_wait_seconds", "Time an admitted request waited for quota, in seconds (0 for most).");
    LIMITER_WAITING: gauge("millrace_limiter_waiting", "Requests waiting for quota now.");
    LIMITER_FALLBACK: gauge("millrace_limiter_fallback", "1 while a shared limiter cannot reach Redis and limits this replica to its share.");
}
