//! Typed, layered configuration: built-in defaults, then an optional TOML file named by
//! `MILLRACE_CONFIG`, then `MILLRACE_*` environment variables. Every value is parsed and
//! validated before a port is bound, and a bad value names its variable.
//!
//! [`Settings`] also records every name it is asked for, with its default and whether it is
//! required, so that a service can say what it reads (`--describe`) from its real loader
//! rather than from a second list kept beside it.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;

const PREFIX: &str = "MILLRACE_";

/// A configuration value that could not be used; `variable` is the full environment name.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    pub variable: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(name: &str, message: impl Into<String>) -> Self {
        Self { variable: full_name(name), message: message.into() }
    }
}

fn full_name(name: &str) -> String {
    if name.starts_with(PREFIX) { name.to_owned() } else { format!("{PREFIX}{name}") }
}

/// Raw settings, keyed by full variable name (`MILLRACE_REDIS_URL`), and a record of every
/// name asked for.
#[derive(Debug, Default)]
pub struct Settings {
    values: BTreeMap<String, String>,
    reads: Mutex<BTreeMap<String, Read>>,
    describing: bool,
}

/// A variable a service asked for: its full name, its default (as the service would use it),
/// whether it must be set, and whether it is the gRPC URL of another service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Read {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    pub required: bool,
    /// For a required value: what one looks like.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub example: Option<String>,
    pub peer: bool,
}

impl Clone for Settings {
    fn clone(&self) -> Self {
        Self { values: self.values.clone(), reads: Mutex::new(self.reads()), describing: self.describing }
    }
}

impl Settings {
    /// Reads the optional config file, then the process environment (which wins).
    pub fn load() -> Result<Self, ConfigError> {
        let mut settings = Self::default();
        if let Ok(path) = std::env::var("MILLRACE_CONFIG") {
            let text = std::fs::read_to_string(&path)
                .map_err(|err| ConfigError::new("CONFIG", format!("cannot read {path}: {err}")))?;
            settings.merge_toml(&text).map_err(|msg| ConfigError::new("CONFIG", format!("{path}: {msg}")))?;
        }
        settings.merge_pairs(std::env::vars().filter(|(k, _)| k.starts_with(PREFIX)));
        Ok(settings)
    }

