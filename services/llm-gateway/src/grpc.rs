//! `millrace.v1.LlmGateway`: the other services' door to [`Gateway`], with the same checks,
//! limits and accounting as the HTTP API.

use std::sync::Arc;

use millrace_proto::v1::llm_gateway_server::LlmGateway;
use millrace_proto::v1::{ChatRequest, ChatResponse, LlmEmbedRequest, LlmEmbedResponse, Vector};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::core::Gateway;
use crate::drain::InFlight;
use crate::error::UpstreamError;
use crate::metrics;
use crate::upstream::{ChatCompletion, Message, Usage};

pub struct LlmGatewayService {
    gateway: Arc<Gateway>,
    in_flight: InFlight,
}

impl LlmGatewayService {
    pub fn new(gateway: Arc<Gateway>, in_flight: InFlight) -> Self {
        Self { gateway, in_flight }
    }

    async fn chat_once(&self, request: ChatRequest) -> Result<ChatResponse, UpstreamError> {
        let completion = ChatCompletion {
            model: request.model,
            messages: request.messages.into_iter().map(|m| Message { role: m.role, content: m.content }).collect(),
            response_format: response_format(&request.response_format_json)?,
            temperature: request.temperature,
            max_tokens: request.max_tokens,
        };
        // The stages' calls bill their job and carry no key: gRPC is the internal door.
        let answer = self.gateway.chat(completion, &request.job_id, None).await?;
        Ok(ChatResponse {
            model: answer.model,
            content: answer.content,
            finish_reason: answer.finish_reason,
            usage: Some(proto_usage(answer.usage)),
        })
    }

    async fn embed_once(&self, request: LlmEmbedRequest) -> Result<LlmEmbedResponse, UpstreamError> {
        let answer = self.gateway.embed(request.model, request.inputs, &request.job_id, None).await?;
        Ok(LlmEmbedResponse {
            model: answer.model,
            vectors: answer.vectors.into_iter().map(|values| Vector { values }).collect(),
            usage: Some(proto_usage(answer.usage)),
        })
    }
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
            metrics::call(method, "ok");
            tracing::debug!(method, job_id, elapsed_ms, "answered");
            Ok(Response::new(answer))
        }
        Err(err) => {
            metrics::call(method, err.kind());
            if err.is_callers_fault() {
                tracing::debug!(method, job_id, error = %err, "refused");
            } else {
                tracing::warn!(method, job_id, elapsed_ms, kind = err.kind(), error = %err, "upstream call failed");
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
