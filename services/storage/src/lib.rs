//! The storage stage: writes embedded, enriched chunks into PostgreSQL with pgvector, switches
//! a document to its new version when its last batch is stored, and answers searches.
//! Other services never hold database connections; they call this one over gRPC.

mod grpc;
mod handler;
pub mod metrics;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use millrace_common::{ConfigError, ServiceConfig, Settings};
use millrace_pipeline::Stage;
use millrace_pipeline::runtime::{StageBase, StageService, worker_config};
use millrace_proto::storage_server::StorageServer;
use millrace_streams::WorkerConfig;
use tokio_util::sync::CancellationToken;

use crate::store::{PgStore, StoreConfig};

#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    pub worker: WorkerConfig,
    pub store: StoreConfig,
    pub tenant_id: String,
}

impl Config {
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let service = ServiceConfig::load(settings, "storage", 8064, 9064)?;
        let worker = worker_config(settings, &service, Stage::Storage, 4)?;
        let database_url: String = settings.require("DATABASE_URL")?;
        if !database_url.starts_with("postgres://") && !database_url.starts_with("postgresql://") {
            return Err(ConfigError::new("DATABASE_URL", "must be a postgres:// URL"));
        }
        let store = StoreConfig {
            database_url,
            dimensions: settings.positive("EMBEDDING_DIM", 384)?,
            hnsw_m: settings.positive("HNSW_M", 16)?,
            hnsw_ef_construction: settings.positive("HNSW_EF_CONSTRUCTION", 64)?,
            hnsw_ef_search: settings.positive("HNSW_EF_SEARCH", 40)?,
            pool_size: settings.positive("DATABASE_POOL_SIZE", 8)?,
            ..StoreConfig::default()
        };
        store.validate().map_err(|err| ConfigError::new("EMBEDDING_DIM", err.to_string()))?;
        Ok(Self { service, worker, store, tenant_id: settings.get_or("TENANT_ID", "default".to_owned())? })
    }
}

pub struct Application {
    service: StageService<handler::StorageHandler>,
}

impl Application {
    /// Connects to PostgreSQL and applies migrations before taking work.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        metrics::register();
        let base = StageBase::open(&config.service).await?;
        let store = Arc::new(connect_with_retry(&config.store).await?);
        let grpc =
            tonic::service::Routes::new(StorageServer::new(grpc::StorageService::new(store.clone(), config.tenant_id)));
        let readiness_store = store.clone();
        let handler = handler::StorageHandler::new(base.jobs.clone(), store);
        let service = base.into_service(Stage::Storage, config.worker, handler).with_grpc(grpc).with_check(
            "postgres",
            move || {
                let store = readiness_store.clone();
                async move { store.ping().await.map_err(|err| err.to_string()) }
            },
        );
        Ok(Self { service })
    }

    pub fn http_addr(&self) -> std::io::Result<SocketAddr> {
        self.service.http_addr()
    }

    pub fn grpc_addr(&self) -> std::io::Result<SocketAddr> {
        self.service.grpc_addr()
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        self.service.run(shutdown).await
    }
}

/// PostgreSQL may still be starting: retry for a while before giving up.
async fn connect_with_retry(config: &StoreConfig) -> anyhow::Result<PgStore> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match PgStore::connect(config).await {
            Ok(store) => return Ok(store),
            Err(err) if attempt < 30 && err.is_retryable() => {
                tracing::warn!(error = %err, attempt, "PostgreSQL not ready; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(err) => return Err(err.into()),
        }
    }
}
