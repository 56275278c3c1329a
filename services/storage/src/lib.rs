//! The storage stage: writes embedded, enriched chunks into PostgreSQL with pgvector, switches
//! a document to its new version when its last batch is stored, and answers searches.
//! Other services never hold database connections; they call this one over gRPC.

pub mod config;
pub mod grpc;
mod handler;
pub mod metrics;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use millrace_common::Host;
use millrace_pipeline::Stage;
use millrace_pipeline::runtime::StageBase;
use millrace_proto::storage_server::StorageServer;

use crate::store::{PgStore, StoreConfig};

pub use config::Config;

/// The storage service's wiring onto the common host.
pub struct Application;

impl Application {
    /// Connects to PostgreSQL and applies migrations before taking work.
    pub async fn build(config: Config) -> anyhow::Result<Host> {
        metrics::register();
        let base = StageBase::open(Stage::Storage, &config.service).await?;
        let store = Arc::new(connect_with_retry(&config.store).await?);
        let grpc = tonic::service::Routes::new(StorageServer::new(grpc::StorageService::new(store.clone())));
        let readiness_store = store.clone();
        let handler = handler::StorageHandler::new(base.jobs.clone(), store);
        let service = base.into_service(config.worker, handler).with_grpc(grpc).with_check("postgres", move || {
            let store = readiness_store.clone();
            async move { store.ping().await.map_err(|err| err.to_string()) }
        });
        Ok(service.into_host())
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
