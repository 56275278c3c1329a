//! The gateway's settings, all from `MILLRACE_*` variables, plus an optional upstreams file for
//! several upstreams, all checked before any port is bound. Without any upstream the gateway
//! still starts, and says on every call how to configure one.

mod file;
mod tiers;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use millrace_common::{ConfigError, ServiceConfig, Settings};
use millrace_resilience::{BreakerConfig, LimiterConfig, Quota, RetryPolicy};

pub use tiers::{TIERS, Tier};

pub const SERVICE: &str = "llm-gateway";
pub const HTTP_PORT: u16 = 8065;
pub const GRPC_PORT: u16 = 9065;
/// `/metrics` has a port of its own, so that the API (public to `llm` keys) and the scrape
/// (monitoring only) can be reached by different callers: HTTP port + 10.
pub const METRICS_PORT: u16 = 8075;
pub const DEFAULT_CHAT_MODEL: &str = "gpt-4o-mini";
pub const DEFAULT_EMBED_MODEL: &str = "text-embedding-3-small";
/// The name of the upstream given by `MILLRACE_LLM_BASE_URL`.
pub const ENV_UPSTREAM: &str = "default";
const DEFAULT_MAX_CONCURRENCY: usize = 64;
/// How much longer than a call's own deadline the servers wait for its answer to start, so
/// that the call ends with its own error (and accounting) rather than the server's timeout.
const CALL_DEADLINE_MARGIN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    /// Who may call the HTTP API: `MILLRACE_ADMIN_KEY`, the key store at `MILLRACE_DATABASE_URL`
    /// and `MILLRACE_KEY_CACHE_MS` (as ingestion reads them).
    pub auth: millrace_auth::AuthConfig,
    /// Empty when neither `MILLRACE_LLM_BASE_URL` nor `MILLRACE_LLM_UPSTREAMS_FILE` is set.
    pub upstreams: Vec<UpstreamConfig>,
    /// Used when a request leaves `model` empty.
    pub chat_model: String,
    pub embed_model: String,
    /// The budget of one call, retries and waits for quota included.
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// Each upstream's breaker.
    pub breaker: BreakerConfig,
    /// Window, margin and replica count of every upstream's rate limiter.
    pub limiter: LimiterConfig,
    /// Whether rate limits are shared with other replicas through Redis (else each replica
    /// keeps its own, which multiplies the quota by the replica count).
    pub shared_limits: bool,
    /// USD per million tokens, by model (built-in prices for common models, then the file's).
    pub prices: BTreeMap<String, Price>,
    /// Past this spend (UTC day, all replicas), calls are refused.
    pub max_daily_cost_usd: Option<f64>,
    /// Completion tokens reserved from the TPM quota for a chat call without `max_tokens`,
    /// corrected from the answer's usage.
    pub completion_estimate: u32,
    /// How often each upstream is probed (`GET /models`) for `/v1/limits` and metrics; the
    /// first probe comes one interval after start.
    pub probe_interval: Duration,
    /// How often spend, upstream concurrency and breaker states are sampled for `/metrics`
    /// (`MILLRACE_METRICS_INTERVAL_MS`).
    pub metrics_interval: Duration,
}

/// One OpenAI-compatible API the gateway sends calls to.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    pub name: String,
    /// The API root *including* the version path, as the OpenAI SDKs take it
    /// (`https://api.openai.com/v1`, `http://127.0.0.1:8090/v1`), without a trailing slash.
    pub base_url: String,
    pub api_key: Option<ApiKey>,
    /// The models it serves; empty means any model.
    pub models: Vec<String>,
    pub quota: Quota,
    pub max_concurrency: usize,
    /// One attempt's time limit.
    pub timeout: Duration,
    /// Lower is tried first; the next priority takes over when every upstream of this one is
    /// open, out of quota or failing.
    pub priority: u32,
    /// Share of calls among upstreams of the same priority.
    pub weight: u32,
}

impl UpstreamConfig {
    pub fn serves(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|m| m == model)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input_per_million: f64,
    #[serde(default)]
    pub output_per_million: f64,
}

impl Price {
    pub fn cost(&self, prompt_tokens: u32, completion_tokens: u32) -> f64 {
        (f64::from(prompt_tokens) * self.input_per_million + f64::from(completion_tokens) * self.output_per_million)
            / 1e6
    }
}

