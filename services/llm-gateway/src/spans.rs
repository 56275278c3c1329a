//! The gateway's own spans: one client span per GenAI call, after OpenTelemetry's GenAI
//! conventions.

use crate::error::UpstreamError;
use crate::upstream::Usage;

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
