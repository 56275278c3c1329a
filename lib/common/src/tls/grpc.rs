//! TLS between millrace services over gRPC: each service's identity (its server certificate,
//! and its client certificate when it calls others), the CA that signs millrace services, and
//! whether a server demands a client certificate signed by it (mutual TLS).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, ServerTlsConfig};

use super::{CertFile, Identity};
use crate::{ConfigError, Settings};

/// How long a server waits for a caller to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CERT_FILE: &str = "GRPC_TLS_CERT_FILE";
const KEY_FILE: &str = "GRPC_TLS_KEY_FILE";
const CA_FILE: &str = "GRPC_TLS_CA_FILE";
const CLIENT_AUTH: &str = "GRPC_TLS_CLIENT_AUTH";

/// Whether a gRPC server asks its callers for a certificate (`MILLRACE_GRPC_TLS_CLIENT_AUTH`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// Any caller that completes the handshake (a public service: ingestion, whose callers
    /// authenticate with keys).
    #[default]
    None,
    /// Only callers with a certificate signed by `MILLRACE_GRPC_TLS_CA_FILE`; others are
    /// refused at the handshake (the internal services).
    Require,
}

impl FromStr for ClientAuth {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "none" => Ok(Self::None),
            "require" => Ok(Self::Require),
            other => Err(format!("{other:?} is neither none nor require")),
        }
    }
}

impl fmt::Display for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Require => "require",
        })
    }
}

/// A service's gRPC TLS settings, for its server and for its channels to `https://` peers.
/// Without a certificate the server speaks cleartext (and callers use `http://` URLs).
#[derive(Debug, Clone, Default)]
pub struct GrpcTls {
    identity: Option<Identity>,
    ca: Option<CertFile>,
    client_auth: ClientAuth,
}

impl GrpcTls {
    /// Reads `MILLRACE_GRPC_TLS_{CERT_FILE,KEY_FILE,CA_FILE,CLIENT_AUTH}`. Mutual TLS
    /// (`require`) needs the CA (to check callers with) and a certificate (a server without
    /// one speaks no TLS).
    pub fn load(settings: &Settings) -> Result<Self, ConfigError> {
        let identity = Identity::load(settings, CERT_FILE, KEY_FILE)?;
        let ca = CertFile::load(settings, CA_FILE)?;
        let client_auth = settings.get_or(CLIENT_AUTH, ClientAuth::None)?;
        if client_auth == ClientAuth::Require && !settings.describing() {
            if ca.is_none() {
                return Err(ConfigError::new(CLIENT_AUTH, format!("require needs MILLRACE_{CA_FILE}")));
            }
            if identity.is_none() {
                return Err(ConfigError::new(
                    CLIENT_AUTH,
                    format!("require needs the server's MILLRACE_{CERT_FILE} and MILLRACE_{KEY_FILE}"),
                ));
            }
        }
        Ok(Self { identity, ca, client_auth })
    }

    /// Settings from their parts (tests, tools).
    pub fn new(identity: Option<Identity>, ca: Option<CertFile>, client_auth: ClientAuth) -> Self {
        Self { identity, ca, client_auth }
    }

    pub fn client_auth(&self) -> ClientAuth {
        self.client_auth
    }

    /// Whether the server speaks TLS (it has a certificate).
    pub fn serves_tls(&self) -> bool {
        self.identity.is_some()
    }

    /// The server's TLS, if it has a certificate; with `require`, callers must present a
    /// certificate signed by the CA.
    pub fn server(&self) -> Option<ServerTlsConfig> {
        let identity = self.identity.as_ref()?;
        // A caller that opens a connection and never finishes the handshake is dropped.
        let config = ServerTlsConfig::new().identity(tonic_identity(identity)).timeout(HANDSHAKE_TIMEOUT);
        Some(match (&self.client_auth, &self.ca) {
            (ClientAuth::Require, Some(ca)) => {
                config.client_ca_root(Certificate::from_pem(ca.pem())).client_auth_optional(false)
            }
            _ => config,
        })
    }

    /// The TLS of a channel to an `https://` peer: the peer's certificate is checked against
    /// the CA (else the public web roots), and this service's certificate goes along when it
    /// has one (so a server with `require` lets it in).
    pub fn client(&self) -> ClientTlsConfig {
        let config = match &self.ca {
            Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.pem())),
            None => ClientTlsConfig::new().with_webpki_roots(),
        };
        match &self.identity {
            Some(identity) => config.identity(tonic_identity(identity)),
            None => config,
        }
    }
}

fn tonic_identity(identity: &Identity) -> tonic::transport::Identity {
    tonic::transport::Identity::from_pem(identity.cert().pem(), identity.key_pem())
}
