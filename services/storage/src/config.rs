//! The storage service's settings, read from `MILLRACE_*` variables and checked before any
//! port is bound.

use millrace_common::postgres::{Database, DatabaseTls};
use millrace_common::{ConfigError, ServiceConfig, Settings};
use millrace_pipeline::Stage;
use millrace_pipeline::runtime::worker_config;
use millrace_streams::WorkerConfig;

use crate::store::StoreConfig;

#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    pub worker: WorkerConfig,
    pub store: StoreConfig,
}

impl Config {
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let service = ServiceConfig::load(settings, "storage", 8064, 9064)?;
        let worker = worker_config(settings, &service, Stage::Storage, 4)?;
        let database_url: String = settings.require("DATABASE_URL", "postgres://millrace@localhost:5432/millrace")?;
        if !database_url.starts_with("postgres://") && !database_url.starts_with("postgresql://") {
            return Err(ConfigError::new("DATABASE_URL", "must be a postgres:// URL"));
        }
        let database_tls = DatabaseTls::load(settings)?;
        // The URL's sslmode and the TLS files are checked now, before a port is bound.
        Database::new("DATABASE_URL", &database_url, &database_tls)?;
        let store = StoreConfig {
            database_url,
            database_tls,
            dimensions: settings.positive("EMBEDDING_DIM", 384)?,
            hnsw_m: settings.positive("HNSW_M", 16)?,
            hnsw_ef_construction: settings.positive("HNSW_EF_CONSTRUCTION", 64)?,
            hnsw_ef_search: settings.positive("HNSW_EF_SEARCH", 40)?,
            pool_size: settings.positive("DATABASE_POOL_SIZE", 8)?,
            ..StoreConfig::default()
        };
        store.validate().map_err(|err| ConfigError::new("EMBEDDING_DIM", err.to_string()))?;
        Ok(Self { service, worker, store })
    }
}

millrace_pipeline::describe_stage!(Config);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_describes_itself_without_a_database_url() {
        let described = millrace_common::host::describe("storage", Settings::default(), Config::from_settings).unwrap();
        let database = described.variables.iter().find(|read| read.name == "MILLRACE_DATABASE_URL").unwrap();
        assert!(database.required && database.example.as_deref().is_some_and(|url| url.starts_with("postgres://")));
        assert_eq!(described.consumes.unwrap().group, "storage");
        assert_eq!((described.ports.http, described.ports.grpc), (8064, 9064));
    }
}
