//! Redis connections. Ordinary commands go through a pool; every blocking stream read gets its
//! own connection without a response timeout, because redis-rs cuts any reply after 500 ms by
//! default (which would abort `XREADGROUP BLOCK`) and a blocking read stalls a shared connection.
//! Hot paths that cannot afford the pool's check of each connection it hands out (a PING round
//! trip per checkout) share one multiplexed connection that reconnects by itself ([`shared`]).
//!
//! All three are made from one [`client`], so a `rediss://` URL and its TLS files
//! ([`RedisConfig`]) apply to every connection alike.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, ClientTlsConfig, TlsCertificates};

use crate::tls::{CertFile, Identity, install_default_provider};
use crate::{ConfigError, Settings};

const URL: &str = "REDIS_URL";
const CA_FILE: &str = "REDIS_CA_FILE";
const CLIENT_CERT_FILE: &str = "REDIS_CLIENT_CERT_FILE";
const CLIENT_KEY_FILE: &str = "REDIS_CLIENT_KEY_FILE";

/// Where Redis is and how to trust it: `MILLRACE_REDIS_URL` (`redis://`, `rediss://` for TLS,
/// or `unix://`) and, for `rediss://`, `MILLRACE_REDIS_CA_FILE` (the CA that signs the server's
/// certificate; the public web roots without it) and `MILLRACE_REDIS_CLIENT_CERT_FILE` with
/// `MILLRACE_REDIS_CLIENT_KEY_FILE` (for a server with `tls-auth-clients yes`).
///
/// A plain URL converts into one (`&str`, `&String`), so tests pass their server's URL as is.
#[derive(Clone)]
pub struct RedisConfig {
    pub url: String,
    ca: Option<CertFile>,
    identity: Option<Identity>,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_password(&self.url))
            .field("ca", &self.ca)
            .field("identity", &self.identity)
            .finish()
    }
}

impl RedisConfig {
    /// Reads the URL (default `redis://127.0.0.1:6379`) and the TLS files; the files need a
    /// `rediss://` URL.
    pub fn load(settings: &Settings) -> Result<Self, ConfigError> {
        let url: String = settings.get_or(URL, "redis://127.0.0.1:6379".to_owned())?;
        if !url.starts_with("redis://") && !url.starts_with("rediss://") && !url.starts_with("unix://") {
            return Err(ConfigError::new(URL, format!("{:?} is not a redis:// URL", redact_password(&url))));
        }
        let ca = CertFile::load(settings, CA_FILE)?;
        let identity = Identity::load(settings, CLIENT_CERT_FILE, CLIENT_KEY_FILE)?;
        let tls_variable = match (&ca, &identity) {
            (Some(_), _) => Some(CA_FILE),
            (None, Some(_)) => Some(CLIENT_CERT_FILE),
            (None, None) => None,
        };
        if let Some(variable) = tls_variable.filter(|_| !url.starts_with("rediss://")) {
            return Err(ConfigError::new(variable, "is used only with a rediss:// MILLRACE_REDIS_URL"));
        }
        let config = Self { url, ca, identity };
        // Parses the URL and the TLS files the way every connection will.
        config.client().map_err(|err| ConfigError::new(URL, err.to_string()))?;
        Ok(config)
    }

    /// A URL with TLS files (tests, tools): the CA file, and a client certificate and key.
    pub fn with_tls(url: &str, ca: Option<&Path>, client: Option<(&Path, &Path)>) -> Result<Self, String> {
        let ca = ca.map(CertFile::read).transpose()?;
        let identity = match client {
            Some((cert, key)) => {
                let settings = Settings::from_pairs([
                    (CLIENT_CERT_FILE, cert.to_string_lossy().into_owned()),
                    (CLIENT_KEY_FILE, key.to_string_lossy().into_owned()),
                ]);
                Identity::load(&settings, CLIENT_CERT_FILE, CLIENT_KEY_FILE).map_err(|err| err.to_string())?
            }
            None => None,
        };
        Ok(Self { url: url.to_owned(), ca, identity })
    }

    /// The client every connection is made from.
    pub fn client(&self) -> redis::RedisResult<Client> {
        if !self.url.starts_with("rediss://") || (self.ca.is_none() && self.identity.is_none()) {
            if self.url.starts_with("rediss://") {
                install_default_provider();
            }
            return Client::open(self.url.as_str());
        }
        install_default_provider();
        let certificates = TlsCertificates {
            client_tls: self.identity.as_ref().map(|identity| ClientTlsConfig {
                client_cert: identity.cert().pem().to_vec(),
                client_key: identity.key_pem().to_vec(),
            }),
            root_cert: self.ca.as_ref().map(|ca| ca.pem().to_vec()),
        };
        Client::build_with_tls(self.url.as_str(), certificates)
    }
}

