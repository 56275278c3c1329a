//! The chunking stage (and the crawler, [`crawl`]): reads a job's document, parses it to text (plain text, Markdown, HTML,
//! PDF, DOCX), cuts the text into chunks sized in the embedding model's own tokens, then stores
//! the chunks in batches and enqueues each batch for metadata and embeddings.
//!
//! Everything that decides what a chunk is lives here and is testable without Redis:
//! [`parse_document`] (bytes → [`ParsedDocument`]) and [`split_document`] (document → chunks
//! with offsets, heading path and pages). The handler only runs them safely: in a child
//! process with hard limits ([`parse_child`]).

pub mod config;
pub mod crawl;
mod handler;
pub mod metrics;
mod parse;
pub mod parse_child;
mod reuse;
mod source;
mod split;

use millrace_common::Host;
use millrace_fetch::Fetcher;
use millrace_pipeline::Stage;
use millrace_pipeline::runtime::StageBase;

pub use config::{Config, MIN_PARSE_MEMORY_BYTES};

pub use parse::{ParseError, ParseLimits, ParsedDocument, parse_document};
pub use split::{
    CappedSizer, ChunkSizes, MAX_CHARS_PER_TOKEN, SizeUnit, Sizer, SizerError, SplitError, TextChunk, split_document,
};

pub use millrace_common::config::default_model_dir;

/// The chunking service's wiring onto the common host.
pub struct Application;

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Host> {
        metrics::register();
        let fetcher = Fetcher::new(config.fetch.clone())?;
        let storage = millrace_common::grpc_client::lazy_channel(
            "STORAGE_URL",
            &config.storage_url,
            None,
            &config.service.grpc_tls,
        )?;
        let base = StageBase::open(Stage::Chunking, &config.service).await?;
        let stored = reuse::StoredChunks::new(storage.clone());
        let handler = handler::ChunkingHandler::new(base.jobs.clone(), &config, fetcher.clone(), stored);
        let redis = millrace_common::redis_conn::shared(&config.service.redis).map_err(anyhow::Error::msg)?;
        let crawler = crawl::CrawlHandler::new(base.jobs.clone(), fetcher, config.crawl.clone(), redis);
        let service = base
            .into_service(config.worker, handler)
            .with_worker(config.crawl.worker.clone(), crawler)
            .with_check("storage", move || millrace_common::grpc_client::check_health(storage.clone()));
        Ok(service.into_host())
    }
}
