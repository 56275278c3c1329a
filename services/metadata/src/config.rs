//! The metadata service's settings, read from `MILLRACE_*` variables and checked before any
//! port is bound.

use millrace_common::{ConfigError, ServiceConfig, Settings};
use millrace_pipeline::Stage;
use millrace_pipeline::runtime::worker_config;
use millrace_resilience::BreakerConfig;
use millrace_streams::WorkerConfig;

/// Which extractor runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    Extractive,
    /// Through the llm-gateway's Chat at this gRPC URL.
    Llm {
        gateway_url: String,
        model: String,
        /// Chunks sent in one Chat request.
        chunks_per_request: usize,
    },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    pub worker: WorkerConfig,
    pub provider: Provider,
    /// The breaker toward the gateway (`MILLRACE_GATEWAY_BREAKER_*`).
    pub gateway_breaker: BreakerConfig,
}

impl Config {
    /// `MILLRACE_METADATA_PROVIDER` is `llm` or `extractive`; by default `llm` when an upstream
    /// is configured (`MILLRACE_LLM_BASE_URL` or `MILLRACE_LLM_UPSTREAMS_FILE`), else `extractive`.
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let service = ServiceConfig::load(settings, "metadata", 8062, 9062)?;
        let worker = worker_config(settings, &service, Stage::Metadata, 8)?;
        let default_provider = if millrace_common::llm_configured(settings) { "llm" } else { "extractive" };
        let provider = match settings.get_or("METADATA_PROVIDER", default_provider.to_owned())?.as_str() {
            "extractive" => Provider::Extractive,
            "llm" => Provider::Llm {
                gateway_url: settings.grpc_url("LLM_GATEWAY_URL", "http://127.0.0.1:9065")?,
                model: settings.get_or("LLM_CHAT_MODEL", String::new())?,
                chunks_per_request: settings.positive("METADATA_CHUNKS_PER_REQUEST", 8)?,
            },
            other => {
                return Err(ConfigError::new("METADATA_PROVIDER", format!("{other:?} is not one of: llm, extractive")));
            }
        };
        let gateway_breaker = BreakerConfig::from_settings(settings, "GATEWAY_")?;
        Ok(Self { service, worker, provider, gateway_breaker })
    }
}

millrace_pipeline::describe_stage!(Config);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_describes_the_gateway_it_calls_only_when_it_calls_one() {
        let describe = |pairs: &[(&str, &str)]| {
            let settings = Settings::from_pairs(pairs.iter().copied());
            millrace_common::host::describe("metadata", settings, Config::from_settings).unwrap()
        };
        assert!(describe(&[]).peers.is_empty());
        let llm = describe(&[("LLM_BASE_URL", "http://u/v1")]);
        assert_eq!(llm.peers, ["MILLRACE_LLM_GATEWAY_URL"]);
        assert_eq!(llm.consumes.unwrap().dead_letters, "millrace:dlq:metadata");
    }
}
