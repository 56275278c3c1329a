//! Channels to other millrace services: connected lazily, so a service starts before the
//! ones it calls, and checked through their `grpc.health.v1` endpoint for readiness.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::ConfigError;

/// A lazily connected channel to `url`; `variable` names the setting in errors. With
/// `request_timeout`, every call on the channel is cut off after it.
pub fn lazy_channel(variable: &str, url: &str, request_timeout: Option<Duration>) -> Result<Channel, ConfigError> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|err| ConfigError::new(variable, format!("invalid URL {url:?}: {err}")))?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true);
    if let Some(timeout) = request_timeout {
        endpoint = endpoint.timeout(timeout);
    }
    Ok(endpoint.connect_lazy())
}

/// Ready when the service answers SERVING.
pub async fn check_health(channel: Channel) -> Result<(), String> {
    let mut client = HealthClient::new(channel);
    let response = client
        .check(HealthCheckRequest { service: String::new() })
        .await
        .map_err(|status| format!("unreachable: {}", status.message()))?;
    match response.into_inner().status() {
        ServingStatus::Serving => Ok(()),
        other => Err(format!("status {}", other.as_str_name())),
    }
}

/// What a failed call to another millrace service means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The service (or what it depends on) is down or too slow: counts against the caller's
    /// breaker, and the work should wait rather than be retried at once.
    Unavailable,
    /// Worth another try later (a quota, a conflict).
    Retryable,
    /// Trying again cannot help (bad input).
    Fatal,
}

impl Failure {
    pub fn of(status: &tonic::Status) -> Self {
        use tonic::Code;
        match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Internal | Code::Cancelled => {
                Self::Unavailable
            }
            code if crate::ErrorCode::from_grpc(code).is_retryable() => Self::Retryable,
            _ => Self::Fatal,
        }
    }
}
