//! The ingestion service: the job API of millrace over HTTP (JSON and multipart) and gRPC. It
//! validates documents (or the URLs to fetch them from), applies admission control, records jobs
//! and enqueues them for chunking, reports job progress, and answers search and document queries
//! through the embeddings and storage services.

pub mod admission;
pub mod api;
pub mod auth;
pub mod budget;
pub mod config;
pub mod console;
pub mod core;
pub mod grpc;
pub mod history;
pub mod metrics;
pub mod rerank;
pub mod stats;
pub mod validate;
pub mod watch;
pub mod webhooks;

use std::sync::Arc;

use millrace_auth::door::grpc::DoorLayer;
use millrace_auth::{AuditLog, Authenticator, Door, KeyLimits};
use millrace_common::server::AdminService;
use millrace_common::{ConfigError, Host, grpc_client, redis_conn};
use millrace_fetch::{AddressPolicy, Resolver, SystemResolver, UrlGuard};
use millrace_pipeline::{JobStore, Keys};
use tonic::service::Routes;
use tower::Layer as _;

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

/// The ingestion service's wiring onto the common host. On shutdown both servers stop
/// accepting and finish the requests in flight within the shutdown deadline.
pub struct Application;

impl Application {
    /// Connects nothing eagerly (Redis, storage and embeddings may start later; `/readyz`
    /// tells when they answer) and binds both ports.
    pub async fn build(config: Config) -> Result<Host, BuildError> {
        Self::build_with_resolver(config, Arc::new(SystemResolver)).await
    }

    /// [`Application::build`] with the resolver that submitted URLs are checked with (tests
    /// map names to addresses without DNS).
    pub async fn build_with_resolver(config: Config, resolver: Arc<dyn Resolver>) -> Result<Host, BuildError> {
        let pool = redis_conn::pool(&config.service.redis, REDIS_POOL_SIZE).map_err(BuildError::Redis)?;
        let keys = Keys::new(config.service.key_prefix.clone());
        metrics::register();
        let jobs = JobStore::new(pool.clone(), keys.clone(), config.service.job_retention)
            .with_failed_payload_retention(config.service.failed_payload_retention);
        tokio::spawn(admission::warn_unless_durable(pool.clone()));
        let sampled_jobs = jobs.clone();
        let metrics_interval = config.metrics_interval;
        let tls = &config.service.grpc_tls;
        let storage =
            grpc_client::lazy_channel("STORAGE_URL", &config.storage_url, Some(config.downstream_timeout), tls)?;
        let embeddings =
            grpc_client::lazy_channel("EMBEDDINGS_URL", &config.embeddings_url, Some(config.downstream_timeout), tls)?;
        // The reranker's calls have a search's deadline; the stats' channel below has none.
        let llm_gateway = grpc_client::lazy_channel(
            "LLM_GATEWAY_URL",
            &config.llm_gateway_url,
            Some(config.downstream_timeout),
            tls,
        )?;
        let peers = stats::Peers::new(
            pool.clone(),
            keys.clone(),
            stats::PeerChannels {
                chunking: grpc_client::lazy_channel("CHUNKING_URL", &config.chunking_url, None, tls)?,
                metadata: grpc_client::lazy_channel("METADATA_URL", &config.metadata_url, None, tls)?,
                embeddings: embeddings.clone(),
                storage: storage.clone(),
                llm_gateway: grpc_client::lazy_channel("LLM_GATEWAY_URL", &config.llm_gateway_url, None, tls)?,
            },
        );

        let host = Host::bind(SERVICE, &config.service)
            .await?
            .with_close_grace(config.service.shutdown_deadline)
            .with_redis_check(pool.clone())
            .with_check("storage", {
                let channel = storage.clone();
                move || grpc_client::check_health(channel.clone())
            })
            .with_check("embeddings", {
                let channel = embeddings.clone();
                move || grpc_client::check_health(channel.clone())
            });

        // Every route but health, readiness, metrics and the API's description needs a key
        // (`auth::rules`); the Admin service is guarded too, so it is served here rather than
        // by the host.
        let authenticator = Authenticator::from_config(&config.auth)?;
        let store = authenticator.store().cloned();
        let audit = AuditLog::new(store.clone());
        let access = api::keys::Access { audit: audit.clone(), store };
        let limits = KeyLimits::new(
            redis_conn::shared(&config.service.redis).map_err(BuildError::Redis)?,
            &config.service.key_prefix,
        );
        let door = Door::new(authenticator, auth::rules).with_limits(limits);
        let guard = DoorLayer::new(door.clone());
        let admin = AdminService::new(move || {
            let pool = pool.clone();
            let keys = keys.clone();
            async move { stats::own_stats(&pool, &keys).await }
        });
        let urls = UrlGuard::new(AddressPolicy::from_config(&config.fetch), resolver);
        let redis = redis_conn::client(&config.service.redis).map_err(|err| BuildError::Redis(err.to_string()))?;
        let watchers = watch::Watchers::new(jobs.clone(), redis, config.watchers);
        let history = history::HistoryStore::new(config.auth.database_url.as_deref(), &config.auth.database_tls)?;
        let (service_config, metrics_every) = (config.service.clone(), config.metrics_interval);
        let deliverer = webhooks::Deliverer::from_config(&config, &urls)?;
        let outbox = deliverer.as_ref().map(|deliverer| deliverer.outbox().clone());
        let core = Arc::new(
            Core::new(config, jobs.clone(), core::Downstream { storage, embeddings, llm_gateway }, peers, urls, audit)
                .with_history(history.clone())
                .with_outbox(outbox.clone()),
        );
        let history_redis =
            redis_conn::client(&service_config.redis).map_err(|err| BuildError::Redis(err.to_string()))?;
        let feeder_core = core.clone();
        let host = match deliverer {
            Some(deliverer) => deliverer.start(host, metrics_interval),
            None => host,
        };
        Ok(host
            .with_routes(api::router(core.clone(), watchers.clone(), access, door))
            .with_fallbacks(api::with_json_fallbacks)
            .with_grpc(
                Routes::new(guard.layer(grpc::IngestionGrpc::server(core, watchers))).add_service(guard.layer(admin)),
            )
            .with_sampler(move |stop| metrics::sample_jobs(sampled_jobs, metrics_interval, stop))
            // The durable history: its worker and the feeder of runs' items, on every replica.
            .with_sampler(move |stop| {
                history::spawn_worker(
                    &service_config,
                    jobs,
                    history.clone(),
                    history::hooks::Hooks::new(outbox),
                    history_redis,
                    metrics_every,
                    stop.clone(),
                );
                tokio::spawn(history::feeder::run(feeder_core, history, stop));
            }))
    }
}
