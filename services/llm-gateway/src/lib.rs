//! The LLM gateway: the single door through which the other services reach upstream
//! OpenAI-compatible APIs, so that keys, retries, limits and token accounting live in one place.
//!
//! gRPC `millrace.v1.LlmGateway` (Chat, Embed: the stages' internal door, mutual TLS when
//! configured) and `millrace.v1.Admin`; HTTP: the OpenAI-compatible `/v1/chat/completions`
//! (streaming too), `/v1/embeddings` and `/v1/models` for `llm`-scoped keys (virtual keys, with
//! their own RPM, TPM and daily budget), `/v1/limits` for `admin` keys (every upstream's quota,
//! use, breaker and last probe, and the budget), `/healthz`, `/readyz` (Redis answers; upstreams
//! are not its business); `/metrics` on a port of its own (`MILLRACE_METRICS_ADDR`).

mod accounting;
mod config;
pub mod core;
mod drain;
mod error;
mod grpc;
mod http;
mod key_limits;
mod limits;
pub mod metrics;
mod spans;
pub mod upstream;
mod upstreams;

use std::sync::Arc;
use std::time::Duration;

use millrace_common::Host;
use millrace_common::host::CLOSE_GRACE;
use millrace_proto::v1::llm_gateway_server::LlmGatewayServer;

pub use config::{
    ApiKey, Config, DEFAULT_CHAT_MODEL, DEFAULT_EMBED_MODEL, Price, SERVICE, TIERS, Tier, UpstreamConfig,
};
pub use error::{RETRY_AFTER_METADATA, StartError, UpstreamError};
pub use millrace_resilience::RetryPolicy;

use crate::core::Gateway;

/// Embed calls carry many texts in; answers carry many vectors out (callers must raise their
/// own decoding limit likewise for large batches).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The gateway's wiring onto the common host.
pub struct Application;

impl Application {
    /// Builds the upstreams' clients, limiters and breakers, then binds both listeners (port 0
    /// picks a free port).
    pub async fn build(config: Config) -> Result<Host, StartError> {
        for upstream in &config.upstreams {
            if reqwest::Url::parse(&upstream.base_url).is_ok_and(|url| url.path() == "/") {
                tracing::warn!(
                    upstream = %upstream.name,
                    base_url = %upstream.base_url,
                    "the base URL has no path; OpenAI-compatible APIs usually live under /v1"
                );
            }
            tracing::info!(
                upstream = %upstream.name,
                base_url = %upstream.base_url,
                models = ?upstream.models,
                rpm = ?upstream.quota.rpm,
                tpm = ?upstream.quota.tpm,
                max_concurrency = upstream.max_concurrency,
                priority = upstream.priority,
                weight = upstream.weight,
                "upstream configured"
            );
        }
        if config.upstreams.is_empty() {
            tracing::warn!(
                "no upstream configured (set MILLRACE_LLM_BASE_URL or MILLRACE_LLM_UPSTREAMS_FILE); calls will be refused"
            );
        }
        metrics::register(config.max_daily_cost_usd);
        let gateway = Arc::new(Gateway::build(&config)?);
        let authenticator = millrace_auth::Authenticator::from_config(&config.auth).map_err(StartError::Auth)?;
        // Ready means the gateway's own dependency (Redis) answers, never an upstream's health:
        // see `Gateway::probe_upstreams`.
        let in_flight = drain::InFlight::default();
        let grpc_gateway = grpc::LlmGatewayService::new(gateway.clone(), in_flight.clone());
        let grpc = tonic::service::Routes::new(
            LlmGatewayServer::new(grpc_gateway)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        );

        let host = Host::bind(SERVICE, &config.service).await?;
        let (admin_in_flight, admin_gateway, ping_gateway, sampled) =
            (in_flight.clone(), gateway.clone(), gateway.clone(), gateway.clone());
        let metrics_interval = config.metrics_interval;
        Ok(host
            .with_check("redis", move || {
                let gateway = ping_gateway.clone();
                async move { gateway.ping_redis().await }
            })
            .with_routes(
                limits::routes(gateway.clone(), authenticator.clone())
                    .merge(http::routes(gateway.clone(), authenticator)),
            )
            .with_grpc(grpc)
            .with_admin(move || {
                let in_use = u32::try_from(admin_in_flight.count()).unwrap_or(u32::MAX);
                let gateway = admin_gateway.clone();
                async move { Ok(limits::stats(&gateway, in_use).await) }
            })
            .with_sampler(move |stop| limits::sample(sampled, metrics_interval, stop))
            .with_drain(finish_calls(in_flight, gateway, config.service.shutdown_deadline)))
    }
}

/// Calls in flight get up to `MILLRACE_SHUTDOWN_DEADLINE_MS` to finish, then their usage is
/// recorded (within the close grace), while the ports stay open.
async fn finish_calls(in_flight: drain::InFlight, gateway: Arc<Gateway>, deadline: Duration) {
    tracing::info!(in_flight = in_flight.count(), "draining");
    if tokio::time::timeout(deadline, in_flight.idle()).await.is_err() {
        tracing::warn!(in_flight = in_flight.count(), "shutdown deadline passed with calls in flight");
    }
    gateway.finish_bookkeeping(CLOSE_GRACE).await;
}