    /// Settings from explicit pairs (tests, tools).
    pub fn from_pairs<K: AsRef<str>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        let mut settings = Self::default();
        settings.merge_pairs(pairs);
        settings
    }

    fn merge_pairs<K: AsRef<str>, V: Into<String>>(&mut self, pairs: impl IntoIterator<Item = (K, V)>) {
        for (key, value) in pairs {
            self.values.insert(full_name(key.as_ref()), value.into());
        }
    }

    /// A TOML file maps onto variable names: `redis_url = "…"` is `MILLRACE_REDIS_URL`, and
    /// `[llm] base_url = "…"` is `MILLRACE_LLM_BASE_URL`.
    fn merge_toml(&mut self, text: &str) -> Result<(), String> {
        let table: toml::Table = text.parse().map_err(|err: toml::de::Error| err.to_string())?;
        let mut flat = Vec::new();
        flatten("", &toml::Value::Table(table), &mut flat)?;
        self.merge_pairs(flat);
        Ok(())
    }

    /// Settings for describing a service (`--describe`): the loader runs as it would at start,
    /// except that a missing required value takes its example (see [`Settings::require`]) and
    /// files are not opened (see [`Settings::describing`]), so a service describes itself with
    /// no secrets, no model files and no peers at hand.
    pub fn for_describe(mut self) -> Self {
        self.describing = true;
        self
    }

    /// Whether these settings only describe the service: a loader skips what needs files
    /// (loading a model's tokenizer), keeping the checks of the values themselves.
    pub fn describing(&self) -> bool {
        self.describing
    }

    /// Every variable asked for so far, by full name.
    pub fn reads(&self) -> BTreeMap<String, Read> {
        self.reads.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn record(&self, name: &str, update: impl FnOnce(&mut Read)) {
        let name = full_name(name);
        let mut reads = self.reads.lock().unwrap_or_else(PoisonError::into_inner);
        update(reads.entry(name.clone()).or_insert_with(|| Read { name, ..Read::default() }));
    }

    pub fn raw(&self, name: &str) -> Option<&str> {
        self.record(name, |_| {});
        self.values.get(&full_name(name)).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// An optional typed value; an unparsable value is an error naming the variable.
    pub fn get<T>(&self, name: &str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.raw(name)
            .map(|raw| {
                raw.trim().parse::<T>().map_err(|err| ConfigError::new(name, format!("invalid value {raw:?}: {err}")))
            })
            .transpose()
    }

    pub fn get_or<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr + Display,
        T::Err: Display,
    {
        self.record(name, |read| read.default = Some(default.to_string()));
        Ok(self.get(name)?.unwrap_or(default))
    }

    /// A required value; `example` is what one looks like (for the error, and what describing
    /// settings use in its place).
    pub fn require<T>(&self, name: &str, example: &str) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.record(name, |read| {
            read.required = true;
            read.example = Some(example.to_owned());
        });
        match self.get(name)? {
            Some(value) => Ok(value),
            None if self.describing => {
                example.parse().map_err(|err| ConfigError::new(name, format!("example {example:?}: {err}")))
            }
            None => Err(ConfigError::new(name, format!("is required (e.g. {example})"))),
        }
    }

    /// A duration given in milliseconds.
    pub fn duration_ms(&self, name: &str, default_ms: u64) -> Result<Duration, ConfigError> {
        Ok(Duration::from_millis(self.get_or(name, default_ms)?))
    }

    /// The gRPC address of another service: an `http://` or `https://` URL that tonic accepts.
    pub fn grpc_url(&self, name: &str, default: &str) -> Result<String, ConfigError> {
        self.record(name, |read| read.peer = true);
        let url: String = self.get_or(name, default.to_owned())?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::new(name, format!("{url:?} is not an http:// or https:// URL")));
        }
        tonic::transport::Endpoint::from_shared(url.clone())
            .map_err(|err| ConfigError::new(name, format!("{url:?} is not a valid URL: {err}")))?;
        Ok(url)
    }

    /// A positive integer (a count or a size that must not be zero).
    pub fn positive<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr + Display + PartialOrd + Default + Copy,
        T::Err: Display,
    {
        let value = self.get_or(name, default)?;
        if value <= T::default() {
            return Err(ConfigError::new(name, "must be greater than zero"));
        }
        Ok(value)
    }
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut Vec<(String, String)>) -> Result<(), String> {
    match value {
        toml::Value::Table(table) => {
            for (key, value) in table {
                let name =
                    if prefix.is_empty() { key.to_uppercase() } else { format!("{prefix}_{}", key.to_uppercase()) };
                flatten(&name, value, out)?;
            }
        }
        toml::Value::String(s) => out.push((prefix.to_owned(), s.clone())),
        toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
            out.push((prefix.to_owned(), value.to_string()))
        }
        other => return Err(format!("{prefix}: unsupported value type {}", other.type_str())),
    }
    Ok(())
}

/// Whether an LLM upstream is configured for the gateway (`MILLRACE_LLM_BASE_URL` or
/// `MILLRACE_LLM_UPSTREAMS_FILE`): the stages then default to calling it.
pub fn llm_configured(settings: &Settings) -> bool {
    settings.raw("LLM_BASE_URL").is_some() || settings.raw("LLM_UPSTREAMS_FILE").is_some()
}

/// The embedding model `make setup` installs; its folder name is recorded with its vectors.
pub const DEFAULT_EMBEDDING_MODEL: &str = "all-MiniLM-L6-v2";

/// Where the embedding model lives unless `MILLRACE_EMBEDDING_MODEL_DIR` says otherwise:
/// `$MILLRACE_HOME/models/all-MiniLM-L6-v2`, with `MILLRACE_HOME` defaulting to
/// `$HOME/.cache/millrace` (where `make setup` puts it). The embeddings service reads the model
/// there and the chunking service its tokenizer, so chunk sizes are counted in the model's tokens.
pub fn default_model_dir() -> PathBuf {
    let home = std::env::var_os("MILLRACE_HOME").filter(|v| !v.is_empty()).map(PathBuf::from).unwrap_or_else(|| {
        std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")).join(".cache/millrace")
    });
    home.join("models").join(DEFAULT_EMBEDDING_MODEL)
}

