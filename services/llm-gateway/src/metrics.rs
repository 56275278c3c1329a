//! The gateway's metrics, named once here so dashboards and code agree (the breakers'
//! `millrace_breaker_*` and the limiters' `millrace_limiter_*` come with the resilience kit,
//! labelled `upstream:<name>` and `<name>`). It only records what it is given, so it depends on
//! nothing else of the gateway.

use std::time::Duration;

use millrace_common::metrics::describe;

millrace_common::declare_metrics! {
    /// Every HTTP attempt to an upstream, by `upstream` (its configured name), `endpoint` (`chat`,
    /// `chat_stream`, `embeddings`, `models`) and `status` (the HTTP status code, or `timeout` /
    /// `connect_error` when none came back).
    UPSTREAM_REQUESTS: counter("millrace_llm_gateway_upstream_requests_total", "HTTP requests to upstreams, by upstream, endpoint and status (code, timeout or connect_error).");
    UPSTREAM_DURATION: histogram("millrace_llm_gateway_upstream_request_duration_seconds", "Time an upstream took to answer one request (to the first byte for streams), by upstream and endpoint, in seconds.");
    /// Attempts after the first, by endpoint and the kind of error that caused them.
    RETRIES: counter("millrace_llm_gateway_retries_total", "Attempts of a call after its first, by endpoint and the error that caused them.");
    /// Tokens the upstream reported, by model and kind (`prompt`, `completion`).
    TOKENS: counter("millrace_llm_gateway_tokens_total", "Tokens upstreams reported, by model and kind (prompt, completion).");
    /// Dollars spent, by model. A gauge that only grows (the `metrics` crate's counters hold whole
    /// numbers), so `rate()` and `increase()` work on it as on a counter.
    COST: gauge("millrace_llm_gateway_cost_usd_total", "US dollars spent, by model (grows only; use rate() or increase()).");
    /// Calls refused because the daily budget is spent.
    BUDGET_REFUSALS: counter("millrace_llm_gateway_budget_refusals_total", "Calls refused because the day's spend reached MILLRACE_MAX_DAILY_COST_USD.");
    /// Calls of a virtual key refused for its own limits, by `limit` (`requests`, `tokens`,
    /// `budget`); per key they would be a series per key, so the key is in the log line only.
    KEY_REFUSALS: counter("millrace_llm_gateway_key_refusals_total", "Calls refused for their key's own limit, by limit (requests, tokens, budget).");
    /// Usage that could not be written to Redis (job or daily spend).
    ACCOUNTING_ERRORS: counter("millrace_llm_gateway_accounting_errors_total", "Usage records that could not be written to Redis.");
    /// Calls answered, by method (gRPC `chat`, `embed`; HTTP `openai_chat`, `openai_chat_stream`,
    /// `openai_embeddings`) and outcome (`ok` or an error kind).
    CALLS: counter("millrace_llm_gateway_calls_total", "Calls answered by the gateway, by method and outcome.");
    /// `MILLRACE_MAX_DAILY_COST_USD`; absent when there is no budget.
    DAILY_BUDGET: gauge("millrace_llm_gateway_daily_budget_usd", "The daily LLM budget in US dollars (MILLRACE_MAX_DAILY_COST_USD); absent without one.");
    /// Today's (UTC) spend of every gateway replica together, as this replica last read it.
    DAILY_SPEND: gauge("millrace_llm_gateway_daily_spend_usd", "US dollars spent today (UTC) by every gateway replica together.");
    UPSTREAM_IN_FLIGHT: gauge("millrace_llm_gateway_upstream_in_flight", "Requests to an upstream in flight from this replica.");
    UPSTREAM_MAX_CONCURRENCY: gauge("millrace_llm_gateway_upstream_max_concurrency", "Requests to an upstream this replica allows at once.");
    /// 1 when the upstream answered its last probe (`GET {base}/models`: any answer but a 5xx or an
    /// authentication failure), else 0.
    UPSTREAM_UP: gauge("millrace_llm_gateway_upstream_up", "1 when the upstream answered this replica's last probe (GET /models), else 0.");
}

/// Describes the gateway's metrics (and the resilience kit's) and registers its counters at
/// zero; the budget gauge only when there is a budget.
pub fn register(budget_usd: Option<f64>) {
    describe(METRICS);
    describe(millrace_resilience::metrics::METRICS);
    metrics::counter!(BUDGET_REFUSALS).increment(0);
    metrics::counter!(ACCOUNTING_ERRORS).increment(0);
    for limit in ["requests", "tokens", "budget"] {
        metrics::counter!(KEY_REFUSALS, "limit" => limit).increment(0);
    }
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

pub fn key_refusal(limit: &'static str) {
    metrics::counter!(KEY_REFUSALS, "limit" => limit).increment(1);
}

pub fn accounting_error() {
    metrics::counter!(ACCOUNTING_ERRORS).increment(1);
}
