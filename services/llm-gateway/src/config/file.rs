//! The upstreams file (`MILLRACE_LLM_UPSTREAMS_FILE`): several upstreams and a price table.
//!
//! ```toml
//! [[upstreams]]
//! name = "openai"
//! base_url = "https://api.openai.com/v1"
//! api_key_env = "OPENAI_API_KEY"        # or api_key_file = "/run/secrets/openai"
//! models = ["gpt-4o-mini"]
//! tier = "tier1"                        # presets rpm, tpm and max_concurrency
//! rpm = 400                             # overrides the tier's
//! priority = 0                          # lower first; the next takes over when these fail
//! weight = 3                            # share among upstreams of the same priority
//!
//! [prices."gpt-4o-mini"]
//! input_per_million = 0.15
//! output_per_million = 0.60
//! ```
//!
//! Keys are never written in the file itself: it names the variable or file that holds each
//! one, so the file can live in a ConfigMap and the keys in Secrets. Unknown keys are refused.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use millrace_common::ConfigError;
use millrace_resilience::Quota;
use serde::Deserialize;

use super::{ApiKey, DEFAULT_MAX_CONCURRENCY, Price, UpstreamConfig, base_url, tiers};

const VARIABLE: &str = "LLM_UPSTREAMS_FILE";

pub struct UpstreamsFile {
    pub upstreams: Vec<UpstreamConfig>,
    pub prices: BTreeMap<String, Price>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    upstreams: Vec<RawUpstream>,
    #[serde(default)]
    prices: BTreeMap<String, Price>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    name: String,
    base_url: String,
    api_key_env: Option<String>,
    api_key_file: Option<String>,
    #[serde(default)]
    models: Vec<String>,
    tier: Option<String>,
    rpm: Option<u64>,
    tpm: Option<u64>,
    max_concurrency: Option<usize>,
    timeout_ms: Option<u64>,
    #[serde(default)]
    priority: u32,
    weight: Option<u32>,
}

pub fn load(path: &Path) -> Result<UpstreamsFile, ConfigError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|err| ConfigError::new(VARIABLE, format!("cannot read {shown}: {err}")))?;
    parse(&text, &shown.to_string())
}

/// `origin` names the file in errors.
pub fn parse(text: &str, origin: &str) -> Result<UpstreamsFile, ConfigError> {
    let raw: RawFile = toml::from_str(text).map_err(|err| ConfigError::new(VARIABLE, format!("{origin}: {err}")))?;
    let fail = |message: String| ConfigError::new(VARIABLE, format!("{origin}: {message}"));
    let mut upstreams: Vec<UpstreamConfig> = Vec::with_capacity(raw.upstreams.len());
    for (i, upstream) in raw.upstreams.into_iter().enumerate() {
        let at = format!("upstreams[{i}]");
        let name = upstream.name.trim().to_owned();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(fail(format!("{at}.name {name:?} must be letters, digits, '-', '_' or '.'")));
        }
        if upstreams.iter().any(|u| u.name == name) {
            return Err(fail(format!("{at}.name {name:?} is used twice")));
        }
        let tier = match &upstream.tier {
            Some(tier) => Some(tiers::find(tier).ok_or_else(|| fail(format!("{at}.tier: {}", tiers::unknown(tier))))?),
            None => None,
        };
        for (key, value) in [("rpm", upstream.rpm), ("tpm", upstream.tpm), ("timeout_ms", upstream.timeout_ms)] {
            if value == Some(0) {
                return Err(fail(format!("{at}.{key} must be greater than zero (leave it out for no limit)")));
            }
        }
        if upstream.max_concurrency == Some(0) || upstream.weight == Some(0) {
            let key = if upstream.weight == Some(0) { "weight" } else { "max_concurrency" };
            return Err(fail(format!("{at}.{key} must be greater than zero")));
        }
        let url =
            base_url(VARIABLE, &upstream.base_url).map_err(|err| fail(format!("{at}.base_url: {}", err.message)))?;
        let api_key = api_key(&upstream).map_err(|message| fail(format!("{at}: {message}")))?;
        upstreams.push(UpstreamConfig {
            name,
            base_url: url,
            api_key,
            models: upstream.models,
            quota: Quota { rpm: upstream.rpm.or(tier.map(|t| t.rpm)), tpm: upstream.tpm.or(tier.map(|t| t.tpm)) },
            max_concurrency: upstream
                .max_concurrency
                .unwrap_or_else(|| tier.map_or(DEFAULT_MAX_CONCURRENCY, |t| t.max_concurrency)),
            timeout: Duration::from_millis(upstream.timeout_ms.unwrap_or(60_000)),
            priority: upstream.priority,
            weight: upstream.weight.unwrap_or(1),
        });
    }
    for (model, price) in &raw.prices {
        let valid = |usd: f64| usd.is_finite() && usd >= 0.0;
        if !valid(price.input_per_million) || !valid(price.output_per_million) {
            return Err(fail(format!("prices.{model:?}: prices must be zero or more dollars")));
        }
    }
    Ok(UpstreamsFile { upstreams, prices: raw.prices })
}

