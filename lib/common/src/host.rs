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

use serde::Serialize;
use tokio::net::TcpListener;

use crate::config::{Command, ConfigError, Read, ServiceConfig, Settings};
use crate::error::ApiError;
use crate::server::{AdminService, Listeners, OPS_ROUTES, Readiness, metrics_router, ops_router, serve};

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
    /// `/metrics` on a listener of its own (`MILLRACE_METRICS_ADDR`), not on the HTTP port.
    metrics: Option<TcpListener>,
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
        let metrics = match config.metrics_addr {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        Ok(Self {
            service,
            listeners,
            http_addr,
            grpc_addr,
            metrics,
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

    /// Where `/metrics` is served when not on the HTTP port (the bound address: port 0 resolved).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|listener| listener.local_addr().ok())
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
        let router = (self.fallbacks)(self.routes.merge(ops_router(service, self.readiness, self.metrics.is_none())));
        let served = serve(service, self.listeners, router, grpc, draining.clone(), stop.clone());
        let metrics = self.metrics.map(|listener| serve_metrics(service, listener, stop.clone()));
        let mut server = tokio::spawn(async move {
            match metrics {
                Some(metrics) => tokio::try_join!(served, metrics).map(|_| ()),
                None => served.await,
            }
        });

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

/// `/metrics` alone on its own listener, until the ports close (metrics keep answering while
/// the service drains).
async fn serve_metrics(service: &'static str, listener: TcpListener, stop: CancellationToken) -> std::io::Result<()> {
    tracing::info!(service, metrics_addr = %listener.local_addr()?, "serving /metrics apart from the API");
    axum::serve(listener, metrics_router()).with_graceful_shutdown(stop.cancelled_owned()).await
}

fn joined(served: Result<std::io::Result<()>, tokio::task::JoinError>) -> std::io::Result<()> {
    served.map_err(std::io::Error::other)?
}

/// What a service's `main` does: with `--describe`, print [`describe`] and exit; else
/// telemetry, the config (where `--check-config` exits), the service's host, and running it
/// until SIGTERM or Ctrl-C.
pub fn main<C, B, Fut, E>(
    service: &'static str,
    from_settings: fn(&Settings) -> Result<C, ConfigError>,
    build: B,
) -> Result<(), Box<dyn Error + Send + Sync>>
where
    C: Describe,
    B: FnOnce(C) -> Fut,
    Fut: Future<Output = Result<Host, E>>,
    E: Into<Box<dyn Error + Send + Sync>>,
{
    let command = Command::from_env_or_exit();
    if command == Command::Describe {
        match Settings::load().and_then(|settings| describe(service, settings, from_settings)) {
            Ok(description) => {
                println!("{}", serde_json::to_string_pretty(&description)?);
                std::process::exit(0);
            }
            Err(err) => {
                eprintln!("configuration error: {err}");
                std::process::exit(2);
            }
        }
    }
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async move {
        let _telemetry = crate::telemetry::init(service);
        let config = crate::config::load_or_exit(command == Command::CheckConfig, from_settings);
        let host = build(config).await.map_err(Into::into)?;
        host.run_until_stopped(crate::shutdown::on_signal()).await?;
        Ok(())
    })
}

/// What a service's config tells `--describe` besides the variables it read: its common config
/// and, for a stage, the stream it consumes.
pub trait Describe {
    fn described(&self) -> (&ServiceConfig, Option<Consumes>);
}

/// The stream a stage reads, as its consumer group, and where its dead letters go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Consumes {
    pub stream: String,
    pub group: String,
    pub dead_letters: String,
}

/// A service as its deployment needs to know it, under the settings it was described with.
#[derive(Debug, Clone, Serialize)]
pub struct Description {
    pub service: &'static str,
    pub ports: Ports,
    pub health_routes: [&'static str; 3],
    pub consumes: Option<Consumes>,
    /// Every `MILLRACE_*` variable the loader read, with its default and whether it is required.
    pub variables: Vec<Read>,
    /// The variables that hold another service's gRPC URL.
    pub peers: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ports {
    pub http: u16,
    pub grpc: u16,
    /// `/metrics`' own port (`MILLRACE_METRICS_ADDR`); None: on the HTTP port.
    pub metrics: Option<u16>,
}

/// Runs the service's real config loader on `settings` made for describing (a missing required
/// value takes its example, no file is opened: [`Settings::for_describe`]) and reports what it
/// read. A value that is set but wrong is still an error naming its variable.
pub fn describe<C: Describe>(
    service: &'static str,
    settings: Settings,
    from_settings: fn(&Settings) -> Result<C, ConfigError>,
) -> Result<Description, ConfigError> {
    let settings = settings.for_describe();
    let config = from_settings(&settings)?;
    let (service_config, consumes) = config.described();
    let variables: Vec<Read> = settings.reads().into_values().collect();
    let peers = variables.iter().filter(|read| read.peer).map(|read| read.name.clone()).collect();
    let ports = Ports {
        http: service_config.http_addr.port(),
        grpc: service_config.grpc_addr.port(),
        metrics: service_config.metrics_addr.map(|addr| addr.port()),
    };
    Ok(Description { service, ports, health_routes: OPS_ROUTES, consumes, variables, peers })
}

impl Describe for ServiceConfig {
    fn described(&self) -> (&ServiceConfig, Option<Consumes>) {
        (self, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_description_holds_the_ports_routes_and_every_variable_read() {
        let settings = Settings::from_pairs([("MILLRACE_GRPC_ADDR", "127.0.0.1:7000")]);
        let described = describe("x", settings, |settings| {
            settings.grpc_url("STORAGE_URL", "http://127.0.0.1:9064")?;
            ServiceConfig::load(settings, "x", 8000, 9000)
        })
        .unwrap();
        assert_eq!(described.ports, Ports { http: 8000, grpc: 7000, metrics: None });
        assert_eq!(described.health_routes, ["/healthz", "/readyz", "/metrics"]);
        assert_eq!(described.peers, ["MILLRACE_STORAGE_URL"]);
        let names: Vec<&str> = described.variables.iter().map(|read| read.name.as_str()).collect();
        assert!(names.contains(&"MILLRACE_REDIS_URL") && names.contains(&"MILLRACE_SHUTDOWN_DEADLINE_MS"), "{names:?}");
        let json = serde_json::to_value(&described).unwrap();
        assert_eq!(json["consumes"], serde_json::Value::Null);
    }
}