/// A secret that never prints: its `Debug` is redacted and it has no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl Config {
    /// Reads and checks every setting; an error names the variable (or the file and key).
    ///
    /// | variable | default |
    /// |---|---|
    /// | `MILLRACE_LLM_BASE_URL` | unset: no upstream from the environment |
    /// | `MILLRACE_LLM_API_KEY` | unset: no `Authorization` header |
    /// | `MILLRACE_LLM_TIER` | unset: no preset limits (`free`, `tier1` … `tier5`) |
    /// | `MILLRACE_LLM_RPM`, `MILLRACE_LLM_TPM` | the tier's, else unlimited |
    /// | `MILLRACE_LLM_MAX_CONCURRENCY` | the tier's, else 64 |
    /// | `MILLRACE_LLM_UPSTREAMS_FILE` | unset: a TOML file of `[[upstreams]]` and `[prices]` |
    /// | `MILLRACE_LLM_CHAT_MODEL` | `gpt-4o-mini` |
    /// | `MILLRACE_LLM_EMBED_MODEL` | `text-embedding-3-small` |
    /// | `MILLRACE_LLM_TIMEOUT_MS` | 120000 (whole call, retries and quota waits included: a whole quota window fits) |
    /// | `MILLRACE_LLM_MAX_RETRIES` | 3 |
    /// | `MILLRACE_LLM_RETRY_BASE_MS` | 250 (first backoff ceiling, doubled per retry) |
    /// | `MILLRACE_LLM_RETRY_MAX_MS` | 10000 (longest pause, and longest `Retry-After` honoured) |
    /// | `MILLRACE_LLM_BREAKER_*` | see `millrace_resilience::BreakerConfig` |
    /// | `MILLRACE_LLM_SHARED_LIMITS` | true: limits shared by all replicas through Redis |
    /// | `MILLRACE_LLM_REPLICAS` | 1: each replica's share of a limit while Redis is unreachable |
    /// | `MILLRACE_LLM_LIMIT_MARGIN_MS` | 500: how much longer than the window an admission counts |
    /// | `MILLRACE_LLM_LIMIT_WINDOW_MS` | 60000: the upstream's quota window |
    /// | `MILLRACE_LLM_COMPLETION_ESTIMATE` | 256 completion tokens reserved without `max_tokens` |
    /// | `MILLRACE_MAX_DAILY_COST_USD` | unset: no budget |
    /// | `MILLRACE_LLM_PROBE_INTERVAL_MS` | 30000: how often each upstream is probed (informational) |
    /// | `MILLRACE_METRICS_ADDR` | `0.0.0.0:8075`: `/metrics`, apart from the API |
    /// | `MILLRACE_DATABASE_URL` | unset: only the admin key is known (and it holds no `llm`) |
    /// | `MILLRACE_ADMIN_KEY` | unset: keys from the database only |
    /// | `MILLRACE_KEY_CACHE_MS` | 900 (at most 1000): how long a key check is trusted |
    ///
    /// plus those of [`ServiceConfig`] (HTTP port 8065, gRPC port 9065).
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let mut service = ServiceConfig::load(settings, SERVICE, HTTP_PORT, GRPC_PORT)?;
        service.metrics_addr = Some(settings.get_or("METRICS_ADDR", SocketAddr::from(([0, 0, 0, 0], METRICS_PORT)))?);
        let mut upstreams = Vec::new();
        if let Some(raw) = settings.raw("LLM_BASE_URL") {
            upstreams.push(env_upstream(settings, raw)?);
        }
        let mut prices = tiers::default_prices();
        if let Some(path) = settings.raw("LLM_UPSTREAMS_FILE") {
            let file = file::load(Path::new(path))?;
            for upstream in file.upstreams {
                if upstreams.iter().any(|u: &UpstreamConfig| u.name == upstream.name) {
                    return Err(ConfigError::new(
                        "LLM_UPSTREAMS_FILE",
                        format!("{path}: upstream name {:?} is used twice", upstream.name),
                    ));
                }
                upstreams.push(upstream);
            }
            prices.extend(file.prices);
        }

        let timeout = Duration::from_millis(settings.positive("LLM_TIMEOUT_MS", 120_000u64)?);
        // A call may wait for quota up to its own deadline: the servers' must not cut it first.
        if settings.raw("REQUEST_TIMEOUT_MS").is_none() {
            service.limits.request_timeout = service.limits.request_timeout.max(timeout + CALL_DEADLINE_MARGIN);
        }
        let max_daily_cost_usd = match settings.get::<f64>("MAX_DAILY_COST_USD")? {
            Some(usd) if !usd.is_finite() || usd <= 0.0 => {
                return Err(ConfigError::new("MAX_DAILY_COST_USD", "must be a positive number of dollars"));
            }
            other => other,
        };
        Ok(Self {
            service,
            auth: millrace_auth::AuthConfig::from_settings(settings)?,
            upstreams,
            chat_model: settings.get_or("LLM_CHAT_MODEL", DEFAULT_CHAT_MODEL.to_owned())?,
            embed_model: settings.get_or("LLM_EMBED_MODEL", DEFAULT_EMBED_MODEL.to_owned())?,
            timeout,
            retry: RetryPolicy::from_settings(settings, "LLM_")?,
            breaker: BreakerConfig::from_settings(settings, "LLM_")?,
            limiter: LimiterConfig::from_settings(settings, "LLM_")?,
            shared_limits: settings.get_or("LLM_SHARED_LIMITS", true)?,
            prices,
            max_daily_cost_usd,
            completion_estimate: settings.positive("LLM_COMPLETION_ESTIMATE", 256u32)?,
            probe_interval: settings.duration_ms("LLM_PROBE_INTERVAL_MS", 30_000)?,
            metrics_interval: millrace_common::metrics::sample_interval(settings)?,
        })
    }
}

