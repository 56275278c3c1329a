//! The chunking service's settings, read from `MILLRACE_*` variables and checked before any
//! port is bound.
//!
//! Besides the common and stage variables:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `MILLRACE_CHUNK_TOKENIZER` | `model` | size unit: `model` (the embedding model's tokens), `cl100k_base`, `chars` |
//! | `MILLRACE_EMBEDDING_MODEL_DIR` | [`crate::default_model_dir`] | folder with `tokenizer.json` (and `sentence_bert_config.json`) |
//! | `MILLRACE_CHUNK_SIZE` | 250 / 200 / 1000 by unit | largest chunk; at most what the model reads (254 for all-MiniLM-L6-v2) |
//! | `MILLRACE_CHUNK_MIN_SIZE` | ¾ of the size | the splitter fills chunks at least this far where structure allows |
//! | `MILLRACE_CHUNK_OVERLAP` | a tenth of the size | shared by consecutive chunks; below the minimum |
//! | `MILLRACE_MAX_PARSE_BYTES` | 64 MiB | largest document parsed |
//! | `MILLRACE_MAX_TEXT_BYTES` | 32 MiB | largest extracted text |
//! | `MILLRACE_MAX_UNZIPPED_BYTES` | 256 MiB | most bytes decompressed from a DOCX or a PDF's streams |
//! | `MILLRACE_PARSE_TIMEOUT_MS` | 30000 | time limit of one parse + split; the child is killed then (and limited to this many CPU seconds, rounded up, plus one) |
//! | `MILLRACE_PARSE_MEMORY_BYTES` | 1 GiB | address space of one parse child (`RLIMIT_AS`); at least 128 MiB |
//! | `MILLRACE_MAX_CONCURRENT_PARSES` | CPU count | parse children running at once |
//! | `MILLRACE_PARSE_CHILD` | this binary | program run as the parse child (with `--parse-child`); tests point it at the built binary |
//! | `MILLRACE_BATCH_SIZE` | 32 | chunks per batch |
//! | `MILLRACE_CRAWL_USER_AGENT` | `MillraceBot/<version>` | the crawler's `User-Agent`, matched against robots.txt groups by its product token |
//! | `MILLRACE_CRAWL_HOST_RPM` | 60 | requests per minute to one host (scheme, host, port) by every replica together |
//! | `MILLRACE_CRAWL_CONCURRENCY` | 4 | crawl pages handled at once per replica |
//! | `MILLRACE_CRAWL_ROBOTS_TTL_SECS` | 3600 | how long a run's robots.txt is cached in Redis |
//! | `MILLRACE_CRAWL_LIMIT_WINDOW_MS` / `_LIMIT_MARGIN_MS` / `MILLRACE_CRAWL_REPLICAS` | 60000 / 500 / 1 | the host limiter's window, margin, and replicas sharing it while Redis is away |
//!
//! A job's `options.chunk_size` / `options.chunk_overlap` override the sizes for that job.

use std::path::PathBuf;
use std::time::Duration;

use millrace_common::{ConfigError, ServiceConfig, Settings};
use millrace_fetch::FetchConfig;
use millrace_pipeline::Stage;
use millrace_pipeline::runtime::worker_config;
use millrace_streams::WorkerConfig;

use crate::{ChunkSizes, ParseLimits, SizeUnit, Sizer, SizerError};

/// The smallest `MILLRACE_PARSE_MEMORY_BYTES` accepted.
pub const MIN_PARSE_MEMORY_BYTES: u64 = 128 << 20;

#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    pub worker: WorkerConfig,
    /// How chunk sizes are measured; holds the loaded tokenizer, shared by every parse.
    pub sizer: Sizer,
    /// Default chunk sizes, in the sizer's unit; a job's options may override them.
    pub sizes: ChunkSizes,
    pub limits: ParseLimits,
    /// Chunks per batch handed to metadata and embeddings.
    pub batch_size: usize,
    pub parse_timeout: Duration,
    /// Parse children running at once.
    pub max_concurrent_parses: usize,
    /// Address-space limit of each parse child.
    pub parse_memory_bytes: u64,
    /// The program run as the parse child: this binary unless `MILLRACE_PARSE_CHILD` says.
    pub parse_child: PathBuf,
    /// Where the tokenizer is loaded from (the parse child loads it again).
    pub model_dir: PathBuf,
    /// Fetching documents submitted by URL.
    pub fetch: FetchConfig,
    /// The storage service, asked what the visible version holds for unchanged chunks.
    pub storage_url: String,
    /// The crawler (`MILLRACE_CRAWL_*`), a second worker on the crawl stream.
    pub crawl: crate::crawl::CrawlConfig,
}

