//! Channels to other millrace services: connected lazily, so a service starts before the
//! ones it calls, and checked through their `grpc.health.v1` endpoint for readiness. An
//! `https://` peer is reached over TLS ([`GrpcTls::client`]: its certificate checked against
//! the services' CA, and this service's certificate presented for mutual TLS).

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::ConfigError;
use crate::tls::GrpcTls;

/// A lazily connected channel to `url`, over TLS if it is `https://`; `variable` names the
/// setting in errors. With `request_timeout`, every call on the channel is cut off after it.
pub fn lazy_channel(
    variable: &str,
    url: &str,
    request_timeout: Option<Duration>,
    tls: &GrpcTls,
) -> Result<Channel, ConfigError> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|err| ConfigError::new(variable, format!("invalid URL {url:?}: {err}")))?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true);
    if let Some(timeout) = request_timeout {
        endpoint = endpoint.timeout(timeout);
    }
    if url.starts_with("https://") {
        endpoint = endpoint
            .tls_config(tls.client())
            .map_err(|err| ConfigError::new(variable, format!("TLS for {url:?}: {err}")))?;
    }
    Ok(endpoint.connect_lazy())
}

/// Ready when the service answers SERVING.
pub async fn check_health(channel: Channel) -> Result<(), String> {
    let mut client = HealthClient::new(channel);
    let response = client
        .check(HealthCheckRequest { service: String::new() })
        .await
        .map_err(|status| format!("unreachable: {}", with_causes(&status)))?;
    match response.into_inner().status() {
        ServingStatus::Serving => Ok(()),
        other => Err(format!("status {}", other.as_str_name())),
    }
}

/// The status' message and the errors under it: a refused TLS handshake says why only there
/// ("transport error: … received fatal alert: CertificateRequired").
fn with_causes(status: &tonic::Status) -> String {
    let mut text = status.message().to_owned();
    let mut cause = std::error::Error::source(status);
    while let Some(err) = cause {
        let message = err.to_string();
        if !text.contains(&message) {
            text = format!("{text}: {message}");
        }
        cause = err.source();
    }
    text
}