/// `MILLRACE_EMBEDDING_MODEL_DIR`, else the model under `MILLRACE_HOME` (from the environment
/// or the config file), else [`default_model_dir`].
pub fn embedding_model_dir(settings: &Settings) -> Result<PathBuf, ConfigError> {
    if let Some(dir) = settings.get::<PathBuf>("EMBEDDING_MODEL_DIR")? {
        return Ok(dir);
    }
    Ok(match settings.raw("HOME").filter(|home| !home.is_empty()) {
        Some(home) => PathBuf::from(home).join("models").join(DEFAULT_EMBEDDING_MODEL),
        None => default_model_dir(),
    })
}

/// What the command line asks of a service: to run; to check its settings and exit
/// (`--check-config`, `nginx -t`'s job, for a deployment's environment without Redis or a port);
/// or to describe itself and exit (`--describe`, see `crate::host::describe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Run,
    CheckConfig,
    Describe,
}

impl Command {
    /// The command of a service's arguments (without the program name); anything else they hold
    /// is an error to print.
    pub fn from_args(mut args: impl Iterator<Item = String>) -> Result<Self, String> {
        match (args.next(), args.next()) {
            (None, _) => Ok(Self::Run),
            (Some(flag), None) if flag == "--check-config" => Ok(Self::CheckConfig),
            (Some(flag), None) if flag == "--describe" => Ok(Self::Describe),
            (Some(arg), _) => Err(format!(
                "unexpected argument {arg:?}: the settings are MILLRACE_* environment variables (README \"Configuration\"); \
                 --check-config validates them and exits, --describe prints what the service reads and serves as JSON"
            )),
        }
    }

    /// This process's command; exits with status 2 and the usage on anything else.
    pub fn from_env_or_exit() -> Self {
        Self::from_args(std::env::args().skip(1)).unwrap_or_else(|usage| {
            eprintln!("{usage}");
            std::process::exit(2);
        })
    }
}

/// Loads settings and builds a service's config from them; on any error prints it (it names
/// the variable) and exits with status 2, before a port is bound. With `check_only` it exits 0
/// once the settings are valid instead of returning.
pub fn load_or_exit<C>(check_only: bool, from_settings: impl FnOnce(&Settings) -> Result<C, ConfigError>) -> C {
    match Settings::load().and_then(|settings| from_settings(&settings)) {
        Ok(_) if check_only => {
            println!("configuration ok");
            std::process::exit(0);
        }
        Ok(config) => config,
        Err(err) => {
            eprintln!("configuration error: {err}");
            std::process::exit(2);
        }
    }
}

/// What every service needs: where to listen, where Redis is, and how to drain.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// Where `/metrics` is served instead of the HTTP port (`MILLRACE_METRICS_ADDR`), so that
    /// who may scrape and who may call the API can be told apart; None keeps it on the HTTP port.
    pub metrics_addr: Option<SocketAddr>,
    /// Where Redis is, and its TLS (`MILLRACE_REDIS_URL` and `MILLRACE_REDIS_*_FILE`).
    pub redis: crate::redis_conn::RedisConfig,
    /// TLS of the gRPC server and of the channels to `https://` peers (`MILLRACE_GRPC_TLS_*`).
    pub grpc_tls: crate::tls::GrpcTls,
    /// Prefix of every Redis key, so several deployments can share one Redis.
    pub key_prefix: String,
    /// This replica's name in consumer groups; stable across restarts so that a restarted
    /// replica drains its own pending entries first.
    pub consumer_name: String,
    /// How long shutdown waits for in-flight work before releasing it to other replicas.
    pub shutdown_deadline: Duration,
    /// How long job records and their payloads are kept (`MILLRACE_JOB_RETENTION_SECS`).
    pub job_retention: Duration,
    /// How long a failed job's payloads (document, batches, stage results) are kept for a
    /// dead-letter retry (`MILLRACE_FAILED_PAYLOAD_RETENTION_SECS`; at most the job retention).
    /// Cancelled jobs' payloads go at once.
    pub failed_payload_retention: Duration,
    /// What one replica's servers take on at once (`crate::bounds`).
    pub limits: ServerLimits,
}