impl Config {
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let service = ServiceConfig::load(settings, "chunking", 8061, 9061)?;
        let worker = worker_config(settings, &service, Stage::Chunking, 2)?;

        let unit: SizeUnit = settings.get_or("CHUNK_TOKENIZER", SizeUnit::Model)?;
        let model_dir = millrace_common::config::embedding_model_dir(settings)?;
        // Describing opens no model: characters stand in for its tokens (the sizes stay the unit's).
        let loaded = if settings.describing() { SizeUnit::Chars } else { unit };
        let sizer = Sizer::load(loaded, &model_dir).map_err(|err| match err {
            SizerError::Model { .. } => ConfigError::new(
                "EMBEDDING_MODEL_DIR",
                format!("{err}; run `make setup` to download the model, or point MILLRACE_EMBEDDING_MODEL_DIR at it"),
            ),
            SizerError::Tiktoken(_) => ConfigError::new("CHUNK_TOKENIZER", err.to_string()),
        })?;

        let max: usize = settings.positive("CHUNK_SIZE", unit.default_size())?;
        let min: usize = settings.positive("CHUNK_MIN_SIZE", ChunkSizes::default_min(max))?;
        let overlap: usize = settings.get_or("CHUNK_OVERLAP", ChunkSizes::default_overlap(max))?;
        if min > max {
            return Err(ConfigError::new(
                "CHUNK_MIN_SIZE",
                format!("{min} is larger than MILLRACE_CHUNK_SIZE ({max})"),
            ));
        }
        if overlap >= min {
            return Err(ConfigError::new(
                "CHUNK_OVERLAP",
                format!("{overlap} must be smaller than the smallest chunk (MILLRACE_CHUNK_MIN_SIZE, {min})"),
            ));
        }
        if let Some(limit) = sizer.model_limit().filter(|limit| max > *limit) {
            return Err(ConfigError::new(
                "CHUNK_SIZE",
                format!("{max} tokens is more than the embedding model reads ({limit} tokens per chunk)"),
            ));
        }

        let limits = ParseLimits {
            max_input_bytes: settings.positive("MAX_PARSE_BYTES", ParseLimits::default().max_input_bytes)?,
            max_text_bytes: settings.positive("MAX_TEXT_BYTES", ParseLimits::default().max_text_bytes)?,
            max_unzipped_bytes: settings.positive("MAX_UNZIPPED_BYTES", ParseLimits::default().max_unzipped_bytes)?,
        };
        let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
        let parse_memory_bytes: u64 = settings.positive("PARSE_MEMORY_BYTES", 1 << 30)?;
        // Below this the child cannot even start (its program and libraries take about 50 MB of
        // address space), and every job would fail as a crash.
        if parse_memory_bytes < MIN_PARSE_MEMORY_BYTES {
            return Err(ConfigError::new(
                "PARSE_MEMORY_BYTES",
                format!(
                    "{parse_memory_bytes} is less than the {MIN_PARSE_MEMORY_BYTES} bytes a parse child needs to start"
                ),
            ));
        }
        let parse_child = match settings.get::<PathBuf>("PARSE_CHILD")? {
            Some(path) => path,
            None => std::env::current_exe().map_err(|err| {
                ConfigError::new("PARSE_CHILD", format!("cannot find this program to run parse children: {err}"))
            })?,
        };
        let crawl = crate::crawl::CrawlConfig::from_settings(settings, &service)?;
        Ok(Self {
            service,
            worker,
            sizer,
            sizes: ChunkSizes { min, max, overlap },
            limits,
            batch_size: settings.positive("BATCH_SIZE", 32)?,
            parse_timeout: settings.duration_ms("PARSE_TIMEOUT_MS", 30_000)?,
            max_concurrent_parses: settings.positive("MAX_CONCURRENT_PARSES", cores)?,
            parse_memory_bytes,
            parse_child,
            model_dir,
            fetch: FetchConfig::from_settings(settings)?,
            storage_url: settings.grpc_url("STORAGE_URL", "http://127.0.0.1:9064")?,
            crawl,
        })
    }
}