impl From<&str> for RedisConfig {
    fn from(url: &str) -> Self {
        Self { url: url.to_owned(), ca: None, identity: None }
    }
}

impl From<&String> for RedisConfig {
    fn from(url: &String) -> Self {
        Self::from(url.as_str())
    }
}

impl From<&RedisConfig> for RedisConfig {
    fn from(config: &RedisConfig) -> Self {
        config.clone()
    }
}

/// The client of `redis` (a [`RedisConfig`] or a plain URL), for [`blocking_connection`]s.
pub fn client(redis: impl Into<RedisConfig>) -> redis::RedisResult<Client> {
    redis.into().client()
}

/// One multiplexed connection for any number of concurrent callers (clone it per call): no
/// round trip before each command, reconnects on its own after Redis comes back. Connects at
/// first use, so a service can start before Redis does.
pub fn shared(redis: impl Into<RedisConfig>) -> Result<ConnectionManager, String> {
    let client = redis.into().client().map_err(|err| err.to_string())?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(1);
    ConnectionManager::new_lazy_with_config(client, config).map_err(|err| err.to_string())
}

/// A pool of at most `max_size` connections (each checked with a PING when handed out).
pub fn pool(redis: impl Into<RedisConfig>, max_size: usize) -> Result<deadpool_redis::Pool, String> {
    let client = redis.into().client().map_err(|err| err.to_string())?;
    // The client's connection info carries its TLS parameters into every pooled connection.
    let manager = deadpool_redis::Manager::new(client.get_connection_info().clone()).map_err(|err| err.to_string())?;
    deadpool_redis::Pool::builder(manager)
        .max_size(max_size)
        .runtime(deadpool_redis::Runtime::Tokio1)
        .build()
        .map_err(|err| err.to_string())
}

/// A dedicated connection for blocking commands.
pub async fn blocking_connection(client: &Client) -> redis::RedisResult<MultiplexedConnection> {
    let config =
        AsyncConnectionConfig::new().set_connection_timeout(Some(Duration::from_secs(5))).set_response_timeout(None);
    client.get_multiplexed_async_connection_with_config(&config).await
}

/// Readiness probe: one PING through the pool.
pub async fn ping(pool: &deadpool_redis::Pool) -> Result<(), String> {
    let mut conn = pool.get().await.map_err(|err| format!("redis: {err}"))?;
    redis::cmd("PING").query_async::<String>(&mut conn).await.map(|_| ()).map_err(|err| format!("redis: {err}"))
}

/// The URL with its password (if any) replaced, for errors and logs.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((userinfo, host)) = rest.split_once('@') else { return url.to_owned() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None if !userinfo.is_empty() && scheme.starts_with("redis") => format!("{scheme}://***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_print() {
        assert_eq!(redact_password("redis://:s3cret@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(redact_password("rediss://user:s3cret@h:6379"), "rediss://user:***@h:6379");
        assert_eq!(redact_password("redis://h:6379"), "redis://h:6379");
        let config = RedisConfig::from("redis://:s3cret@h:6379");
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn tls_files_need_a_rediss_url_and_a_bad_url_names_the_variable() {
        let err = RedisConfig::load(&Settings::from_pairs([("REDIS_URL", "http://h")])).unwrap_err();
        assert_eq!(err.variable, "MILLRACE_REDIS_URL");
        let settings = Settings::from_pairs([("REDIS_URL", "redis://h"), ("REDIS_CA_FILE", "/nonexistent/ca.pem")]);
        let err = RedisConfig::load(&settings).unwrap_err();
        assert_eq!(err.variable, "MILLRACE_REDIS_CA_FILE");
        let settings = Settings::from_pairs([("REDIS_URL", "rediss://h"), ("REDIS_CLIENT_CERT_FILE", "/x/cert.pem")]);
        let err = RedisConfig::load(&settings).unwrap_err();
        assert_eq!(err.variable, "MILLRACE_REDIS_CLIENT_KEY_FILE");
        assert!(RedisConfig::load(&Settings::from_pairs([("REDIS_URL", "rediss://h:6380")])).is_ok());
    }
}
