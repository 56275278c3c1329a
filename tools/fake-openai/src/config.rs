//! Command-line flags (each also read from a `FAKE_OPENAI_*` environment variable), checked
//! before the port is bound so that a typo fails loudly instead of silently faking nothing.

use std::net::SocketAddr;

use crate::Error;

/// The largest vector the fake will produce; a guard against a typo allocating gigabytes.
pub const MAX_EMBEDDING_DIM: usize = 16_384;

/// How the fake upstream behaves. Build it with `Config::default()` in tests and change fields.
#[derive(Clone, clap::Parser)]
#[command(
    name = "millrace-fake-openai",
    version,
    about = "An OpenAI-compatible fake upstream for tests, benchmarks and demos"
)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (the first stdout line names it).
    #[arg(long, env = "FAKE_OPENAI_ADDR", default_value = "127.0.0.1:8090")]
    pub addr: SocketAddr,

    /// Fixed latency added to every admitted request, in milliseconds.
    #[arg(long, env = "FAKE_OPENAI_LATENCY_MS", default_value_t = 0)]
    pub latency_ms: u64,

    /// Random extra latency, uniform in 0..=jitter, in milliseconds.
    #[arg(long, env = "FAKE_OPENAI_JITTER_MS", default_value_t = 0)]
    pub jitter_ms: u64,

    /// Requests per minute over a sliding 60 s window (0 = unlimited).
    #[arg(long, env = "FAKE_OPENAI_RPM", default_value_t = 0)]
    pub rpm: u64,

    /// Tokens (prompt + completion) per minute over a sliding 60 s window (0 = unlimited).
    #[arg(long, env = "FAKE_OPENAI_TPM", default_value_t = 0)]
    pub tpm: u64,

    /// Share (0..=1) of admitted requests answered 500.
    #[arg(long, env = "FAKE_OPENAI_ERROR_RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub error_rate: f64,

    /// Share (0..=1) of admitted requests that hang for --hang-ms, then answer 504.
    #[arg(long, env = "FAKE_OPENAI_TIMEOUT_RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub timeout_rate: f64,

    /// Share (0..=1) of JSON answers (`json_object`/`json_schema`) cut off mid-document, as a
    /// model that loses its way does: status 200, `finish_reason` "stop", content not JSON.
    #[arg(long, env = "FAKE_OPENAI_MALFORMED_JSON_RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub malformed_json_rate: f64,

    /// Share (0..=1) of streamed answers (`"stream": true`) cut off part-way: status 200 and
    /// some content, then the body ends with no finish chunk and no `data: [DONE]`, as when a
    /// connection to a real upstream drops mid-answer.
    #[arg(long, env = "FAKE_OPENAI_TRUNCATE_STREAM_RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub truncate_stream_rate: f64,

    /// How long a "timed out" request hangs before its 504, in milliseconds.
    #[arg(long, env = "FAKE_OPENAI_HANG_MS", default_value_t = 30_000)]
    pub hang_ms: u64,

    /// Length of the embedding vectors (a request's `dimensions` field overrides it).
    #[arg(long, env = "FAKE_OPENAI_EMBEDDING_DIM", default_value_t = 384, value_parser = parse_dim)]
    pub embedding_dim: usize,

    /// Seed of the random draws (faults, jitter); without it they differ from run to run.
    /// Answers (completions, vectors) never depend on it: they are a function of the input.
    #[arg(long, env = "FAKE_OPENAI_SEED")]
    pub seed: Option<u64>,

    /// When set, requests to /v1 must carry `Authorization: Bearer <key>`, else 401.
    #[arg(long, env = "FAKE_OPENAI_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8090)),
            latency_ms: 0,
            jitter_ms: 0,
            rpm: 0,
            tpm: 0,
            error_rate: 0.0,
            timeout_rate: 0.0,
            malformed_json_rate: 0.0,
            truncate_stream_rate: 0.0,
            hang_ms: 30_000,
            embedding_dim: 384,
            seed: None,
            api_key: None,
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("latency_ms", &self.latency_ms)
            .field("jitter_ms", &self.jitter_ms)
            .field("rpm", &self.rpm)
            .field("tpm", &self.tpm)
            .field("error_rate", &self.error_rate)
            .field("timeout_rate", &self.timeout_rate)
            .field("malformed_json_rate", &self.malformed_json_rate)
            .field("truncate_stream_rate", &self.truncate_stream_rate)
            .field("hang_ms", &self.hang_ms)
            .field("embedding_dim", &self.embedding_dim)
            .field("seed", &self.seed)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Config {
    /// Checks what the flag parsers cannot see alone (and what code-built configs skipped).
    pub fn validate(&self) -> Result<(), Error> {
        check_rate("--error-rate", self.error_rate)?;
        check_rate("--timeout-rate", self.timeout_rate)?;
        check_rate("--malformed-json-rate", self.malformed_json_rate)?;
        check_rate("--truncate-stream-rate", self.truncate_stream_rate)?;
        if self.error_rate + self.timeout_rate > 1.0 {
            return Err(Error::Config(format!(
                "--error-rate ({}) plus --timeout-rate ({}) must not exceed 1",
                self.error_rate, self.timeout_rate
            )));
        }
        parse_dim(&self.embedding_dim.to_string()).map_err(|msg| Error::Config(format!("--embedding-dim: {msg}")))?;
        Ok(())
    }
}

fn check_rate(flag: &str, value: f64) -> Result<(), Error> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(Error::Config(format!("{flag} must be between 0 and 1, got {value}")))
    }
}

fn parse_rate(raw: &str) -> Result<f64, String> {
    let value: f64 = raw.trim().parse().map_err(|_| format!("{raw:?} is not a number"))?;
    if (0.0..=1.0).contains(&value) { Ok(value) } else { Err(format!("must be between 0 and 1, got {value}")) }
}

fn parse_dim(raw: &str) -> Result<usize, String> {
    let value: usize = raw.trim().parse().map_err(|_| format!("{raw:?} is not a positive integer"))?;
    if (1..=MAX_EMBEDDING_DIM).contains(&value) {
        Ok(value)
    } else {
        Err(format!("must be between 1 and {MAX_EMBEDDING_DIM}, got {value}"))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn defaults_match_the_flags() {
        let parsed = Config::try_parse_from(["millrace-fake-openai"]).unwrap();
        let default = Config::default();
        assert_eq!(format!("{parsed:?}"), format!("{default:?}"));
    }

    #[test]
    fn a_rate_above_one_is_refused_with_the_flag_name() {
        let err = Config::try_parse_from(["x", "--error-rate", "1.5"]).err().unwrap().to_string();
        assert!(err.contains("--error-rate") && err.contains("between 0 and 1"), "{err}");
    }

    #[test]
    fn rates_must_not_add_up_past_one() {
        let config = Config { error_rate: 0.7, timeout_rate: 0.5, ..Config::default() };
        assert!(config.validate().unwrap_err().to_string().contains("must not exceed 1"));
    }

    #[test]
    fn the_api_key_never_prints() {
        let config = Config { api_key: Some("sk-secret".into()), ..Config::default() };
        assert!(!format!("{config:?}").contains("sk-secret"));
    }
}
