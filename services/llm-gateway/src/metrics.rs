//! The gateway's metrics, named once here so dashboards and code agree (the breakers'
//! `millrace_breaker_*` and the limiters' `millrace_limiter_*` come with the resilience kit,
//! labelled `upstream:<name>` and `<name>`). It only records what it is given, so it depends on
//! nothing else of the gateway.

use std::time::Duration;

use millrace_common::metrics::{Metric, describe};

/// Every HTTP attempt to an upstream, by `upstream` (its configured name), `endpoint` (`chat`,
/// `chat_stream`, `embeddings`, `models`) and `status` (the HTTP status code, or `timeout` /
/// `connect_error` when none came back).
pub const UPSTREAM_REQUESTS: &str = "millrace_llm_gateway_upstream_requests_total";
pub const UPSTREAM_DURATION: &str = "millrace_llm_gateway_upstream_request_duration_seconds";
/// Attempts after the first, by endpoint and the kind of error that caused them.
pub const RETRIES: &str = "millrace_llm_gateway_retries_total";
/// Tokens the upstream reported, by model and kind (`prompt`, `completion`).
pub const TOKENS: &str = "millrace_llm_gateway_tokens_total";
/// Dollars spent, by model. A gauge that only grows (the `metrics` crate's counters hold whole
/// numbers), so `rate()` and `increase()` work on it as on a counter.
pub const COST: &str = "millrace_llm_gateway_cost_usd_total";
/// Calls refused because the daily budget is spent.
pub const BUDGET_REFUSALS: &str = "millrace_llm_gateway_budget_refusals_total";
/// Usage that could not be written to Redis (job or daily spend).
pub const ACCOUNTING_ERRORS: &str = "millrace_llm_gateway_accounting_errors_total";
/// Calls answered, by method (gRPC `chat`, `embed`; HTTP `openai_chat`, `openai_chat_stream`,
/// `openai_embeddings`) and outcome (`ok` or an error kind).
pub const CALLS: &str = "millrace_llm_gateway_calls_total";
/// `MILLRACE_MAX_DAILY_COST_USD`; absent when there is no budget.
pub const DAILY_BUDGET: &str = "millrace_llm_gateway_daily_budget_usd";
/// Today's (UTC) spend of every gateway replica together, as this replica last read it.
pub const DAILY_SPEND: &str = "millrace_llm_gateway_daily_spend_usd";
pub const UPSTREAM_IN_FLIGHT: &str = "millrace_llm_gateway_upstream_in_flight";
pub const UPSTREAM_MAX_CONCURRENCY: &str = "millrace_llm_gateway_upstream_max_concurrency";
/// 1 when the upstream answered its last probe (`GET {base}/models`: any answer but a 5xx or an
/// authentication failure), else 0.
pub const UPSTREAM_UP: &str = "millrace_llm_gateway_upstream_up";

pub const METRICS: &[Metric] = &[
    Metric::counter(
        UPSTREAM_REQUESTS,
        "HTTP requests to upstreams, by upstream, endpoint and status (code, timeout or connect_error).",
    ),
    Metric::histogram(
        UPSTREAM_DURATION,
        "Time an upstream took to answer one request (to the first byte for streams), by upstream and endpoint, in seconds.",
    ),
    Metric::counter(RETRIES, "Attempts of a call after its first, by endpoint and the error that caused them."),
    Metric::counter(TOKENS, "Tokens upstreams reported, by model and kind (prompt, completion)."),
    Metric::gauge(COST, "US dollars spent, by model (grows only; use rate() or increase())."),
    Metric::counter(BUDGET_REFUSALS, "Calls refused because the day's spend reached MILLRACE_MAX_DAILY_COST_USD."),
    Metric::counter(ACCOUNTING_ERRORS, "Usage records that could not be written to Redis."),
    Metric::counter(CALLS, "Calls answered by the gateway, by method and outcome."),
    Metric::gauge(
        DAILY_BUDGET,
        "The daily LLM budget in US dollars (MILLRACE_MAX_DAILY_COST_USD); absent without one.",
    ),
    Metric::gauge(DAILY_SPEND, "US dollars spent today (UTC) by every gateway replica together."),
    Metric::gauge(UPSTREAM_IN_FLIGHT, "Requests to an upstream in flight from this replica."),
    Metric::gauge(UPSTREAM_MAX_CONCURRENCY, "Requests to an upstream this replica allows at once."),
    Metric::gauge(UPSTREAM_UP, "1 when the upstream answered this replica's last probe (GET /models), else 0."),
];

/// Describes the gateway's metrics (and the resilience kit's) and registers its counters at
/// zero; the budget gauge only when there is a budget.
pub fn register(budget_usd: Option<f64>) {
    describe(METRICS);
    describe(millrace_resilience::metrics::METRICS);
    metrics::counter!(BUDGET_REFUSALS).increment(0);
    metrics::counter!(ACCOUNTING_ERRORS).increment(0);
    if let Some(budget) = budget_usd {
        metrics::gauge!(DAILY_BUDGET).set(budget);
    }
}

/// Today's (UTC) spend of every replica together, as last read.
pub fn daily_spend(usd: f64) {
    metrics::gauge!(DAILY_SPEND).set(usd);
}

/// An upstream's use and capacity on this replica, and whether it answered its last probe
/// (None before the first).
pub fn upstream_state(upstream: &str, in_flight: usize, max_concurrency: usize, reachable: Option<bool>) {
    metrics::gauge!(UPSTREAM_IN_FLIGHT, "upstream" => upstream.to_owned()).set(in_flight as f64);
    metrics::gauge!(UPSTREAM_MAX_CONCURRENCY, "upstream" => upstream.to_owned()).set(max_concurrency as f64);
    if let Some(reachable) = reachable {
        metrics::gauge!(UPSTREAM_UP, "upstream" => upstream.to_owned()).set(f64::from(u8::from(reachable)));
    }
}

pub fn upstream_request(upstream: &str, endpoint: &'static str, status: String, elapsed: Duration) {
    let upstream = upstream.to_owned();
    metrics::counter!(UPSTREAM_REQUESTS, "upstream" => upstream.clone(), "endpoint" => endpoint, "status" => status)
        .increment(1);
    metrics::histogram!(UPSTREAM_DURATION, "upstream" => upstream, "endpoint" => endpoint)
        .record(elapsed.as_secs_f64());
}

pub fn retry(endpoint: &'static str, cause: &'static str) {
    metrics::counter!(RETRIES, "endpoint" => endpoint, "cause" => cause).increment(1);
}

pub fn tokens(model: &str, prompt: u32, completion: u32) {
    if prompt > 0 {
        metrics::counter!(TOKENS, "model" => model.to_owned(), "kind" => "prompt").increment(u64::from(prompt));
    }
    if completion > 0 {
        metrics::counter!(TOKENS, "model" => model.to_owned(), "kind" => "completion").increment(u64::from(completion));
    }
}

pub fn call(method: &'static str, outcome: &'static str) {
    metrics::counter!(CALLS, "method" => method, "outcome" => outcome).increment(1);
}

/// Also for a model without a price (cost 0), so that every model answered shows a series.
pub fn cost(model: &str, usd: f64) {
    metrics::gauge!(COST, "model" => model.to_owned()).increment(usd.max(0.0));
}

pub fn budget_refusal() {
    metrics::counter!(BUDGET_REFUSALS).increment(1);
}

pub fn accounting_error() {
    metrics::counter!(ACCOUNTING_ERRORS).increment(1);
}
