//! The LLM gateway: the single door through which the other services reach upstream
//! OpenAI-compatible APIs, so that keys, retries, limits and token accounting live in one place.
//!
//! gRPC `millrace.v1.LlmGateway` (Chat, Embed) and `millrace.v1.Admin`; HTTP `/healthz`,
//! `/readyz` (the upstream answers `GET {base}/models`) and `/metrics`.

mod config;
mod drain;
mod error;
mod grpc;
pub mod retry;
pub mod telemetry;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use millrace_common::server::{self, AdminService, Listeners, Readiness};
use millrace_proto::v1::StatsResponse;
use millrace_proto::v1::llm_gateway_server::LlmGatewayServer;
use tokio_util::sync::CancellationToken;

pub use config::{ApiKey, Config, DEFAULT_CHAT_MODEL, DEFAULT_EMBED_MODEL, SERVICE, UpstreamConfig};
pub use error::{RETRY_AFTER_METADATA, StartError, UpstreamError};
pub use retry::RetryPolicy;
use upstream::{OpenAiUpstream, Upstream};

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
    shutdown_deadline: Duration,
}

impl Application {
    /// Builds the upstream client, then binds both listeners (port 0 picks a free port).
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let upstream: Option<Arc<dyn Upstream>> = match &config.upstream {
            Some(upstream) => {
                if reqwest::Url::parse(&upstream.base_url).is_ok_and(|url| url.path() == "/") {
                    tracing::warn!(
                        base_url = %upstream.base_url,
                        "MILLRACE_LLM_BASE_URL has no path; OpenAI-compatible APIs usually live under /v1"
                    );
                }
                tracing::info!(base_url = %upstream.base_url, chat_model = %config.chat_model, embed_model = %config.embed_model, "upstream configured");
                Some(Arc::new(OpenAiUpstream::new(upstream)?))
            }
            None => {
                tracing::warn!("no upstream configured (set MILLRACE_LLM_BASE_URL); Chat and Embed will be refused");
                None
            }
        };

        let readiness = match upstream.clone() {
            Some(upstream) => Readiness::default().with("upstream", move || {
                let upstream = upstream.clone();
                async move { upstream.health().await }
            }),
            // Ready: the gateway does what it is configured to do, which is to refuse clearly.
            None => Readiness::default().with("upstream: not configured", || async { Ok(()) }),
        };
        let router = server::ops_router(SERVICE, readiness);

        let in_flight = drain::InFlight::default();
        let gateway = grpc::LlmGatewayService::new(&config, upstream, in_flight.clone());
        let admin_in_flight = in_flight.clone();
        let admin = AdminService::new(move || {
            let in_use = u32::try_from(admin_in_flight.count()).unwrap_or(u32::MAX);
            async move {
                Ok(StatsResponse {
                    service: SERVICE.to_owned(),
                    concurrency_limit: 0,
                    concurrency_in_use: in_use,
                    queues: Vec::new(),
                    breakers: Vec::new(),
                })
            }
        });
        let grpc = tonic::service::Routes::new(
            LlmGatewayServer::new(gateway)
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
            shutdown_deadline: config.service.shutdown_deadline,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Serves until `shutdown` is cancelled, then drains: gRPC health turns NOT_SERVING, calls
    /// in flight get up to `MILLRACE_SHUTDOWN_DEADLINE_MS` to finish, and the listeners close.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let draining = CancellationToken::new();
        let stop = CancellationToken::new();
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
