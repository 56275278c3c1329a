//! The embeddings service's settings, read from `MILLRACE_*` variables and checked before any
//! port is bound.

use std::path::PathBuf;
use std::time::Duration;

use millrace_common::{ConfigError, ServiceConfig, Settings};
use millrace_pipeline::Stage;
use millrace_pipeline::runtime::worker_config;
use millrace_resilience::BreakerConfig;
use millrace_streams::WorkerConfig;

use crate::cache;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    /// A sentence-embedding model run on the CPU in this process (all-MiniLM-L6-v2 by default).
    Local(LocalConfig),
    /// Feature hashing of words and word pairs: deterministic, no model, for tests and benchmarks.
    Hashing,
    /// An upstream embedding model through the llm-gateway's Embed.
    Gateway { gateway_url: String, model: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalConfig {
    /// A model folder in Hugging Face layout (`MILLRACE_EMBEDDING_MODEL_DIR`).
    pub model_dir: PathBuf,
    /// Texts per forward pass, at most (`MILLRACE_EMBED_MAX_BATCH`).
    pub max_batch: usize,
    /// How long a text waits for others to share its pass (`MILLRACE_EMBED_MAX_WAIT_MS`).
    pub max_wait: Duration,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    pub worker: WorkerConfig,
    pub provider: Provider,
    /// Dimension of every vector; must match the storage table.
    pub dimensions: usize,
    /// How long a vector stays in the shared embedding cache (zero: no cache).
    pub cache_ttl: Duration,
    /// The breaker toward the gateway (`MILLRACE_GATEWAY_BREAKER_*`).
    pub gateway_breaker: BreakerConfig,
}

impl Config {
    /// `MILLRACE_EMBEDDINGS_PROVIDER` is `local`, `hashing` or `gateway`; by default `gateway`
    /// when an embedding model is named for the upstream (`MILLRACE_LLM_EMBED_MODEL`), else
    /// `local`. An upstream configured for chat alone is not enough: many (Anthropic's, Groq,
    /// most local servers) have no `/v1/embeddings`, and every job would fail with its 404.
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let service = ServiceConfig::load(settings, "embeddings", 8063, 9063)?;
        let worker = worker_config(settings, &service, Stage::Embeddings, 4)?;
        let embed_model: String = settings.get_or("LLM_EMBED_MODEL", String::new())?;
        let default_provider = if embed_model.is_empty() { "local" } else { "gateway" };
        let provider = match settings.get_or("EMBEDDINGS_PROVIDER", default_provider.to_owned())?.as_str() {
            "local" => Provider::Local(LocalConfig {
                model_dir: millrace_common::config::embedding_model_dir(settings)?,
                max_batch: settings.positive("EMBED_MAX_BATCH", 32)?,
                max_wait: settings.duration_ms("EMBED_MAX_WAIT_MS", 5)?,
            }),
            "hashing" => Provider::Hashing,
            "gateway" => Provider::Gateway {
                gateway_url: settings.grpc_url("LLM_GATEWAY_URL", "http://127.0.0.1:9065")?,
                model: embed_model,
            },
            other => {
                return Err(ConfigError::new(
                    "EMBEDDINGS_PROVIDER",
                    format!("{other:?} is not one of: local, hashing, gateway"),
                ));
            }
        };
        Ok(Self {
            service,
            worker,
            provider,
            dimensions: settings.positive("EMBEDDING_DIM", 384)?,
            cache_ttl: cache::EmbeddingCache::ttl_from_settings(settings)?,
            gateway_breaker: BreakerConfig::from_settings(settings, "GATEWAY_")?,
        })
    }
}

millrace_pipeline::describe_stage!(Config);

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_settings(&Settings::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn local_is_the_default_without_an_upstream() {
        let config = config(&[("MILLRACE_HOME", "/srv/millrace")]).unwrap();
        assert_eq!(
            config.provider,
            Provider::Local(LocalConfig {
                model_dir: PathBuf::from("/srv/millrace/models/all-MiniLM-L6-v2"),
                max_batch: 32,
                max_wait: Duration::from_millis(5),
            })
        );
        assert_eq!(config.dimensions, 384);
    }

    #[test]
    fn the_model_folder_defaults_under_home() {
        let Provider::Local(local) = config(&[]).unwrap().provider else { panic!("not local") };
        if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            assert_eq!(local.model_dir, PathBuf::from(home).join(".cache/millrace/models/all-MiniLM-L6-v2"));
        }
    }

    #[test]
    fn gateway_is_the_default_only_with_an_embedding_model() {
        // A chat-only upstream (no /v1/embeddings) must not take over embeddings.
        let chat_only = config(&[("LLM_BASE_URL", "http://upstream:8080/v1"), ("LLM_CHAT_MODEL", "llama-3")]).unwrap();
        assert!(matches!(chat_only.provider, Provider::Local(_)), "{:?}", chat_only.provider);
        let config =
            config(&[("LLM_BASE_URL", "http://upstream:8080/v1"), ("LLM_EMBED_MODEL", "text-embedding-3-small")])
                .unwrap();
        assert_eq!(
            config.provider,
            Provider::Gateway { gateway_url: "http://127.0.0.1:9065".into(), model: "text-embedding-3-small".into() }
        );
    }

    #[test]
    fn an_explicit_provider_wins() {
        let hashing = config(&[("EMBEDDINGS_PROVIDER", "hashing"), ("LLM_BASE_URL", "http://u/v1")]).unwrap();
        assert_eq!(hashing.provider, Provider::Hashing);
        let local = config(&[
            ("EMBEDDINGS_PROVIDER", "local"),
            ("LLM_BASE_URL", "http://u/v1"),
            ("EMBEDDING_MODEL_DIR", "/models/bge-small-en"),
            ("EMBED_MAX_BATCH", "8"),
            ("EMBED_MAX_WAIT_MS", "0"),
        ])
        .unwrap();
        assert_eq!(
            local.provider,
            Provider::Local(LocalConfig {
                model_dir: PathBuf::from("/models/bge-small-en"),
                max_batch: 8,
                max_wait: Duration::ZERO,
            })
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (name, value) in [
            ("MILLRACE_EMBEDDINGS_PROVIDER", "openai"),
            ("MILLRACE_EMBED_MAX_BATCH", "0"),
            ("MILLRACE_EMBED_MAX_BATCH", "many"),
            ("MILLRACE_EMBED_MAX_WAIT_MS", "-1"),
            ("MILLRACE_EMBEDDING_DIM", "0"),
        ] {
            let err = config(&[(name, value)]).unwrap_err();
            assert_eq!(err.variable, name, "{name}={value}: {err}");
        }
        let err = config(&[("EMBEDDINGS_PROVIDER", "openai")]).unwrap_err();
        assert!(err.message.contains("local, hashing, gateway"), "{err}");
    }

    #[test]
    fn it_describes_itself_without_loading_the_model() {
        let settings = Settings::from_pairs([("EMBEDDING_MODEL_DIR", "/nonexistent/model")]);
        let described = millrace_common::host::describe("embeddings", settings, Config::from_settings).unwrap();
        assert_eq!((described.ports.http, described.ports.grpc), (8063, 9063));
        assert_eq!(described.consumes.unwrap().stream, "millrace:stream:embeddings");
        assert!(described.variables.iter().any(|read| read.name == "MILLRACE_EMBED_MAX_BATCH"));
    }
}
