//! The ingestion service: the job API of millrace over HTTP (JSON and multipart) and gRPC. It
//! validates documents (or the URLs to fetch them from), applies admission control, records jobs
//! and enqueues them for chunking, reports job progress, and answers search and document queries
//! through the embeddings and storage services.

pub mod admission;
pub mod api;
pub mod budget;
pub mod config;
pub mod core;
pub mod grpc;
pub mod metrics;
pub mod stats;
pub mod validate;
pub mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use millrace_common::server::{AdminService, Listeners, Readiness, ops_router, serve};
use millrace_common::{ConfigError, grpc_client, redis_conn};
use millrace_fetch::{AddressPolicy, Resolver, SystemResolver, UrlGuard};
use millrace_pipeline::{JobStore, Keys};
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

pub use crate::config::Config;
pub use crate::core::Core;

const SERVICE: &str = "ingestion";

/// Pooled Redis connections; every request needs one or two short commands.
const REDIS_POOL_SIZE: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("redis pool: {0}")]
    Redis(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot bind: {0}")]
    Bind(#[from] std::io::Error),
}

/// The service, with its ports bound and not yet serving.
pub struct Application {
    listeners: Listeners,
    http_addr: SocketAddr,
    grpc_addr: SocketAddr,
    router: Router,
    grpc: Routes,
    shutdown_deadline: Duration,
    jobs: JobStore,
    metrics_interval: Duration,
}

impl Application {
    /// Connects nothing eagerly (Redis, storage and embeddings may start later; `/readyz`
    /// tells when they answer) and binds both ports.
    pub async fn build(config: Config) -> Result<Self, BuildError> {
        Self::build_with_resolver(config, Arc::new(SystemResolver)).await
    }

    /// [`Application::build`] with the resolver that submitted URLs are checked with (tests
    /// map names to addresses without DNS).
    pub async fn build_with_resolver(config: Config, resolver: Arc<dyn Resolver>) -> Result<Self, BuildError> {
        let pool = redis_conn::pool(&config.service.redis_url, REDIS_POOL_SIZE).map_err(BuildError::Redis)?;
        let keys = Keys::new(config.service.key_prefix.clone());
        metrics::register();
        let jobs = JobStore::new(pool.clone(), keys.clone(), config.service.job_retention)
            .with_failed_payload_retention(config.service.failed_payload_retention);
        tokio::spawn(admission::warn_unless_durable(pool.clone()));
        let sampled_jobs = jobs.clone();
        let metrics_interval = config.metrics_interval;
        let storage = grpc_client::lazy_channel("STORAGE_URL", &config.storage_url, Some(config.downstream_timeout))?;
        let embeddings =
            grpc_client::lazy_channel("EMBEDDINGS_URL", &config.embeddings_url, Some(config.downstream_timeout))?;
        let peers = stats::Peers::new(
            pool.clone(),
            keys.clone(),
            stats::PeerChannels {
                chunking: grpc_client::lazy_channel("CHUNKING_URL", &config.chunking_url, None)?,
                metadata: grpc_client::lazy_channel("METADATA_URL", &config.metadata_url, None)?,
                embeddings: embeddings.clone(),
                storage: storage.clone(),
                llm_gateway: grpc_client::lazy_channel("LLM_GATEWAY_URL", &config.llm_gateway_url, None)?,
            },
        );

        let readiness = Readiness::default()
            .with_redis(pool.clone())
            .with("storage", {
                let channel = storage.clone();
                move || grpc_client::check_health(channel.clone())
            })
            .with("embeddings", {
                let channel = embeddings.clone();
                move || grpc_client::check_health(channel.clone())
            });

        let shutdown_deadline = config.service.shutdown_deadline;
        let listeners = Listeners::bind(&config.service).await?;
        let http_addr = listeners.http_addr()?;
        let grpc_addr = listeners.grpc_addr()?;

        let urls = UrlGuard::new(AddressPolicy::new(config.fetch.allow_private), resolver);
        let redis = redis_conn::client(&config.service.redis_url).map_err(|err| BuildError::Redis(err.to_string()))?;
        let watchers = watch::Watchers::new(jobs.clone(), redis, config.watchers);
        let core = Arc::new(Core::new(config, jobs, storage, embeddings, peers, urls));
        let router =
            api::with_json_fallbacks(api::router(core.clone(), watchers.clone()).merge(ops_router(SERVICE, readiness)));
        let grpc = Routes::new(grpc::IngestionGrpc::server(core, watchers)).add_service(admin_service(pool, keys));
        Ok(Self {
            listeners,
            http_addr,
            grpc_addr,
            router,
            grpc,
            shutdown_deadline,
            jobs: sampled_jobs,
            metrics_interval,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Serves until `shutdown` is cancelled: gRPC health turns NOT_SERVING, then both servers
    /// stop accepting and finish the requests in flight, within the shutdown deadline.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let draining = CancellationToken::new();
        let stop = CancellationToken::new();
        metrics::sample_jobs(self.jobs.clone(), self.metrics_interval, stop.clone());
        let mut server =
            tokio::spawn(serve(SERVICE, self.listeners, self.router, self.grpc, draining.clone(), stop.clone()));
        tokio::select! {
            () = shutdown.cancelled() => {}
            result = &mut server => return result.map_err(std::io::Error::other)?,
        }
        draining.cancel();
        stop.cancel();
        let result = match tokio::time::timeout(self.shutdown_deadline, server).await {
            Ok(result) => result.map_err(std::io::Error::other)?,
            Err(_) => {
                tracing::warn!(deadline = ?self.shutdown_deadline, "requests still in flight at the shutdown deadline");
                Ok(())
            }
        };
        tracing::info!(service = SERVICE, "stopped");
        result
    }
}

/// `millrace.v1.Admin` for this service: the same stats `GET /v1/stats` shows for it.
fn admin_service(
    pool: deadpool_redis::Pool,
    keys: Keys,
) -> millrace_proto::v1::admin_server::AdminServer<AdminService> {
    AdminService::new(move || {
        let pool = pool.clone();
        let keys = keys.clone();
        async move { stats::own_stats(&pool, &keys).await }
    })
}
