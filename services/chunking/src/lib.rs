//! The chunking stage: reads a job's document, parses it to text and cuts it into chunks,
//! then stores the chunks in batches and enqueues each batch for metadata and embeddings.

mod handler;
mod parse;
mod split;

use std::net::SocketAddr;
use std::time::Duration;

use millrace_common::{ConfigError, ServiceConfig, Settings};
use millrace_pipeline::Stage;
use millrace_pipeline::runtime::{StageBase, StageService, worker_config};
use millrace_streams::WorkerConfig;
use tokio_util::sync::CancellationToken;

pub use parse::{ParseError, parse_document};
pub use split::{SplitConfig, TextChunk, split_text};

#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    pub worker: WorkerConfig,
    pub split: SplitConfig,
    /// Chunks per batch handed to metadata and embeddings.
    pub batch_size: usize,
    pub parse_timeout: Duration,
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
        })
    }
}

pub struct Application {
    service: StageService<handler::ChunkingHandler>,
}

impl Application {
    pub async fn build(config: Config) -> std::io::Result<Self> {
        let base = StageBase::open(&config.service).await?;
        let handler = handler::ChunkingHandler::new(
            base.jobs.clone(),
            config.split.clone(),
            config.batch_size,
            config.parse_timeout,
        );
        Ok(Self { service: base.into_service(Stage::Chunking, config.worker, handler) })
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
