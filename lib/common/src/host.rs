//! One host for every service, so that listening, routing, readiness, sampling and the shutdown
//! sequence are written once. A service's `lib.rs` only wires its parts onto a [`Host`].
//!
//! The shutdown sequence, on SIGTERM or Ctrl-C:
//! 1. gRPC health turns NOT_SERVING at once, while both ports stay open (health checks and
//!    metrics keep answering);
//! 2. the service's work stops pulling and drains its in-flight entries under its own deadline
//!    (a stage's stream worker), then the service's drain hook runs (the gateway waits for its
//!    calls in flight, then finishes its bookkeeping);
//! 3. the listeners stop accepting and finish their requests within the close grace.
//!
//! A server that fails before that ends the service with its error.

use std::error::Error;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use futures::future::BoxFuture;
use millrace_proto::v1::StatsResponse;
use millrace_proto::v1::admin_server::AdminServer;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::config::{ConfigError, ServiceConfig, Settings};
use crate::error::ApiError;
use crate::server::{AdminService, Listeners, Readiness, ops_router, serve};

/// How long the listeners get to close after the drain, unless the service says otherwise.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

type Sampler = Box<dyn FnOnce(CancellationToken) + Send>;
type Work = Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, std::io::Result<()>> + Send>;
type Drain = BoxFuture<'static, ()>;

/// A service with its ports bound and its parts wired, not yet serving.
pub struct Host {
    service: &'static str,
    listeners: Listeners,
    http_addr: SocketAddr,
    grpc_addr: SocketAddr,
    routes: Router,
    fallbacks: fn(Router) -> Router,
    grpc: Routes,
    readiness: Readiness,
    admin: Option<AdminServer<AdminService>>,
    samplers: Vec<Sampler>,
    work: Option<Work>,
    drain: Option<Drain>,
    close_grace: Duration,
}

impl Host {
    /// Binds both ports first, so that a taken port fails before anything else starts (and
    /// tests can bind port 0 and read the real port).
    pub async fn bind(service: &'static str, config: &ServiceConfig) -> std::io::Result<Self> {
        let listeners = Listeners::bind(config).await?;
        let (http_addr, grpc_addr) = (listeners.http_addr()?, listeners.grpc_addr()?);
        Ok(Self {
            service,
            listeners,
            http_addr,
            grpc_addr,
            routes: Router::new(),
            fallbacks: std::convert::identity,
            grpc: Routes::builder().routes(),
            readiness: Readiness::default(),
            admin: None,
            samplers: Vec::new(),
            work: None,
            drain: None,
            close_grace: CLOSE_GRACE,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Serves these HTTP routes besides `/healthz`, `/readyz` and `/metrics`.
    pub fn with_routes(mut self, routes: Router) -> Self {
        self.routes = self.routes.merge(routes);
        self
    }

    /// Applied to the whole router, ops routes included (e.g. JSON answers for unknown paths).
    pub fn with_fallbacks(mut self, fallbacks: fn(Router) -> Router) -> Self {
        self.fallbacks = fallbacks;
        self
    }

    /// Serves these gRPC services besides health, reflection and Admin.
    pub fn with_grpc(mut self, grpc: Routes) -> Self {
        self.grpc = grpc;
        self
    }

    /// Adds a readiness check (a dependency that must answer before the service takes traffic).
    pub fn with_check<F, Fut>(mut self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.readiness = self.readiness.with(name, check);
        self
    }

    /// Ready only when Redis answers a PING through `pool`.
    pub fn with_redis_check(mut self, pool: deadpool_redis::Pool) -> Self {
        self.readiness = self.readiness.with_redis(pool);
        self
    }

    /// `millrace.v1.Admin/Stats`: what this replica is doing right now.
    pub fn with_admin<F, Fut>(mut self, stats: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<StatsResponse, ApiError>> + Send + 'static,
    {
        self.admin = Some(AdminService::new(stats));
        self
    }

    /// A background task (a metric sampler), started when the host runs and told to stop, by
    /// the token it is given, when the ports close.
    pub fn with_sampler(mut self, start: impl FnOnce(CancellationToken) + Send + 'static) -> Self {
        self.samplers.push(Box::new(start));
        self
    }

    /// The service's main work (a stream worker), started when the host runs. It is given the
    /// shutdown token and must return once it has stopped pulling and drained under its own
    /// deadline; the ports stay open until then. Its ending on its own also stops the service.
    pub fn with_work<F, Fut>(mut self, work: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = std::io::Result<()>> + Send + 'static,
    {
        self.work = Some(Box::new(move |shutdown| Box::pin(work(shutdown))));
        self
    }

    /// Runs after the signal (and after the work has drained), while the ports are still open:
    /// the service finishes what it has in flight under its own deadline.
    pub fn with_drain(mut self, drain: impl Future<Output = ()> + Send + 'static) -> Self {
        self.drain = Some(Box::pin(drain));
        self
    }

    /// How long the listeners may take to finish their requests once the drain is over.
    pub fn with_close_grace(mut self, grace: Duration) -> Self {
        self.close_grace = grace;
        self
    }

    /// Serves until `shutdown` is cancelled, then shuts down in order (see the module's doc).
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let service = self.service;
        // Health turns NOT_SERVING at the signal, so load balancers stop sending work at once.
        let draining = shutdown.child_token();
        let stop = CancellationToken::new();
        for start in self.samplers {
            start(stop.clone());
        }
        let grpc = match self.admin {
            Some(admin) => self.grpc.add_service(admin),
            None => self.grpc,
        };
        let router = (self.fallbacks)(self.routes.merge(ops_router(service, self.readiness)));
        let mut server = tokio::spawn(serve(service, self.listeners, router, grpc, draining.clone(), stop.clone()));

        // Without work of its own, a service's work is over at the signal.
        let work = match self.work {
            Some(work) => work(shutdown),
            None => Box::pin(async move {
                shutdown.cancelled().await;
                Ok(())
            }),
        };
        let worked = tokio::select! {
            served = &mut server => return joined(served),
            worked = work => worked,
        };
        draining.cancel();
        if let Some(drain) = self.drain {
            tokio::select! {
                served = &mut server => return joined(served),
                () = drain => {}
            }
        }

        stop.cancel();
        let served = match tokio::time::timeout(self.close_grace, &mut server).await {
            Ok(served) => joined(served),
            Err(_) => {
                tracing::warn!(grace = ?self.close_grace, "requests still in flight when the listeners closed; stopping anyway");
                Ok(())
            }
        };
        tracing::info!(service, "stopped");
        worked.and(served)
    }
}

fn joined(served: Result<std::io::Result<()>, tokio::task::JoinError>) -> std::io::Result<()> {
    served.map_err(std::io::Error::other)?
}

/// What a service's `main` does: telemetry, the config (where `--check-config` exits), the
/// service's host, and running it until SIGTERM or Ctrl-C.
pub fn main<C, B, Fut, E>(
    service: &'static str,
    from_settings: fn(&Settings) -> Result<C, ConfigError>,
    build: B,
) -> Result<(), Box<dyn Error + Send + Sync>>
where
    B: FnOnce(C) -> Fut,
    Fut: Future<Output = Result<Host, E>>,
    E: Into<Box<dyn Error + Send + Sync>>,
{
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async move {
        let _telemetry = crate::telemetry::init(service);
        let config = crate::config::load_or_exit(from_settings);
        let host = build(config).await.map_err(Into::into)?;
        host.run_until_stopped(crate::shutdown::on_signal()).await?;
        Ok(())
    })
}
