//! The LLM gateway: the single door through which the other services reach upstream
//! OpenAI-compatible APIs, so that keys, retries, limits and token accounting live in one place.
//!
//! gRPC `millrace.v1.LlmGateway` (Chat, Embed) and `millrace.v1.Admin`; HTTP: the
//! OpenAI-compatible `/v1/chat/completions` (streaming too), `/v1/embeddings` and `/v1/models`,
//! `/v1/limits` (every upstream's quota, use, breaker and last probe, and the budget),
//! `/healthz`, `/readyz` (Redis answers; upstreams are not its business) and `/metrics`.

mod accounting;
mod config;
pub mod core;
mod drain;
mod error;
mod grpc;
mod http;
mod limits;
pub mod metrics;
mod spans;
pub mod upstream;
mod upstreams;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use millrace_common::server::{self, AdminService, Listeners, Readiness};
use millrace_proto::v1::llm_gateway_server::LlmGatewayServer;
use tokio_util::sync::CancellationToken;

pub use config::{
    ApiKey, Config, DEFAULT_CHAT_MODEL, DEFAULT_EMBED_MODEL, Price, SERVICE, TIERS, Tier, UpstreamConfig,
};
pub use error::{RETRY_AFTER_METADATA, StartError, UpstreamError};
pub use millrace_resilience::RetryPolicy;

use crate::core::Gateway;

/// Embed calls carry many texts in; answers carry many vectors out (callers must raise their
/// own decoding limit likewise for large batches).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// After the drain, how long the listeners may take to close.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The gateway with its ports bound, ready to run.
pub struct Application {
    listeners: Listeners,
    http_addr: SocketAddr,
    grpc_addr: SocketAddr,
    router: axum::Router,
    grpc: tonic::service::Routes,
    in_flight: drain::InFlight,
    gateway: Arc<Gateway>,
    shutdown_deadline: Duration,
    metrics_interval: Duration,
}

impl Application {
    /// Builds the upstreams' clients, limiters and breakers, then binds both listeners (port 0
    /// picks a free port).
    pub async fn build(config: Config) -> Result<Self, StartError> {
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
        // Ready means the gateway's own dependency (Redis) answers, never an upstream's health:
        // see `Gateway::probe_upstreams`.
        let readiness = {
            let gateway = gateway.clone();
            Readiness::default().with("redis", move || {
                let gateway = gateway.clone();
                async move { gateway.ping_redis().await }
            })
        };
        let router = server::ops_router(SERVICE, readiness)
            .merge(limits::routes(gateway.clone()))
            .merge(http::routes(gateway.clone()));

        let in_flight = drain::InFlight::default();
        let grpc_gateway = grpc::LlmGatewayService::new(gateway.clone(), in_flight.clone());
        let admin_in_flight = in_flight.clone();
        let admin_gateway = gateway.clone();
        let admin = AdminService::new(move || {
            let in_use = u32::try_from(admin_in_flight.count()).unwrap_or(u32::MAX);
            let gateway = admin_gateway.clone();
            async move { Ok(limits::stats(&gateway, in_use).await) }
        });
        let grpc = tonic::service::Routes::new(
            LlmGatewayServer::new(grpc_gateway)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(admin);

        let listeners = Listeners::bind(&config.service).await?;
        let http_addr = listeners.http_addr()?;
        let grpc_addr = listeners.grpc_addr()?;
        Ok(Self {
            listeners,
            http_addr,
            grpc_addr,
            router,
            grpc,
            in_flight,
            gateway,
            shutdown_deadline: config.service.shutdown_deadline,
            metrics_interval: config.metrics_interval,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Serves until `shutdown` is cancelled, then drains: gRPC health turns NOT_SERVING, calls
    /// in flight get up to `MILLRACE_SHUTDOWN_DEADLINE_MS` to finish, their usage is recorded,
    /// and the listeners close.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let draining = CancellationToken::new();
        let stop = CancellationToken::new();
        limits::sample(self.gateway.clone(), self.metrics_interval, stop.clone());
        let serve = server::serve(SERVICE, self.listeners, self.router, self.grpc, draining.clone(), stop.clone());
        tokio::pin!(serve);
        tokio::select! {
            result = &mut serve => return result,
            () = shutdown.cancelled() => {}
        }

        draining.cancel();
        tracing::info!(in_flight = self.in_flight.count(), "draining");
        tokio::select! {
            result = &mut serve => return result,
            drained = tokio::time::timeout(self.shutdown_deadline, self.in_flight.idle()) => {
                if drained.is_err() {
                    tracing::warn!(in_flight = self.in_flight.count(), "shutdown deadline passed with calls in flight");
                }
            }
        }
        self.gateway.finish_bookkeeping(CLOSE_GRACE).await;

        stop.cancel();
        match tokio::time::timeout(CLOSE_GRACE, serve).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!("listeners did not close in time; stopping anyway");
                Ok(())
            }
        }
    }
}
