//! The gateway's metrics, named once here so dashboards and code agree.

use std::time::Duration;

use crate::error::UpstreamError;
use crate::upstream::Usage;

/// Every HTTP attempt to the upstream, by endpoint (`chat`, `embeddings`, `models`) and status
/// (the HTTP status code, or `timeout` / `connect_error` when none came back).
pub const UPSTREAM_REQUESTS: &str = "millrace_llm_gateway_upstream_requests_total";
pub const UPSTREAM_DURATION: &str = "millrace_llm_gateway_upstream_request_duration_seconds";
/// Attempts after the first, by endpoint and the kind of error that caused them.
pub const RETRIES: &str = "millrace_llm_gateway_retries_total";
/// Tokens the upstream reported, by model and kind (`prompt`, `completion`).
pub const TOKENS: &str = "millrace_llm_gateway_tokens_total";
/// Dollars spent, by model (a gauge that only grows: counters hold whole numbers).
pub const COST: &str = "millrace_llm_gateway_cost_usd_total";
/// Calls refused because the daily budget is spent.
pub const BUDGET_REFUSALS: &str = "millrace_llm_gateway_budget_refusals_total";
/// Usage that could not be written to Redis (job or daily spend).
pub const ACCOUNTING_ERRORS: &str = "millrace_llm_gateway_accounting_errors_total";
/// Calls answered, by method (gRPC `chat`, `embed`; HTTP `openai_chat`, `openai_chat_stream`,
/// `openai_embeddings`) and outcome (`ok` or an error kind).
pub const CALLS: &str = "millrace_llm_gateway_calls_total";

pub fn upstream_request(endpoint: &'static str, status: String, elapsed: Duration) {
    metrics::counter!(UPSTREAM_REQUESTS, "endpoint" => endpoint, "status" => status).increment(1);
    metrics::histogram!(UPSTREAM_DURATION, "endpoint" => endpoint).record(elapsed.as_secs_f64());
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

pub fn cost(model: &str, usd: f64) {
    if usd > 0.0 {
        metrics::gauge!(COST, "model" => model.to_owned()).increment(usd);
    }
}

pub fn budget_refusal() {
    metrics::counter!(BUDGET_REFUSALS).increment(1);
}

pub fn accounting_error() {
    metrics::counter!(ACCOUNTING_ERRORS).increment(1);
}

/// The client span of one GenAI call (OpenTelemetry GenAI conventions), named
/// `{operation} {model}` (`chat gpt-4o-mini`), covering the wait for quota and every attempt.
/// The answering model and the usage are recorded when known ([`record_gen_ai`]).
pub fn gen_ai_span(operation: &'static str, model: &str, job_id: &str) -> tracing::Span {
    use tracing::field::Empty;
    tracing::info_span!(
        "gen_ai",
        otel.name = format!("{operation} {model}"),
        otel.kind = "client",
        otel.status_code = Empty,
        gen_ai.operation.name = operation,
        gen_ai.provider.name = "openai",
        gen_ai.request.model = model,
        gen_ai.response.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        error.type = Empty,
        millrace.job.id = (!job_id.is_empty()).then_some(job_id),
    )
}

/// Records how a GenAI call ended on its span.
pub fn record_gen_ai(span: &tracing::Span, answer: Result<(&str, Usage), &UpstreamError>) {
    match answer {
        Ok((model, usage)) => {
            span.record("gen_ai.response.model", model);
            span.record("gen_ai.usage.input_tokens", usage.prompt_tokens);
            span.record("gen_ai.usage.output_tokens", usage.completion_tokens);
        }
        Err(err) => {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", err.kind());
        }
    }
}