/// The bounds every HTTP and gRPC server applies, so that a flood or a slow client costs a
/// replica a bounded amount of memory and time instead of an unbounded queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Time until the response's headers (`MILLRACE_REQUEST_TIMEOUT_MS`): reading the body and
    /// the handler's work, not the streaming of a response body (SSE, `WatchJob`).
    pub request_timeout: Duration,
    /// HTTP requests in flight at once on this replica (`MILLRACE_MAX_CONCURRENT_REQUESTS`);
    /// one more is answered 503 at once rather than queued.
    pub max_concurrent_requests: usize,
    /// gRPC calls in flight at once on one connection (`MILLRACE_GRPC_CONCURRENCY_PER_CONNECTION`);
    /// one more is refused with RESOURCE_EXHAUSTED.
    pub grpc_concurrency_per_connection: usize,
    /// The largest HTTP request body of a route that sets no limit of its own
    /// (`MILLRACE_MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
}

impl ServerLimits {
    /// 30 s covers every call but the gateway's (whose callers may wait for quota; it raises its
    /// own default); 1024 requests in flight is far above what one replica serves at its
    /// benchmarked rates, so only a flood meets it; 4 MiB holds the largest embeddings request
    /// OpenAI accepts (300,000 tokens, under 3 MiB even as JSON arrays of token ids).
    pub const DEFAULT: Self = Self {
        request_timeout: Duration::from_secs(30),
        max_concurrent_requests: 1024,
        grpc_concurrency_per_connection: 256,
        max_body_bytes: 4 * 1024 * 1024,
    };

    pub fn load(settings: &Settings) -> Result<Self, ConfigError> {
        let default = Self::DEFAULT;
        Ok(Self {
            request_timeout: Duration::from_millis(
                settings.positive("REQUEST_TIMEOUT_MS", default.request_timeout.as_millis() as u64)?,
            ),
            max_concurrent_requests: settings.positive("MAX_CONCURRENT_REQUESTS", default.max_concurrent_requests)?,
            grpc_concurrency_per_connection: settings
                .positive("GRPC_CONCURRENCY_PER_CONNECTION", default.grpc_concurrency_per_connection)?,
            max_body_bytes: settings.positive("MAX_BODY_BYTES", default.max_body_bytes)?,
        })
    }
}

