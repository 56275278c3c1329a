//! The gateway's settings, all from `MILLRACE_*` variables (or the config file), checked before
//! any port is bound. One upstream for now; without `MILLRACE_LLM_BASE_URL` the gateway still
//! starts, and says on every call how to configure it.

use std::time::Duration;

use millrace_common::{ConfigError, ServiceConfig, Settings};

use crate::retry::RetryPolicy;

pub const SERVICE: &str = "llm-gateway";
pub const HTTP_PORT: u16 = 8065;
pub const GRPC_PORT: u16 = 9065;
pub const DEFAULT_CHAT_MODEL: &str = "gpt-4o-mini";
pub const DEFAULT_EMBED_MODEL: &str = "text-embedding-3-small";

#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    /// None when `MILLRACE_LLM_BASE_URL` is unset.
    pub upstream: Option<UpstreamConfig>,
    /// Used when a request leaves `model` empty.
    pub chat_model: String,
    pub embed_model: String,
    /// The budget of one gRPC call, retries included.
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

/// Where the OpenAI-compatible API lives and how to authenticate to it.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// The API root *including* the version path, as the OpenAI SDKs take it
    /// (`https://api.openai.com/v1`, `http://127.0.0.1:8090/v1`), without a trailing slash.
    pub base_url: String,
    pub api_key: Option<ApiKey>,
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
    /// Reads and checks every setting; an error names the variable.
    ///
    /// | variable | default |
    /// |---|---|
    /// | `MILLRACE_LLM_BASE_URL` | unset: no upstream |
    /// | `MILLRACE_LLM_API_KEY` | unset: no `Authorization` header |
    /// | `MILLRACE_LLM_CHAT_MODEL` | `gpt-4o-mini` |
    /// | `MILLRACE_LLM_EMBED_MODEL` | `text-embedding-3-small` |
    /// | `MILLRACE_LLM_TIMEOUT_MS` | 60000 (whole call, retries included) |
    /// | `MILLRACE_LLM_MAX_RETRIES` | 3 |
    /// | `MILLRACE_LLM_RETRY_BASE_MS` | 250 (first backoff ceiling, doubled per retry) |
    /// | `MILLRACE_LLM_RETRY_MAX_MS` | 10000 (longest pause, and longest `Retry-After` honoured) |
    ///
    /// plus those of [`ServiceConfig`] (HTTP port 8065, gRPC port 9065).
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let service = ServiceConfig::load(settings, SERVICE, HTTP_PORT, GRPC_PORT)?;
        let upstream = match settings.raw("LLM_BASE_URL") {
            None => None,
            Some(raw) => Some(UpstreamConfig {
                base_url: base_url(raw)?,
                api_key: settings.raw("LLM_API_KEY").map(|key| ApiKey::new(key.trim())),
            }),
        };
        let timeout = Duration::from_millis(settings.positive("LLM_TIMEOUT_MS", 60_000u64)?);
        let retry = RetryPolicy {
            max_retries: settings.get_or("LLM_MAX_RETRIES", 3u32)?,
            base_delay: Duration::from_millis(settings.positive("LLM_RETRY_BASE_MS", 250u64)?),
            max_delay: Duration::from_millis(settings.positive("LLM_RETRY_MAX_MS", 10_000u64)?),
        };
        if retry.max_delay < retry.base_delay {
            return Err(ConfigError::new("LLM_RETRY_MAX_MS", "must not be below MILLRACE_LLM_RETRY_BASE_MS"));
        }
        Ok(Self {
            service,
            upstream,
            chat_model: settings.get_or("LLM_CHAT_MODEL", DEFAULT_CHAT_MODEL.to_owned())?,
            embed_model: settings.get_or("LLM_EMBED_MODEL", DEFAULT_EMBED_MODEL.to_owned())?,
            timeout,
            retry,
        })
    }
}

fn base_url(raw: &str) -> Result<String, ConfigError> {
    let raw = raw.trim();
    let url = reqwest::Url::parse(raw)
        .map_err(|err| ConfigError::new("LLM_BASE_URL", format!("invalid URL {raw:?}: {err}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::new("LLM_BASE_URL", format!("{raw:?} is not an http:// or https:// URL")));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::new("LLM_BASE_URL", format!("{raw:?} must not have a query or fragment")));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_settings(&Settings::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn defaults_without_an_upstream() {
        let config = load(&[]).unwrap();
        assert!(config.upstream.is_none());
        assert_eq!(config.service.http_addr.port(), 8065);
        assert_eq!(config.service.grpc_addr.port(), 9065);
        assert_eq!(config.timeout, Duration::from_secs(60));
        assert_eq!(config.retry.max_retries, 3);
        assert_eq!(config.chat_model, DEFAULT_CHAT_MODEL);
    }

    #[test]
    fn the_base_url_keeps_its_path_and_loses_the_trailing_slash() {
        let config = load(&[("MILLRACE_LLM_BASE_URL", "http://127.0.0.1:8090/v1/")]).unwrap();
        assert_eq!(config.upstream.unwrap().base_url, "http://127.0.0.1:8090/v1");
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (name, value) in [
            ("MILLRACE_LLM_TIMEOUT_MS", "abc"),
            ("MILLRACE_LLM_TIMEOUT_MS", "0"),
            ("MILLRACE_LLM_MAX_RETRIES", "-1"),
            ("MILLRACE_LLM_BASE_URL", "not a url"),
            ("MILLRACE_LLM_BASE_URL", "ftp://host/v1"),
            ("MILLRACE_LLM_RETRY_MAX_MS", "1"),
        ] {
            let err = load(&[(name, value)]).unwrap_err();
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
        assert_eq!(config.upstream.unwrap().api_key.unwrap().expose(), "sk-very-secret");
    }
}
