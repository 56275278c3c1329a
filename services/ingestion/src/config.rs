//! The ingestion service's settings, read from `MILLRACE_*` variables and checked before any
//! port is bound.

use std::time::Duration;

use millrace_auth::AuthConfig;
use millrace_common::{ConfigError, ServiceConfig, Settings};
use millrace_fetch::FetchConfig;

/// Largest accepted `MILLRACE_MAX_DOCUMENT_BYTES`: a document is one Redis string, and Redis
/// refuses strings over 512 MiB.
const MAX_DOCUMENT_BYTES_CEILING: usize = 512 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    /// gRPC address of the storage service (`MILLRACE_STORAGE_URL`).
    pub storage_url: String,
    /// gRPC address of the embeddings service (`MILLRACE_EMBEDDINGS_URL`).
    pub embeddings_url: String,
    /// gRPC address of the chunking service, asked for its stats (`MILLRACE_CHUNKING_URL`).
    pub chunking_url: String,
    /// gRPC address of the metadata service, asked for its stats (`MILLRACE_METADATA_URL`).
    pub metadata_url: String,
    /// gRPC address of the LLM gateway, asked for its stats and to rerank search results
    /// (`MILLRACE_LLM_GATEWAY_URL`).
    pub llm_gateway_url: String,
    /// Largest document, after base64 decoding (`MILLRACE_MAX_DOCUMENT_BYTES`).
    pub max_document_bytes: usize,
    /// Admission bound: jobs accepted and not yet finished (`MILLRACE_MAX_QUEUED_JOBS`).
    pub max_queued_jobs: u64,
    /// Admission bound: bytes of the documents of those jobs, which Redis holds until each
    /// finishes (`MILLRACE_MAX_QUEUED_BYTES`).
    pub max_queued_bytes: u64,
    /// Share of Redis' `maxmemory` above which new work is refused with 503, so that Redis
    /// (`noeviction`) never reaches its limit and stops every write of the pipeline
    /// (`MILLRACE_REDIS_MEMORY_HIGH_WATERMARK`).
    pub redis_memory_high_watermark: f64,
    /// Admission bound per tenant: its jobs accepted and not yet finished
    /// (`MILLRACE_MAX_QUEUED_JOBS_PER_TENANT`).
    pub max_queued_jobs_per_tenant: u64,
    /// Base of `status_url` (`MILLRACE_PUBLIC_URL`); relative URLs without it.
    pub public_url: Option<String>,
    /// Deadline of one call to storage, embeddings or, to rerank, the llm-gateway
    /// (`MILLRACE_DOWNSTREAM_TIMEOUT_MS`).
    pub downstream_timeout: Duration,
    /// Where the web console links a job's trace: a trace UI's URL with `{trace_id}` in it,
    /// e.g. `https://jaeger.example/trace/{trace_id}` (`MILLRACE_TRACE_URL`); no link without it.
    pub trace_url: Option<String>,
    /// The rules for documents submitted by URL (`MILLRACE_FETCH_*`): this service checks a URL
    /// at submit with the same rules the chunking stage fetches it under.
    pub fetch: FetchConfig,
    /// How often jobs by status are sampled for `/metrics` (`MILLRACE_METRICS_INTERVAL_MS`).
    pub metrics_interval: Duration,
    /// Readers of job events at once, in all (`MILLRACE_MAX_WATCHERS`) and per client
    /// (`MILLRACE_MAX_WATCHERS_PER_CLIENT`).
    pub watchers: WatcherCaps,
    /// Who may call: the bootstrap key (`MILLRACE_ADMIN_KEY`), the key store
    /// (`MILLRACE_DATABASE_URL`) and how long a key check is cached (`MILLRACE_KEY_CACHE_MS`).
    pub auth: AuthConfig,
    /// Webhook deliveries: retry window and delays, time limit, poll interval, concurrency
    /// (`MILLRACE_WEBHOOK_*`).
    pub webhooks: crate::webhooks::WebhookConfig,
    /// The LLM reranker of search: on by default or not, candidates, model, breaker
    /// (`MILLRACE_SEARCH_RERANK`, `MILLRACE_RERANK_*`, `MILLRACE_GATEWAY_BREAKER_*`).
    pub rerank: crate::rerank::RerankConfig,
}

/// `MILLRACE_MAX_WATCHERS` and `MILLRACE_MAX_WATCHERS_PER_CLIENT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatcherCaps {
    pub total: usize,
    pub per_client: usize,
}