millrace_pipeline::describe_stage!(Config);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::default_model_dir;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_settings(&Settings::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn character_sizes_default_from_the_chunk_size_and_are_validated() {
        let chars = config(&[("CHUNK_TOKENIZER", "chars")]).unwrap();
        assert_eq!(chars.sizes, ChunkSizes { min: 750, max: 1000, overlap: 100 });
        let small = config(&[("CHUNK_TOKENIZER", "chars"), ("CHUNK_SIZE", "40")]).unwrap();
        assert_eq!(small.sizes, ChunkSizes { min: 30, max: 40, overlap: 4 });

        let err =
            config(&[("CHUNK_TOKENIZER", "chars"), ("CHUNK_SIZE", "100"), ("CHUNK_MIN_SIZE", "200")]).unwrap_err();
        assert_eq!(err.variable, "MILLRACE_CHUNK_MIN_SIZE");
        let err = config(&[("CHUNK_TOKENIZER", "chars"), ("CHUNK_SIZE", "100"), ("CHUNK_OVERLAP", "75")]).unwrap_err();
        assert_eq!(err.variable, "MILLRACE_CHUNK_OVERLAP");
        let err = config(&[("CHUNK_TOKENIZER", "words")]).unwrap_err();
        assert_eq!(err.variable, "MILLRACE_CHUNK_TOKENIZER");
        let err = config(&[("CHUNK_TOKENIZER", "chars"), ("MAX_PARSE_BYTES", "0")]).unwrap_err();
        assert_eq!(err.variable, "MILLRACE_MAX_PARSE_BYTES");
        let err = config(&[("CHUNK_TOKENIZER", "chars"), ("PARSE_MEMORY_BYTES", "0")]).unwrap_err();
        assert_eq!(err.variable, "MILLRACE_PARSE_MEMORY_BYTES");
        let err = config(&[("CHUNK_TOKENIZER", "chars"), ("PARSE_MEMORY_BYTES", "10000000")]).unwrap_err();
        assert_eq!(err.variable, "MILLRACE_PARSE_MEMORY_BYTES");
        assert_eq!(chars.parse_memory_bytes, 1 << 30);
        assert_eq!(chars.parse_child, std::env::current_exe().unwrap());
    }

    #[test]
    fn a_missing_model_stops_the_service_naming_the_variable_and_the_fix() {
        let err = config(&[("EMBEDDING_MODEL_DIR", "/nonexistent/model")]).unwrap_err();
        assert_eq!(err.variable, "MILLRACE_EMBEDDING_MODEL_DIR");
        assert!(err.message.contains("/nonexistent/model/tokenizer.json"), "{err}");
        assert!(err.message.contains("make setup"), "{err}");
    }

    #[test]
    fn the_default_model_dir_follows_millrace_home() {
        // Only reads the environment; the default is documented as $HOME/.cache/millrace.
        let dir = default_model_dir();
        assert!(dir.ends_with("models/all-MiniLM-L6-v2"), "{}", dir.display());
    }

    #[test]
    fn it_describes_itself_without_the_model() {
        let settings = Settings::from_pairs([("EMBEDDING_MODEL_DIR", "/nonexistent/model")]);
        let described = millrace_common::host::describe("chunking", settings, Config::from_settings).unwrap();
        assert_eq!((described.ports.http, described.ports.grpc), (8061, 9061));
        let consumes = described.consumes.unwrap();
        assert_eq!((consumes.stream.as_str(), consumes.group.as_str()), ("millrace:stream:chunking", "chunking"));
        assert_eq!(described.peers, ["MILLRACE_STORAGE_URL"]);
        let size = described.variables.iter().find(|read| read.name == "MILLRACE_CHUNK_SIZE").unwrap();
        assert_eq!(size.default.as_deref(), Some("250"), "the model's default, though no model was loaded");
    }
}