/// The key from the named variable or file; neither means no `Authorization` header.
fn api_key(upstream: &RawUpstream) -> Result<Option<ApiKey>, String> {
    match (&upstream.api_key_env, &upstream.api_key_file) {
        (Some(_), Some(_)) => Err("give api_key_env or api_key_file, not both".to_owned()),
        (Some(variable), None) => match std::env::var(variable) {
            Ok(key) if !key.trim().is_empty() => Ok(Some(ApiKey::new(key.trim()))),
            _ => Err(format!("api_key_env names {variable:?}, which is not set")),
        },
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(key) if !key.trim().is_empty() => Ok(Some(ApiKey::new(key.trim()))),
            Ok(_) => Err(format!("api_key_file {path:?} is empty")),
            Err(err) => Err(format!("cannot read api_key_file {path:?}: {err}")),
        },
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_take_tier_presets_and_overrides() {
        let file = parse(
            r#"
            [[upstreams]]
            name = "primary"
            base_url = "http://127.0.0.1:1/v1/"
            models = ["m"]
            tier = "tier1"
            rpm = 60
            priority = 0
            weight = 3

            [[upstreams]]
            name = "backup"
            base_url = "http://127.0.0.1:2/v1"
            priority = 1

            [prices.m]
            input_per_million = 1.0
            output_per_million = 2.0
            "#,
            "test.toml",
        )
        .unwrap();
        let (primary, backup) = (&file.upstreams[0], &file.upstreams[1]);
        assert_eq!(primary.base_url, "http://127.0.0.1:1/v1");
        assert_eq!(primary.quota, Quota { rpm: Some(60), tpm: Some(tiers::find("tier1").unwrap().tpm) });
        assert_eq!((primary.priority, primary.weight), (0, 3));
        assert!(primary.serves("m") && !primary.serves("other"));
        assert_eq!(backup.quota, Quota::default());
        assert!(backup.serves("other"));
        assert_eq!(file.prices["m"], Price { input_per_million: 1.0, output_per_million: 2.0 });
    }

    #[test]
    fn mistakes_are_refused_naming_the_key() {
        for (text, expected) in [
            ("[[upstreams]]\nname='a'\nbase_url='http://h/v1'\nrpn=5", "unknown field `rpn`"),
            ("[[upstreams]]\nname='a'\nbase_url='ftp://h/v1'", "upstreams[0].base_url"),
            ("[[upstreams]]\nname='a'\nbase_url='http://h/v1'\nrpm=0", "upstreams[0].rpm"),
            ("[[upstreams]]\nname='a'\nbase_url='http://h/v1'\nweight=0", "upstreams[0].weight"),
            ("[[upstreams]]\nname='a'\nbase_url='http://h/v1'\ntier='gold'", "upstreams[0].tier"),
            (
                "[[upstreams]]\nname='a'\nbase_url='http://h/v1'\n[[upstreams]]\nname='a'\nbase_url='http://h/v1'",
                "used twice",
            ),
            ("[[upstreams]]\nname='a'\nbase_url='http://h/v1'\napi_key_env='MILLRACE_TEST_UNSET_KEY'", "not set"),
            ("[prices.m]\ninput_per_million=-1.0", "prices.\"m\""),
        ] {
            let err = parse(text, "f.toml").err().unwrap_or_else(|| panic!("{text} was accepted"));
            assert_eq!(err.variable, "MILLRACE_LLM_UPSTREAMS_FILE");
            assert!(err.message.contains(expected), "{err} should mention {expected}");
        }
    }
}
