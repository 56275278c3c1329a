//! The ports every service opens: HTTP (`/healthz`, `/readyz`, `/metrics` and the service's own
//! routes) and gRPC (the service's own services plus `grpc.health.v1`, reflection and Admin).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use futures::future::BoxFuture;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use millrace_proto::v1::admin_server::{Admin, AdminServer};
use millrace_proto::v1::{StatsRequest, StatsResponse};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::config::{ServerLimits, ServiceConfig};
use crate::error::ApiError;

type CheckFn = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// The dependencies a service needs before it can take traffic, checked on `/readyz`.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, CheckFn)>,
}

impl Readiness {
    pub fn with<F, Fut>(mut self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks.push((name, Arc::new(move || Box::pin(check()))));
        self
    }

    /// Ready when Redis answers a PING through `pool`.
    pub fn with_redis(self, pool: deadpool_redis::Pool) -> Self {
        self.with("redis", move || {
            let pool = pool.clone();
            async move { crate::redis_conn::ping(&pool).await }
        })
    }

    /// Runs every check; ready only if all pass.
    pub async fn check(&self) -> (bool, serde_json::Value) {
        let results = futures::future::join_all(self.checks.iter().map(|(name, check)| {
            let check = check.clone();
            async move {
                let outcome = tokio::time::timeout(std::time::Duration::from_secs(2), check())
                    .await
                    .unwrap_or_else(|_| Err("timed out".into()));
                (*name, outcome)
            }
        }))
        .await;
        let ready = results.iter().all(|(_, r)| r.is_ok());
        let details: serde_json::Map<String, serde_json::Value> = results
            .into_iter()
            .map(|(name, r)| {
                (name.to_owned(), r.map_or_else(|e| json!({"ok": false, "error": e}), |()| json!({"ok": true})))
            })
            .collect();
        (ready, serde_json::Value::Object(details))
    }
}

/// The process-wide Prometheus recorder (installed once, shared by in-process tests).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Durations as histograms (the exporter's default is a summary), 1 ms to 60 s.
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
                )
                // Sizes counted in texts (e.g. the local model's batches), 1 to 256.
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Suffix("_texts".into()),
                        &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
                    )
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed, in which case ours simply stays empty.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// The routes every service serves besides its own: `/healthz` (the process is alive),
/// `/readyz` (its dependencies answer) and `/metrics`.
pub const OPS_ROUTES: [&str; 3] = [HEALTHZ, READYZ, METRICS];
const HEALTHZ: &str = "/healthz";
const READYZ: &str = "/readyz";
const METRICS: &str = "/metrics";

/// The [`OPS_ROUTES`]; `/metrics` only `with_metrics` (else it has a listener of its own:
/// [`metrics_router`]).
pub fn ops_router(service: &'static str, readiness: Readiness, with_metrics: bool) -> Router {
    let router = Router::new()
        .route(HEALTHZ, get(move || async move { axum::Json(json!({"status": "ok", "service": service})) }))
        .route(
            READYZ,
            get(move || {
                let readiness = readiness.clone();
                async move {
                    let (ready, checks) = readiness.check().await;
                    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                    let body =
                        json!({"status": if ready {"ready"} else {"not_ready"}, "service": service, "checks": checks});
                    (status, axum::Json(body)).into_response()
                }
            }),
        );
    if with_metrics { router.merge(metrics_router()) } else { router }
}

/// `/metrics` alone, for a metrics port of its own (`MILLRACE_METRICS_ADDR`).
pub fn metrics_router() -> Router {
    let metrics = metrics_handle();
    Router::new().route(METRICS, get(move || std::future::ready(metrics.render())))
}

type StatsFn = Arc<dyn Fn() -> BoxFuture<'static, Result<StatsResponse, ApiError>> + Send + Sync>;

/// `millrace.v1.Admin`: what this replica is doing right now.
#[derive(Clone)]
pub struct AdminService {
    stats: StatsFn,
}

