//! The TLS material of every connection (Redis, PostgreSQL, gRPC), read once at start: PEM files
//! named by `MILLRACE_*_FILE` settings are opened and checked before a port is bound, so a
//! missing, unreadable or mismatched file stops the service with the variable's name instead of
//! failing at the first connection. A private key's contents never print.
//!
//! Every TLS connection uses rustls with the ring provider (aws-lc-rs needs cmake to build).

mod grpc;
mod verify;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::{ConfigError, Settings};

pub use grpc::{ClientAuth, GrpcTls};
pub(crate) use verify::{NoServerNameVerification, NoServerVerification};

/// The ring provider, shared by every TLS config millrace builds itself.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}

/// Makes ring the process' default provider, for the libraries that build their rustls configs
/// with the default (the redis crate): so they never depend on which providers the dependency
/// graph happens to enable. Idempotent.
pub fn install_default_provider() {
    if CryptoProvider::get_default().is_none() {
        // Fails only if another thread installed one meanwhile: that one stays.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Certificates read from a PEM file (a CA bundle or a certificate chain): public, so printable.
#[derive(Clone)]
pub struct CertFile {
    path: PathBuf,
    pem: Arc<Vec<u8>>,
    certs: Arc<Vec<CertificateDer<'static>>>,
}

impl CertFile {
    /// Reads the file named by `variable` (a path), if set; none when describing (no file is
    /// opened then). The file must hold at least one PEM certificate.
    pub fn load(settings: &Settings, variable: &str) -> Result<Option<Self>, ConfigError> {
        let Some(path) = settings.get::<PathBuf>(variable)? else { return Ok(None) };
        if settings.describing() {
            return Ok(None);
        }
        Self::read(&path).map(Some).map_err(|message| ConfigError::new(variable, message))
    }

    /// Reads and parses a PEM certificate file; the error says what is wrong with it.
    pub fn read(path: &Path) -> Result<Self, String> {
        let pem = std::fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| format!("{} is not a PEM certificate file: {err}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{} holds no PEM certificate", path.display()));
        }
        Ok(Self { path: path.to_path_buf(), pem: Arc::new(pem), certs: Arc::new(certs) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's bytes (PEM).
    pub fn pem(&self) -> &[u8] {
        &self.pem
    }

    pub fn certs(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    /// A trust store holding this file's certificates (as CAs).
    pub fn root_store(&self) -> Result<RootCertStore, String> {
        let mut store = RootCertStore::empty();
        for cert in self.certs.iter() {
            store
                .add(cert.clone())
                .map_err(|err| format!("{}: not a usable CA certificate: {err}", self.path.display()))?;
        }
        Ok(store)
    }
}

/// Two files are the same when they hold the same bytes at the same path.
impl PartialEq for CertFile {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.pem == other.pem
    }
}

impl Eq for CertFile {}

impl fmt::Debug for CertFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertFile").field("path", &self.path).field("certificates", &self.certs.len()).finish()
    }
}

/// A certificate chain and its private key: who this process is to its peers. Its `Debug`
/// shows the paths only.
#[derive(Clone)]
pub struct Identity {
    cert: CertFile,
    key_path: PathBuf,
    key_pem: Arc<Vec<u8>>,
}

impl Identity {
    /// Reads `cert_variable` and `key_variable` (paths to PEM files): both or neither. The key
    /// must parse and belong to the chain's first certificate. None when describing.
    pub fn load(settings: &Settings, cert_variable: &str, key_variable: &str) -> Result<Option<Self>, ConfigError> {
        let cert_path = settings.get::<PathBuf>(cert_variable)?;
        let key_path = settings.get::<PathBuf>(key_variable)?;
        let (cert_path, key_path) = match (cert_path, key_path) {
            (None, None) => return Ok(None),
            (Some(_), None) => {
                return Err(ConfigError::new(key_variable, format!("is required with {}", full(cert_variable))));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(cert_variable, format!("is required with {}", full(key_variable))));
            }
            (Some(cert), Some(key)) => (cert, key),
        };
        if settings.describing() {
            return Ok(None);
        }
        let cert = CertFile::read(&cert_path).map_err(|message| ConfigError::new(cert_variable, message))?;
        let key_pem = std::fs::read(&key_path)
            .map_err(|err| ConfigError::new(key_variable, format!("cannot read {}: {err}", key_path.display())))?;
        let identity = Self { cert, key_path, key_pem: Arc::new(key_pem) };
        let key = identity.key().map_err(|message| ConfigError::new(key_variable, message))?;
        rustls::sign::CertifiedKey::from_der(identity.cert.certs().to_vec(), key, &provider()).map_err(|err| {
            ConfigError::new(
                key_variable,
                format!(
                    "{} does not go with the certificate in {}: {err}",
                    identity.key_path.display(),
                    identity.cert.path().display()
                ),
            )
        })?;
        Ok(Some(identity))
    }

    pub fn cert(&self) -> &CertFile {
        &self.cert
    }

    /// The private key's PEM bytes (a secret: hand it to a TLS library, never to a log).
    pub fn key_pem(&self) -> &[u8] {
        &self.key_pem
    }

    /// The private key, parsed.
    pub fn key(&self) -> Result<PrivateKeyDer<'static>, String> {
        PrivateKeyDer::from_pem_slice(&self.key_pem)
            .map_err(|err| format!("{} is not a PEM private key: {err}", self.key_path.display()))
    }
}

impl PartialEq for Identity {
    fn eq(&self, other: &Self) -> bool {
        self.cert == other.cert && self.key_path == other.key_path && self.key_pem == other.key_pem
    }
}

impl Eq for Identity {}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity").field("cert", &self.cert.path).field("key", &self.key_path).finish()
    }
}

/// The trust store for a server's certificate: the CA file's certificates, else the public
/// web PKI roots (a managed service with a publicly signed certificate).
pub fn root_store(ca: Option<&CertFile>) -> Result<RootCertStore, String> {
    match ca {
        Some(ca) => ca.root_store(),
        None => Ok(RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() }),
    }
}

fn full(variable: &str) -> String {
    ConfigError::new(variable, "").variable
}

#[cfg(test)]
mod tests;