/// The single upstream of `MILLRACE_LLM_*`, serving every model.
fn env_upstream(settings: &Settings, raw_url: &str) -> Result<UpstreamConfig, ConfigError> {
    let tier = match settings.raw("LLM_TIER") {
        Some(name) => Some(tiers::find(name).ok_or_else(|| ConfigError::new("LLM_TIER", tiers::unknown(name)))?),
        None => None,
    };
    let rpm = positive_or(settings, "LLM_RPM", tier.map(|t| t.rpm))?;
    let tpm = positive_or(settings, "LLM_TPM", tier.map(|t| t.tpm))?;
    let default_concurrency = tier.map_or(DEFAULT_MAX_CONCURRENCY, |t| t.max_concurrency);
    Ok(UpstreamConfig {
        name: ENV_UPSTREAM.to_owned(),
        base_url: base_url("LLM_BASE_URL", raw_url)?,
        api_key: settings.raw("LLM_API_KEY").map(|key| ApiKey::new(key.trim())),
        models: Vec::new(),
        quota: Quota { rpm, tpm },
        max_concurrency: settings.positive("LLM_MAX_CONCURRENCY", default_concurrency)?,
        timeout: Duration::from_millis(settings.positive("LLM_ATTEMPT_TIMEOUT_MS", 60_000u64)?),
        priority: 0,
        weight: 1,
    })
}

/// An explicit positive value, else the preset's; zero is refused (a quota of nothing is a typo).
fn positive_or(settings: &Settings, name: &str, preset: Option<u64>) -> Result<Option<u64>, ConfigError> {
    match settings.get::<u64>(name)? {
        Some(0) => Err(ConfigError::new(name, "must be greater than zero (leave it unset for no limit)")),
        Some(value) => Ok(Some(value)),
        None => Ok(preset),
    }
}

