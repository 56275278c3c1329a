//! The chunking stage: reads a job's document, parses it to text and cuts it into chunks,
//! then stores the chunks in batches and enqueues each batch for metadata and embeddings.

mod handler;
mod parse;
mod split;

use std::net::SocketAddr;
use std::time::Duration;

use millrace_common::server::{Listeners, Readiness};
use millrace_common::{ConfigError, ServiceConfig, Settings, redis_conn};
use millrace_pipeline::runtime::{StageService, worker_config};
use millrace_pipeline::{JobStore, Keys, Stage, payload_ttl_default};
use millrace_streams::WorkerConfig;
use tokio_util::sync::CancellationToken;

pub use parse::{ParseError, SUPPORTED_CONTENT_TYPES, parse_document};
pub use split::{SplitConfig, TextChunk, split_text};

#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    pub worker: WorkerConfig,
    pub split: SplitConfig,
    /// Chunks per batch handed to metadata and embeddings.
    pub batch_size: usize,
    pub parse_timeout: Duration,
    pub retention: Duration,
}

impl Config {
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let service = ServiceConfig::load(settings, "chunking", 8061, 9061)?;
        let worker = worker_config(settings, &service, Stage::Chunking, 2)?;
        let chunk_size: usize = settings.positive("CHUNK_SIZE", 1000)?;
        let chunk_overlap: usize = settings.get_or("CHUNK_OVERLAP", 100)?;
        if chunk_overlap >= chunk_size {
            return Err(ConfigError::new("CHUNK_OVERLAP", "must be smaller than MILLRACE_CHUNK_SIZE"));
        }
        Ok(Self {
            service,
            worker,
            split: SplitConfig { chunk_size, chunk_overlap },
            batch_size: settings.positive("BATCH_SIZE", 32)?,
            parse_timeout: settings.duration_ms("PARSE_TIMEOUT_MS", 30_000)?,
            retention: Duration::from_secs(settings.get_or("JOB_RETENTION_SECS", payload_ttl_default().as_secs())?),
        })
    }
}

pub struct Application {
    service: StageService<handler::ChunkingHandler>,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let listeners = Listeners::bind(&config.service).await?;
        let client = redis_conn::client(&config.service.redis_url)?;
        let pool = redis_conn::pool(&config.service.redis_url, 16).map_err(anyhow::Error::msg)?;
        let store = JobStore::new(pool.clone(), Keys::new(config.service.key_prefix.clone()), config.retention);
        let handler =
            handler::ChunkingHandler::new(store, config.split.clone(), config.batch_size, config.parse_timeout);
        let readiness_pool = pool.clone();
        let readiness = Readiness::default().with("redis", move || {
            let pool = readiness_pool.clone();
            async move { redis_conn::ping(&pool).await }
        });
        Ok(Self {
            service: StageService {
                stage: Stage::Chunking,
                config: config.service,
                worker: config.worker,
                listeners,
                client,
                pool,
                handler,
                router: axum::Router::new(),
                grpc: tonic::service::Routes::builder().routes(),
                readiness,
            },
        })
    }

    pub fn http_addr(&self) -> std::io::Result<SocketAddr> {
        self.service.listeners.http_addr()
    }

    pub fn grpc_addr(&self) -> std::io::Result<SocketAddr> {
        self.service.listeners.grpc_addr()
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        self.service.run(shutdown).await
    }
}
