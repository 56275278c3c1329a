//! `millrace.v1.LlmGateway`: checks a call, fills in the default model, sends it upstream with
//! retries inside the call's time budget, and accounts for the tokens the upstream reports.

use std::sync::Arc;
use std::time::Duration;

use millrace_proto::v1::llm_gateway_server::LlmGateway;
use millrace_proto::v1::{ChatRequest, ChatResponse, LlmEmbedRequest, LlmEmbedResponse, Vector};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::config::Config;
use crate::drain::InFlight;
use crate::error::UpstreamError;
use crate::retry::{self, RetryPolicy};
use crate::telemetry;
use crate::upstream::{ChatCompletion, Message, Upstream, Usage};

/// OpenAI's limit of inputs per embeddings request; longer calls are sent in several requests.
const MAX_INPUTS_PER_REQUEST: usize = 2048;

pub struct LlmGatewayService {
    upstream: Option<Arc<dyn Upstream>>,
    chat_model: String,
    embed_model: String,
    timeout: Duration,
    retry: RetryPolicy,
    in_flight: InFlight,
}

impl LlmGatewayService {
    pub fn new(config: &Config, upstream: Option<Arc<dyn Upstream>>, in_flight: InFlight) -> Self {
        Self {
            upstream,
            chat_model: config.chat_model.clone(),
            embed_model: config.embed_model.clone(),
            timeout: config.timeout,
            retry: config.retry.clone(),
            in_flight,
        }
    }

    fn upstream(&self) -> Result<&Arc<dyn Upstream>, UpstreamError> {
        self.upstream.as_ref().ok_or(UpstreamError::NotConfigured)
    }

    async fn chat_once(&self, request: ChatRequest) -> Result<ChatResponse, UpstreamError> {
        let upstream = self.upstream()?;
        if request.messages.is_empty() {
            return Err(UpstreamError::InvalidRequest("messages must not be empty".to_owned()));
        }
        let completion = ChatCompletion {
            model: or_default(request.model, &self.chat_model),
            messages: request.messages.into_iter().map(|m| Message { role: m.role, content: m.content }).collect(),
            response_format: response_format(&request.response_format_json)?,
            temperature: request.temperature,
            max_tokens: request.max_tokens,
        };
        let deadline = Instant::now() + self.timeout;
        let answer = retry::run(&self.retry, "chat", deadline, |left| upstream.chat(&completion, left)).await?;
        telemetry::tokens(&answer.model, answer.usage.prompt_tokens, answer.usage.completion_tokens);
        Ok(ChatResponse {
            model: answer.model,
            content: answer.content,
            finish_reason: answer.finish_reason,
            usage: Some(proto_usage(answer.usage)),
        })
    }

    async fn embed_once(&self, request: LlmEmbedRequest) -> Result<LlmEmbedResponse, UpstreamError> {
        let upstream = self.upstream()?;
        let model = or_default(request.model, &self.embed_model);
        if let Some(i) = request.inputs.iter().position(|input| input.is_empty()) {
            return Err(UpstreamError::InvalidRequest(format!(
                "inputs[{i}] is empty; embedding APIs refuse empty strings"
            )));
        }
        let deadline = Instant::now() + self.timeout;
        let mut vectors = Vec::with_capacity(request.inputs.len());
        let mut usage = Usage::default();
        let mut answered_by = model.clone();
        for batch in request.inputs.chunks(MAX_INPUTS_PER_REQUEST) {
            let answer =
                retry::run(&self.retry, "embeddings", deadline, |left| upstream.embed(&model, batch, left)).await?;
            vectors.extend(answer.vectors.into_iter().map(|values| Vector { values }));
            usage.prompt_tokens = usage.prompt_tokens.saturating_add(answer.usage.prompt_tokens);
            usage.total_tokens = usage.total_tokens.saturating_add(answer.usage.total_tokens);
            answered_by = answer.model;
        }
        telemetry::tokens(&answered_by, usage.prompt_tokens, 0);
        Ok(LlmEmbedResponse { model: answered_by, vectors, usage: Some(proto_usage(usage)) })
    }
}

fn or_default(model: String, default: &str) -> String {
    if model.trim().is_empty() { default.to_owned() } else { model }
}

fn response_format(json: &str) -> Result<Option<serde_json::Value>, UpstreamError> {
    if json.trim().is_empty() {
        return Ok(None);
    }
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(value) if value.is_object() => Ok(Some(value)),
        Ok(_) => Err(UpstreamError::InvalidRequest("response_format_json must be a JSON object".to_owned())),
        Err(err) => Err(UpstreamError::InvalidRequest(format!("response_format_json is not valid JSON: {err}"))),
    }
}

fn proto_usage(usage: Usage) -> millrace_proto::v1::Usage {
    millrace_proto::v1::Usage {
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        total_tokens: usage.total_tokens,
    }
}

/// Counts and logs the outcome of a call, and turns it into the gRPC answer.
fn finish<T>(
    method: &'static str,
    job_id: &str,
    started: Instant,
    result: Result<T, UpstreamError>,
) -> Result<Response<T>, Status> {
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(answer) => {
            telemetry::call(method, "ok");
            tracing::debug!(method, job_id, elapsed_ms, "answered");
            Ok(Response::new(answer))
        }
        Err(err) => {
            telemetry::call(method, err.kind());
            match err {
                UpstreamError::NotConfigured | UpstreamError::InvalidRequest(_) => {
                    tracing::debug!(method, job_id, error = %err, "refused");
                }
                _ => {
                    tracing::warn!(method, job_id, elapsed_ms, kind = err.kind(), error = %err, "upstream call failed")
                }
            }
            Err(Status::from(err))
        }
    }
}

#[tonic::async_trait]
impl LlmGateway for LlmGatewayService {
    async fn chat(&self, request: Request<ChatRequest>) -> Result<Response<ChatResponse>, Status> {
        let _call = self.in_flight.enter();
        let started = Instant::now();
        let request = request.into_inner();
        let job_id = request.job_id.clone();
        finish("chat", &job_id, started, self.chat_once(request).await)
    }

    async fn embed(&self, request: Request<LlmEmbedRequest>) -> Result<Response<LlmEmbedResponse>, Status> {
        let _call = self.in_flight.enter();
        let started = Instant::now();
        let request = request.into_inner();
        let job_id = request.job_id.clone();
        finish("embed", &job_id, started, self.embed_once(request).await)
    }
}