impl AdminService {
    pub fn new<F, Fut>(stats: F) -> AdminServer<Self>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<StatsResponse, ApiError>> + Send + 'static,
    {
        AdminServer::new(Self { stats: Arc::new(move || Box::pin(stats())) })
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn stats(
        &self,
        _request: tonic::Request<StatsRequest>,
    ) -> Result<tonic::Response<StatsResponse>, tonic::Status> {
        Ok(tonic::Response::new((self.stats)().await?))
    }
}

/// Both listeners, bound before anything else starts so that a taken port fails fast and
/// tests can bind port 0 and read the real port.
pub struct Listeners {
    pub http: TcpListener,
    pub grpc: TcpListener,
    /// The bounds both servers apply (from the service's config).
    pub limits: ServerLimits,
    /// The gRPC server's TLS, if it has a certificate (`MILLRACE_GRPC_TLS_*`).
    pub grpc_tls: Option<tonic::transport::ServerTlsConfig>,
}

impl Listeners {
    pub async fn bind(config: &ServiceConfig) -> std::io::Result<Self> {
        let http = TcpListener::bind(config.http_addr).await?;
        let grpc = TcpListener::bind(config.grpc_addr).await?;
        Ok(Self { http, grpc, limits: config.limits, grpc_tls: config.grpc_tls.server() })
    }

    pub fn http_addr(&self) -> std::io::Result<SocketAddr> {
        self.http.local_addr()
    }

    pub fn grpc_addr(&self) -> std::io::Result<SocketAddr> {
        self.grpc.local_addr()
    }
}

/// Serves HTTP and gRPC until `stop` is cancelled. gRPC health turns NOT_SERVING as soon as
/// `draining` is cancelled, so load balancers stop sending work while in-flight work drains.
pub async fn serve(
    service: &'static str,
    listeners: Listeners,
    router: Router,
    grpc: Routes,
    draining: CancellationToken,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", ServingStatus::Serving).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(millrace_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(std::io::Error::other)?;
    let routes = grpc.add_service(health_service).add_service(reflection);

    let http_addr = listeners.http_addr()?;
    let grpc_addr = listeners.grpc_addr()?;
    tracing::info!(service, %http_addr, %grpc_addr, "listening");

    tokio::spawn(mark_not_serving_when_draining(health, draining));
    let http_stop = stop.clone();
    let limits = listeners.limits;
    let mut grpc_server = tonic::transport::Server::builder();
    if let Some(tls) = listeners.grpc_tls {
        // With client authentication required, a caller without a certificate signed by the
        // services' CA is refused at the handshake, before any call.
        grpc_server = grpc_server.tls_config(tls).map_err(std::io::Error::other)?;
        tracing::info!(service, %grpc_addr, "gRPC over TLS only");
    }
    // The span goes on the service's own router, where the matched route is known.
    let router = router.layer(axum::middleware::from_fn(crate::telemetry::context::http_server_span));
    let router = crate::bounds::http(router, &limits);
    // The peer's address reaches handlers (`ConnectInfo`): caps per client key on it.
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    let http =
        async move { axum::serve(listeners.http, app).with_graceful_shutdown(http_stop.cancelled_owned()).await };
    let grpc = async move {
        // The same deadline (to the response's headers, so `WatchJob` and health `Watch` streams
        // go on; a timed-out call is CANCELLED, tonic's choice), and calls past the limit of a
        // connection refused at once with RESOURCE_EXHAUSTED rather than queued. The limit is per
        // connection, so a health probe on its own connection is never refused.
        grpc_server
            .timeout(limits.request_timeout)
            .concurrency_limit_per_connection(limits.grpc_concurrency_per_connection)
            .load_shed(true)
            .trace_fn(crate::telemetry::context::grpc_server_span)
            .add_routes(routes)
            .serve_with_incoming_shutdown(
                // TCP_NODELAY, as tonic's own `serve` sets: with Nagle on, a reply written in
                // several frames waits for the caller's delayed ACK (about 40 ms a call).
                tonic::transport::server::TcpIncoming::from(listeners.grpc).with_nodelay(Some(true)),
                stop.cancelled_owned(),
            )
            .await
            .map_err(std::io::Error::other)
    };
    tokio::try_join!(http, grpc).map(|_| ())
}

async fn mark_not_serving_when_draining(health: HealthReporter, draining: CancellationToken) {
    draining.cancelled().await;
    health.set_service_status("", ServingStatus::NotServing).await;
}