impl ServiceConfig {
    pub fn load(settings: &Settings, service: &str, http_port: u16, grpc_port: u16) -> Result<Self, ConfigError> {
        let default_consumer = format!(
            "{service}-{}",
            std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "local".to_owned())
        );
        Ok(Self {
            http_addr: settings.get_or("HTTP_ADDR", SocketAddr::from(([0, 0, 0, 0], http_port)))?,
            grpc_addr: settings.get_or("GRPC_ADDR", SocketAddr::from(([0, 0, 0, 0], grpc_port)))?,
            metrics_addr: settings.get("METRICS_ADDR")?,
            redis: crate::redis_conn::RedisConfig::load(settings)?,
            grpc_tls: crate::tls::GrpcTls::load(settings)?,
            key_prefix: settings.get_or("KEY_PREFIX", "millrace".to_owned())?,
            consumer_name: settings.get_or("CONSUMER_NAME", default_consumer)?,
            shutdown_deadline: settings.duration_ms("SHUTDOWN_DEADLINE_MS", 20_000)?,
            job_retention: Duration::from_secs(settings.positive("JOB_RETENTION_SECS", 7 * 24 * 3600u64)?),
            failed_payload_retention: Duration::from_secs(
                settings.positive("FAILED_PAYLOAD_RETENTION_SECS", 24 * 3600u64)?,
            ),
            limits: ServerLimits::load(settings)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_value_names_the_variable() {
        let settings = Settings::from_pairs([("MILLRACE_HTTP_ADDR", "not-an-address")]);
        let err = ServiceConfig::load(&settings, "x", 1, 2).unwrap_err();
        assert_eq!(err.variable, "MILLRACE_HTTP_ADDR");
        assert!(err.to_string().starts_with("MILLRACE_HTTP_ADDR: invalid value"));
    }

    #[test]
    fn server_limits_have_defaults_and_name_a_bad_value() {
        let config = ServiceConfig::load(&Settings::default(), "x", 1, 2).unwrap();
        assert_eq!(config.limits, ServerLimits::DEFAULT);
        let settings = Settings::from_pairs([("MILLRACE_REQUEST_TIMEOUT_MS", "1500"), ("MAX_BODY_BYTES", "1024")]);
        let limits = ServiceConfig::load(&settings, "x", 1, 2).unwrap().limits;
        assert_eq!((limits.request_timeout, limits.max_body_bytes), (Duration::from_millis(1500), 1024));
        for name in [
            "MILLRACE_REQUEST_TIMEOUT_MS",
            "MILLRACE_MAX_CONCURRENT_REQUESTS",
            "MILLRACE_GRPC_CONCURRENCY_PER_CONNECTION",
            "MILLRACE_MAX_BODY_BYTES",
        ] {
            for bad in ["0", "lots"] {
                let err = ServiceConfig::load(&Settings::from_pairs([(name, bad)]), "x", 1, 2).unwrap_err();
                assert_eq!(err.variable, name, "{bad}");
            }
        }
    }

    #[test]
    fn toml_tables_flatten_to_variable_names() {
        let mut settings = Settings::default();
        settings.merge_toml("redis_url = 'redis://h:1'\n[llm]\nbase_url = 'http://u'\nrpm = 60\n").unwrap();
        assert_eq!(settings.raw("REDIS_URL"), Some("redis://h:1"));
        assert_eq!(settings.raw("LLM_BASE_URL"), Some("http://u"));
        assert_eq!(settings.get::<u32>("LLM_RPM").unwrap(), Some(60));
    }

    #[test]
    fn environment_overrides_file() {
        let mut settings = Settings::default();
        settings.merge_toml("max_deliveries = 3").unwrap();
        settings.merge_pairs([("MILLRACE_MAX_DELIVERIES", "7")]);
        assert_eq!(settings.get::<u32>("MAX_DELIVERIES").unwrap(), Some(7));
    }

    #[test]
    fn zero_is_rejected_where_positive_is_required() {
        let settings = Settings::from_pairs([("CONCURRENCY", "0")]);
        assert_eq!(settings.positive::<usize>("CONCURRENCY", 4).unwrap_err().variable, "MILLRACE_CONCURRENCY");
    }

    #[test]
    fn the_command_line_takes_only_check_config_or_describe() {
        let args = |list: &[&str]| list.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>().into_iter();
        assert_eq!(Command::from_args(args(&[])), Ok(Command::Run));
        assert_eq!(Command::from_args(args(&["--check-config"])), Ok(Command::CheckConfig));
        assert_eq!(Command::from_args(args(&["--describe"])), Ok(Command::Describe));
        let err = Command::from_args(args(&["--port", "8060"])).unwrap_err();
        assert!(err.contains("unexpected argument \"--port\"") && err.contains("MILLRACE_*"), "{err}");
        assert!(Command::from_args(args(&["--check-config", "extra"])).is_err());
    }

    #[test]
    fn settings_record_what_they_are_asked_for() {
        let settings = Settings::from_pairs([("MILLRACE_KEY_PREFIX", "p")]);
        ServiceConfig::load(&settings, "x", 1, 2).unwrap();
        settings.grpc_url("STORAGE_URL", "http://127.0.0.1:9064").unwrap();
        let reads = settings.reads();
        let deadline = &reads["MILLRACE_SHUTDOWN_DEADLINE_MS"];
        assert_eq!((deadline.default.as_deref(), deadline.required, deadline.peer), (Some("20000"), false, false));
        assert_eq!(reads["MILLRACE_KEY_PREFIX"].default.as_deref(), Some("millrace"));
        assert!(reads["MILLRACE_STORAGE_URL"].peer);
        assert!(settings.clone().reads().contains_key("MILLRACE_REDIS_URL"));
    }

    #[test]
    fn a_missing_required_value_takes_its_example_only_when_describing() {
        let settings = Settings::default();
        let err = settings.require::<String>("DATABASE_URL", "postgres://h/db").unwrap_err();
        assert_eq!(err.to_string(), "MILLRACE_DATABASE_URL: is required (e.g. postgres://h/db)");
        let describing = Settings::default().for_describe();
        assert_eq!(describing.require::<String>("DATABASE_URL", "postgres://h/db").unwrap(), "postgres://h/db");
        let read = &describing.reads()["MILLRACE_DATABASE_URL"];
        assert!(read.required && read.example.as_deref() == Some("postgres://h/db"));
        let set = Settings::from_pairs([("DATABASE_URL", "postgres://set/db")]).for_describe();
        assert_eq!(set.require::<String>("DATABASE_URL", "postgres://h/db").unwrap(), "postgres://set/db");
    }
}