/// Checks an upstream's URL; `name` is the variable or file key it came from.
fn base_url(name: &str, raw: &str) -> Result<String, ConfigError> {
    let raw = raw.trim();
    let url = reqwest::Url::parse(raw).map_err(|err| ConfigError::new(name, format!("invalid URL {raw:?}: {err}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::new(name, format!("{raw:?} is not an http:// or https:// URL")));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::new(name, format!("{raw:?} must not have a query or fragment")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::new(name, format!("{raw:?} must not carry credentials; use the API key setting")));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

impl millrace_common::host::Describe for Config {
    fn described(&self) -> (&ServiceConfig, Option<millrace_common::host::Consumes>) {
        (&self.service, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_settings(&Settings::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn an_explicit_request_timeout_wins() {
        let config = load(&[("MILLRACE_REQUEST_TIMEOUT_MS", "5000")]).unwrap();
        assert_eq!(config.service.limits.request_timeout, Duration::from_secs(5));
    }

    #[test]
    fn defaults_without_an_upstream() {
        let config = load(&[]).unwrap();
        assert!(config.upstreams.is_empty());
        assert_eq!(config.service.http_addr.port(), 8065);
        assert_eq!(config.service.grpc_addr.port(), 9065);
        assert_eq!(
            config.service.metrics_addr.map(|addr| addr.port()),
            Some(METRICS_PORT),
            "metrics apart from the API"
        );
        assert_eq!(config.timeout, Duration::from_secs(120));
        assert_eq!(config.service.limits.request_timeout, Duration::from_secs(130), "outlasts a call's deadline");
        assert_eq!(config.retry.max_retries, 3);
        assert_eq!(config.chat_model, DEFAULT_CHAT_MODEL);
        assert!(config.shared_limits);
        assert_eq!(config.max_daily_cost_usd, None);
    }

    #[test]
    fn the_environment_upstream_serves_every_model_with_its_limits() {
        let config = load(&[
            ("MILLRACE_LLM_BASE_URL", "http://127.0.0.1:8090/v1/"),
            ("MILLRACE_LLM_RPM", "120"),
            ("MILLRACE_LLM_TPM", "50000"),
            ("MILLRACE_LLM_MAX_CONCURRENCY", "4"),
        ])
        .unwrap();
        let upstream = &config.upstreams[0];
        assert_eq!(upstream.name, ENV_UPSTREAM);
        assert_eq!(upstream.base_url, "http://127.0.0.1:8090/v1");
        assert_eq!(upstream.quota, Quota { rpm: Some(120), tpm: Some(50_000) });
        assert_eq!(upstream.max_concurrency, 4);
        assert!(upstream.serves("anything"));
    }

    #[test]
    fn a_tier_presets_the_limits_and_fields_override_it() {
        let config = load(&[("LLM_BASE_URL", "http://h/v1"), ("LLM_TIER", "tier1"), ("LLM_RPM", "100")]).unwrap();
        let tier1 = tiers::find("tier1").unwrap();
        assert_eq!(config.upstreams[0].quota, Quota { rpm: Some(100), tpm: Some(tier1.tpm) });
        assert_eq!(config.upstreams[0].max_concurrency, tier1.max_concurrency);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (name, value) in [
            ("MILLRACE_LLM_TIMEOUT_MS", "abc"),
            ("MILLRACE_LLM_TIMEOUT_MS", "0"),
            ("MILLRACE_LLM_MAX_RETRIES", "-1"),
            ("MILLRACE_LLM_BASE_URL", "not a url"),
            ("MILLRACE_LLM_BASE_URL", "ftp://host/v1"),
            ("MILLRACE_LLM_BASE_URL", "http://user:pw@host/v1"),
            ("MILLRACE_LLM_RETRY_MAX_MS", "1"),
            ("MILLRACE_LLM_TIER", "platinum"),
            ("MILLRACE_LLM_RPM", "0"),
            ("MILLRACE_LLM_MAX_CONCURRENCY", "0"),
            ("MILLRACE_MAX_DAILY_COST_USD", "-3"),
            ("MILLRACE_LLM_UPSTREAMS_FILE", "/nonexistent/upstreams.toml"),
        ] {
            let mut pairs = vec![(name, value)];
            if name != "MILLRACE_LLM_BASE_URL" {
                pairs.push(("MILLRACE_LLM_BASE_URL", "http://h/v1"));
            }
            let err = load(&pairs).unwrap_err();
            assert_eq!(err.variable, name, "{err}");
        }
    }

    #[test]
    fn the_api_key_never_prints() {
        let config =
            load(&[("MILLRACE_LLM_BASE_URL", "http://h/v1"), ("MILLRACE_LLM_API_KEY", "sk-very-secret")]).unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("sk-very-secret"), "{printed}");
        assert!(printed.contains("<redacted>"));
        assert_eq!(config.upstreams[0].api_key.as_ref().unwrap().expose(), "sk-very-secret");
    }

    #[test]
    fn prices_cost_per_million_tokens() {
        let price = Price { input_per_million: 0.15, output_per_million: 0.60 };
        let cost = price.cost(1_000_000, 500_000);
        assert!((cost - 0.45).abs() < 1e-9, "{cost}");
    }

    #[test]
    fn it_describes_the_upstream_settings_it_reads_once_an_upstream_is_set() {
        let describe = |pairs: &[(&str, &str)]| {
            let settings = Settings::from_pairs(pairs.iter().copied());
            let described = millrace_common::host::describe(SERVICE, settings, Config::from_settings).unwrap();
            described.variables.into_iter().map(|read| read.name).collect::<Vec<_>>()
        };
        assert!(!describe(&[]).contains(&"MILLRACE_LLM_RPM".to_owned()));
        let with_upstream = describe(&[("LLM_BASE_URL", "http://u/v1")]);
        for name in ["MILLRACE_LLM_RPM", "MILLRACE_LLM_TIER", "MILLRACE_LLM_BREAKER_MIN_CALLS"] {
            assert!(with_upstream.contains(&name.to_owned()), "{name}: {with_upstream:?}");
        }
    }
}
