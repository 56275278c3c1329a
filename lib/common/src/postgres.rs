//! PostgreSQL connections, made the same way by every service that keeps data there (storage's
//! chunks and migrations, the key store of ingestion and the llm-gateway), over TLS when the
//! URL's `sslmode` asks for it. A pool connects lazily: building it opens no connection.
//!
//! `sslmode` follows libpq: `disable` never encrypts; `prefer` (the default) encrypts when the
//! server can; `require` insists on encryption without checking the server's certificate;
//! `verify-ca` also checks it is signed by `MILLRACE_DATABASE_CA_FILE` (else by a public root);
//! `verify-full` also checks that it names the host of the URL. tokio-postgres knows only the
//! first three, so the two `verify-*` modes are taken out of the URL here (it sees `require`)
//! and become this connector's certificate check.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rustls::ClientConfig;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::tls::{CertFile, Identity, NoServerNameVerification, NoServerVerification, provider, root_store};
use crate::{ConfigError, Settings};

/// How a connection is protected (the URL's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        })
    }
}

/// The TLS files of the database connections: `MILLRACE_DATABASE_CA_FILE` (the CA that signs the
/// server's certificate, for `verify-ca`/`verify-full`) and `MILLRACE_DATABASE_CLIENT_CERT_FILE`
/// with `MILLRACE_DATABASE_CLIENT_KEY_FILE` (for a server that asks for client certificates).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatabaseTls {
    ca: Option<CertFile>,
    identity: Option<Identity>,
}

impl DatabaseTls {
    /// Reads and checks the files (none are opened when describing).
    pub fn load(settings: &Settings) -> Result<Self, ConfigError> {
        Ok(Self {
            ca: CertFile::load(settings, "DATABASE_CA_FILE")?,
            identity: Identity::load(settings, "DATABASE_CLIENT_CERT_FILE", "DATABASE_CLIENT_KEY_FILE")?,
        })
    }

    /// Settings from their parts (tests, tools).
    pub fn new(ca: Option<CertFile>, identity: Option<Identity>) -> Self {
        Self { ca, identity }
    }
}

/// Where a database is and how to reach it: the parsed URL and its TLS.
#[derive(Clone)]
pub struct Database {
    config: tokio_postgres::Config,
    mode: SslMode,
    tls: MakeRustlsConnect,
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // tokio-postgres' Config redacts the password.
        f.debug_struct("Database").field("config", &self.config).field("sslmode", &self.mode).finish()
    }
}

impl Database {
    /// Parses `url` (a `postgres://` URL or `key=value` pairs); `variable` names the setting in
    /// errors.
    pub fn new(variable: &str, url: &str, tls: &DatabaseTls) -> Result<Self, ConfigError> {
        let (url, verify) = take_verify_mode(url);
        let config: tokio_postgres::Config =
            url.parse().map_err(|err| ConfigError::new(variable, format!("not a PostgreSQL URL: {err}")))?;
        let mode = verify.unwrap_or(match config.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => SslMode::Disable,
            tokio_postgres::config::SslMode::Require => SslMode::Require,
            _ => SslMode::Prefer,
        });
        let client = client_config(mode, tls).map_err(|message| ConfigError::new(variable, message))?;
        Ok(Self { config, mode, tls: MakeRustlsConnect::new(client) })
    }

    pub fn ssl_mode(&self) -> SslMode {
        self.mode
    }

    /// One connection of its own (not pooled), its connection task spawned: await the handle
    /// after dropping the client to know the session has ended.
    pub async fn connect(
        &self,
    ) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error> {
        let (client, connection) = self.config.connect(self.tls.clone()).await?;
        let task = tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "PostgreSQL connection ended with an error");
            }
        });
        Ok((client, task))
    }

    /// A pool of at most `max_size` connections; `timeout` bounds the wait for a pooled
    /// connection and the connect of a new one.
    pub fn pool(&self, max_size: usize, timeout: Duration) -> Result<Pool, deadpool_postgres::BuildError> {
        let manager = Manager::from_config(
            self.config.clone(),
            self.tls.clone(),
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        Pool::builder(manager)
            .max_size(max_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
    }
}

/// A pool of at most `max_size` connections to `url` with `tls`; `variable` names the setting
/// in errors. `timeout` bounds the wait for a pooled connection and the connect of a new one.
pub fn pool(
    variable: &str,
    url: &str,
    tls: &DatabaseTls,
    max_size: usize,
    timeout: Duration,
) -> Result<Pool, ConfigError> {
    Database::new(variable, url, tls)?
        .pool(max_size, timeout)
        .map_err(|err| ConfigError::new(variable, format!("building the connection pool: {err}")))
}

/// The URL without a `verify-ca`/`verify-full` sslmode (replaced by `require`, which
/// tokio-postgres knows), and that mode if the last sslmode was one.
fn take_verify_mode(url: &str) -> (String, Option<SslMode>) {
    let (head, params, separator) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            Some((head, query)) => (format!("{head}?"), query, "&"),
            None => return (url.to_owned(), None),
        }
    } else {
        (String::new(), url, " ")
    };
    let mut mode = None;
    let params: Vec<&str> = params
        .split(separator)
        .map(|param| match param.strip_prefix("sslmode=") {
            Some("verify-ca") => {
                mode = Some(SslMode::VerifyCa);
                "sslmode=require"
            }
            Some("verify-full") => {
                mode = Some(SslMode::VerifyFull);
                "sslmode=require"
            }
            Some(_) => {
                mode = None;
                param
            }
            None => param,
        })
        .collect();
    (head + &params.join(separator), mode)
}

