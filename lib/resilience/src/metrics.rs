//! The names of the resilience kit's metrics, in one place. Each is labelled by the name of
//! the breaker or limiter (`llm-gateway` for a stage's breaker toward the gateway,
//! `upstream:<name>` for the gateway's breaker of an upstream, the upstream's name for its
//! limiter), which the configuration bounds.

use millrace_common::metrics::Metric;

/// 0 closed, 1 half-open, 2 open.
pub const BREAKER_STATE: &str = "millrace_breaker_state";
pub const BREAKER_TRANSITIONS: &str = "millrace_breaker_transitions_total";
pub const BREAKER_REJECTED: &str = "millrace_breaker_rejected_total";
pub const LIMITER_ADMITTED: &str = "millrace_limiter_admitted_total";
pub const LIMITER_WAITS: &str = "millrace_limiter_waits_total";
pub const LIMITER_WAIT: &str = "millrace_limiter_wait_seconds";
pub const LIMITER_WAITING: &str = "millrace_limiter_waiting";
pub const LIMITER_FALLBACK: &str = "millrace_limiter_fallback";

pub const METRICS: &[Metric] = &[
    Metric::gauge(BREAKER_STATE, "State of a circuit breaker: 0 closed, 1 half-open, 2 open."),
    Metric::counter(BREAKER_TRANSITIONS, "Circuit breaker state changes, by the state entered (`to`)."),
    Metric::counter(
        BREAKER_REJECTED,
        "Calls a circuit breaker refused because it was open (or its probe slots were taken).",
    ),
    Metric::counter(LIMITER_ADMITTED, "Requests a rate limiter admitted."),
    Metric::counter(
        LIMITER_WAITS,
        "Requests that had to wait for quota, by the limit they first waited for (`requests` or `tokens`).",
    ),
    Metric::histogram(LIMITER_WAIT, "Time an admitted request waited for quota, in seconds (0 for most)."),
    Metric::gauge(LIMITER_WAITING, "Requests waiting for quota now."),
    Metric::gauge(
        LIMITER_FALLBACK,
        "1 while a shared limiter cannot reach Redis and limits this replica to its share.",
    ),
];