impl Config {
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let service = ServiceConfig::load(settings, "ingestion", 8060, 9060)?;
        let storage_url = settings.grpc_url("STORAGE_URL", "http://127.0.0.1:9064")?;
        let embeddings_url = settings.grpc_url("EMBEDDINGS_URL", "http://127.0.0.1:9063")?;
        let chunking_url = settings.grpc_url("CHUNKING_URL", "http://127.0.0.1:9061")?;
        let metadata_url = settings.grpc_url("METADATA_URL", "http://127.0.0.1:9062")?;
        let llm_gateway_url = settings.grpc_url("LLM_GATEWAY_URL", "http://127.0.0.1:9065")?;
        let max_document_bytes: usize = settings.positive("MAX_DOCUMENT_BYTES", 10 * 1024 * 1024)?;
        if max_document_bytes > MAX_DOCUMENT_BYTES_CEILING {
            return Err(ConfigError::new(
                "MAX_DOCUMENT_BYTES",
                format!("must be at most {MAX_DOCUMENT_BYTES_CEILING} (the largest Redis string)"),
            ));
        }
        let max_queued_jobs: u64 = settings.positive("MAX_QUEUED_JOBS", 100_000)?;
        let max_queued_bytes: u64 = settings.positive("MAX_QUEUED_BYTES", 1 << 30)?;
        if max_queued_bytes < max_document_bytes as u64 {
            return Err(ConfigError::new(
                "MAX_QUEUED_BYTES",
                format!(
                    "{max_queued_bytes} is smaller than one document may be (MILLRACE_MAX_DOCUMENT_BYTES, {max_document_bytes})"
                ),
            ));
        }
        let redis_memory_high_watermark: f64 = settings.get_or("REDIS_MEMORY_HIGH_WATERMARK", 0.9)?;
        if !(redis_memory_high_watermark > 0.0 && redis_memory_high_watermark <= 1.0) {
            return Err(ConfigError::new("REDIS_MEMORY_HIGH_WATERMARK", "must be a share of maxmemory in (0, 1]"));
        }
        let max_queued_jobs_per_tenant: u64 = settings.positive("MAX_QUEUED_JOBS_PER_TENANT", 10_000)?;
        let public_url = match settings.raw("PUBLIC_URL") {
            None => None,
            Some(url) => {
                let url = url.trim().trim_end_matches('/');
                if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() <= "https://".len() {
                    return Err(ConfigError::new("PUBLIC_URL", format!("{url:?} is not an http(s) URL")));
                }
                Some(url.to_owned())
            }
        };
        let downstream_timeout = settings.duration_ms("DOWNSTREAM_TIMEOUT_MS", 10_000)?;
        if downstream_timeout.is_zero() {
            return Err(ConfigError::new("DOWNSTREAM_TIMEOUT_MS", "must be greater than zero"));
        }
        let trace_url = match settings.raw("TRACE_URL").map(str::trim).filter(|url| !url.is_empty()) {
            None => None,
            Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                return Err(ConfigError::new("TRACE_URL", format!("{url:?} is not an http(s) URL")));
            }
            Some(url) if !url.contains("{trace_id}") => {
                return Err(ConfigError::new(
                    "TRACE_URL",
                    format!("{url:?} has no `{{trace_id}}` for the trace id to go in"),
                ));
            }
            Some(url) => Some(url.to_owned()),
        };
        let fetch = FetchConfig::from_settings(settings)?;
        let metrics_interval = millrace_common::metrics::sample_interval(settings)?;
        // A reader costs a task and its buffers; a thousand per replica is far past any
        // dashboard's needs, and 32 per client covers a CLI following a batch of jobs.
        let watchers = WatcherCaps {
            total: settings.positive("MAX_WATCHERS", 1024usize)?,
            per_client: settings.positive("MAX_WATCHERS_PER_CLIENT", 32usize)?,
        };
        if watchers.per_client > watchers.total {
            return Err(ConfigError::new(
                "MAX_WATCHERS_PER_CLIENT",
                format!("must be at most MILLRACE_MAX_WATCHERS ({})", watchers.total),
            ));
        }
        let auth = AuthConfig::from_settings(settings)?;
        let webhooks = crate::webhooks::WebhookConfig::from_settings(settings)?;
        let rerank = crate::rerank::RerankConfig::from_settings(settings)?;
        Ok(Self {
            service,
            storage_url,
            embeddings_url,
            chunking_url,
            metadata_url,
            llm_gateway_url,
            max_document_bytes,
            max_queued_jobs,
            max_queued_bytes,
            redis_memory_high_watermark,
            max_queued_jobs_per_tenant,
            public_url,
            downstream_timeout,
            trace_url,
            fetch,
            metrics_interval,
            watchers,
            auth,
            webhooks,
            rerank,
        })
    }

    /// Largest HTTP body of an ingest request: the document base64-encoded (4/3 of its size)
    /// plus room for the other fields.
    pub fn max_body_bytes(&self) -> usize {
        self.max_document_bytes.saturating_mul(4) / 3 + 4 + 64 * 1024
    }

    /// Where a caller polls a job.
    pub fn status_url(&self, job_id: &str) -> String {
        format!("{}/v1/jobs/{job_id}", self.public_url.as_deref().unwrap_or(""))
    }

    pub fn run_url(&self, run_id: &str) -> String {
        format!("{}/v1/runs/{run_id}", self.public_url.as_deref().unwrap_or(""))
    }
}