/// The rustls client for `mode`: how much of the server's certificate is checked, and the
/// client certificate if there is one.
fn client_config(mode: SslMode, tls: &DatabaseTls) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("TLS: {err}"))?;
    let builder = match mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(NoServerVerification::new(provider())))
        }
        SslMode::VerifyCa => builder.dangerous().with_custom_certificate_verifier(Arc::new(
            NoServerNameVerification::new(root_store(tls.ca.as_ref())?, provider())?,
        )),
        SslMode::VerifyFull => builder.with_root_certificates(root_store(tls.ca.as_ref())?),
    };
    match &tls.identity {
        Some(identity) => builder
            .with_client_auth_cert(identity.cert().certs().to_vec(), identity.key()?)
            .map_err(|err| format!("client certificate: {err}")),
        None => Ok(builder.with_no_client_auth()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_modes_are_taken_out_of_urls_and_key_value_strings() {
        let cases = [
            ("postgres://u@h/db", "postgres://u@h/db", None),
            ("postgres://u@h/db?sslmode=verify-full", "postgres://u@h/db?sslmode=require", Some(SslMode::VerifyFull)),
            (
                "postgresql://u@h/db?connect_timeout=2&sslmode=verify-ca",
                "postgresql://u@h/db?connect_timeout=2&sslmode=require",
                Some(SslMode::VerifyCa),
            ),
            (
                "postgres://u@h/db?sslmode=verify-ca&sslmode=disable",
                "postgres://u@h/db?sslmode=require&sslmode=disable",
                None,
            ),
            ("host=h user=u sslmode=verify-full", "host=h user=u sslmode=require", Some(SslMode::VerifyFull)),
        ];
        for (url, stripped, mode) in cases {
            assert_eq!(take_verify_mode(url), (stripped.to_owned(), mode), "{url}");
        }
    }

    #[test]
    fn every_sslmode_parses_and_a_bad_one_names_the_variable() {
        let tls = DatabaseTls::default();
        for (query, mode) in [
            ("", SslMode::Prefer),
            ("?sslmode=disable", SslMode::Disable),
            ("?sslmode=prefer", SslMode::Prefer),
            ("?sslmode=require", SslMode::Require),
            ("?sslmode=verify-ca", SslMode::VerifyCa),
            ("?sslmode=verify-full", SslMode::VerifyFull),
        ] {
            let database = Database::new("DATABASE_URL", &format!("postgres://u@h/db{query}"), &tls).unwrap();
            assert_eq!(database.ssl_mode(), mode, "{query}");
        }
        let err = Database::new("DATABASE_URL", "postgres://u@h/db?sslmode=sometimes", &tls).unwrap_err();
        assert_eq!(err.variable, "MILLRACE_DATABASE_URL");
    }

    #[test]
    fn a_database_prints_no_password() {
        let database = Database::new("DATABASE_URL", "postgres://u:hunter2@h/db", &DatabaseTls::default()).unwrap();
        assert!(!format!("{database:?}").contains("hunter2"));
    }
}