impl millrace_common::host::Describe for Config {
    fn described(&self) -> (&ServiceConfig, Option<millrace_common::host::Consumes>) {
        (&self.service, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let config = Config::from_settings(&Settings::default()).unwrap();
        assert_eq!(config.service.http_addr.port(), 8060);
        assert_eq!(config.service.grpc_addr.port(), 9060);
        assert_eq!(config.storage_url, "http://127.0.0.1:9064");
        assert_eq!(config.embeddings_url, "http://127.0.0.1:9063");
        assert_eq!(config.chunking_url, "http://127.0.0.1:9061");
        assert_eq!(config.metadata_url, "http://127.0.0.1:9062");
        assert_eq!(config.llm_gateway_url, "http://127.0.0.1:9065");
        assert_eq!(config.max_document_bytes, 10_485_760);
        assert_eq!(config.max_queued_jobs, 100_000);
        assert_eq!((config.max_queued_bytes, config.redis_memory_high_watermark), (1 << 30, 0.9));
        assert_eq!(config.service.job_retention, Duration::from_secs(604_800));
        assert_eq!(config.max_queued_jobs_per_tenant, 10_000);
        assert_eq!(config.status_url("j1"), "/v1/jobs/j1");
        assert!(!config.fetch.allow_private);
        assert!(config.auth.admin_key.is_none() && config.auth.database_url.is_none());
        assert_eq!(config.auth.key_cache, Duration::from_millis(900));
    }

    #[test]
    fn public_url_prefixes_status_urls() {
        let config =
            Config::from_settings(&Settings::from_pairs([("PUBLIC_URL", "https://api.example.com/")])).unwrap();
        assert_eq!(config.status_url("j1"), "https://api.example.com/v1/jobs/j1");
    }

    #[test]
    fn trace_url_is_a_pattern_with_the_trace_id() {
        assert_eq!(Config::from_settings(&Settings::default()).unwrap().trace_url, None);
        let pattern = "https://jaeger.example/trace/{trace_id}";
        let config = Config::from_settings(&Settings::from_pairs([("TRACE_URL", pattern)])).unwrap();
        assert_eq!(config.trace_url.as_deref(), Some(pattern));
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (name, value) in [
            ("MILLRACE_STORAGE_URL", "127.0.0.1:9064"),
            ("MILLRACE_EMBEDDINGS_URL", "http://bad host"),
            ("MILLRACE_CHUNKING_URL", "127.0.0.1:9061"),
            ("MILLRACE_METADATA_URL", "grpc://127.0.0.1:9062"),
            ("MILLRACE_LLM_GATEWAY_URL", "http://bad host"),
            ("MILLRACE_MAX_DOCUMENT_BYTES", "0"),
            ("MILLRACE_MAX_DOCUMENT_BYTES", "ten"),
            ("MILLRACE_MAX_DOCUMENT_BYTES", "1000000000"),
            ("MILLRACE_MAX_QUEUED_JOBS", "-1"),
            ("MILLRACE_MAX_QUEUED_BYTES", "1000"),
            ("MILLRACE_REDIS_MEMORY_HIGH_WATERMARK", "1.5"),
            ("MILLRACE_REDIS_MEMORY_HIGH_WATERMARK", "0"),
            ("MILLRACE_JOB_RETENTION_SECS", "0"),
            ("MILLRACE_MAX_QUEUED_JOBS_PER_TENANT", "0"),
            ("MILLRACE_PUBLIC_URL", "ftp://x"),
            ("MILLRACE_DOWNSTREAM_TIMEOUT_MS", "0"),
            ("MILLRACE_TRACE_URL", "jaeger/trace/{trace_id}"),
            ("MILLRACE_TRACE_URL", "https://jaeger.example/trace/"),
            ("MILLRACE_FETCH_ALLOW_PRIVATE", "maybe"),
            ("MILLRACE_FETCH_TIMEOUT_MS", "0"),
            ("MILLRACE_MAX_WATCHERS", "0"),
            ("MILLRACE_MAX_WATCHERS", "many"),
            ("MILLRACE_MAX_WATCHERS_PER_CLIENT", "0"),
            ("MILLRACE_MAX_WATCHERS_PER_CLIENT", "2000"),
            ("MILLRACE_KEY_CACHE_MS", "1500"),
            ("MILLRACE_DATABASE_URL", "redis://x"),
            ("MILLRACE_SEARCH_RERANK", "yes please"),
            ("MILLRACE_RERANK_CANDIDATES", "51"),
            ("MILLRACE_GATEWAY_BREAKER_FAILURE_RATE", "2"),
        ] {
            let err = Config::from_settings(&Settings::from_pairs([(name, value)])).unwrap_err();
            assert_eq!(err.variable, name, "{value}");
        }
    }

    #[test]
    fn it_describes_every_peer_it_calls_and_no_stream_it_consumes() {
        let described =
            millrace_common::host::describe("ingestion", Settings::default(), Config::from_settings).unwrap();
        let peers =
            ["CHUNKING", "EMBEDDINGS", "LLM_GATEWAY", "METADATA", "STORAGE"].map(|p| format!("MILLRACE_{p}_URL"));
        assert_eq!(described.peers, peers);
        assert!(described.consumes.is_none());
        assert_eq!((described.ports.http, described.ports.grpc), (8060, 9060));
    }
}
