//! The `webhook` object of `POST /v1/runs` and its checks.

use millrace_common::ApiError;
use millrace_fetch::{FetchError, UrlGuard};
use serde::{Deserialize, Serialize};

/// Longest accepted webhook URL.
const MAX_URL_CHARS: usize = 2048;
/// Longest accepted secret; it is stored as given and used as the HMAC key.
const MAX_SECRET_CHARS: usize = 256;

/// What happened, as `X-Millrace-Event` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WebhookEvent {
    #[serde(rename = "run.completed")]
    RunCompleted,
    #[serde(rename = "job.completed")]
    JobCompleted,
    #[serde(rename = "job.failed")]
    JobFailed,
}

impl WebhookEvent {
    pub const ALL: [Self; 3] = [Self::RunCompleted, Self::JobCompleted, Self::JobFailed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RunCompleted => "run.completed",
            Self::JobCompleted => "job.completed",
            Self::JobFailed => "job.failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|event| event.as_str() == text)
    }
}

impl std::fmt::Display for WebhookEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn default_events() -> Vec<WebhookEvent> {
    vec![WebhookEvent::RunCompleted]
}

/// Where and how a run's events are delivered.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    pub url: String,
    /// The HMAC key of `X-Millrace-Signature`; never shown back.
    pub secret: String,
    /// Which events are sent; `run.completed` alone unless given.
    #[serde(default = "default_events")]
    pub events: Vec<WebhookEvent>,
}

impl std::fmt::Debug for WebhookSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSpec")
            .field("url", &millrace_fetch::loggable(&self.url))
            .field("secret", &"<hidden>")
            .field("events", &self.events)
            .finish()
    }
}

impl WebhookSpec {
    pub fn wants(&self, event: WebhookEvent) -> bool {
        self.events.contains(&event)
    }
}

/// 422 when the URL is malformed or refused by the address rules (checked as a fetched
/// document's URL is: as written and as its name resolves now; delivery checks again at connect
/// time), or the secret is empty, or no event is asked for.
pub async fn check_spec(spec: &WebhookSpec, urls: &UrlGuard) -> Result<(), ApiError> {
    if spec.url.chars().count() > MAX_URL_CHARS {
        return Err(ApiError::invalid(format!("`webhook.url` is longer than {MAX_URL_CHARS} characters")));
    }
    if spec.secret.trim().is_empty() {
        return Err(ApiError::invalid("`webhook.secret` must not be empty: it keys the signature receivers check"));
    }
    if spec.secret.chars().count() > MAX_SECRET_CHARS {
        return Err(ApiError::invalid(format!("`webhook.secret` is longer than {MAX_SECRET_CHARS} characters")));
    }
    if spec.events.is_empty() {
        return Err(ApiError::invalid(
            "`webhook.events` is empty: name at least one of run.completed, job.completed, job.failed",
        ));
    }
    urls.check(&spec.url).await.map_err(|err| {
        let reason = match err {
            FetchError::Refused { reason } | FetchError::InvalidUrl { reason } => reason,
            other => other.to_string(),
        };
        metrics::counter!(crate::metrics::URLS_REFUSED).increment(1);
        ApiError::invalid(format!("`webhook.url` is refused: {reason}"))
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use millrace_common::ErrorCode;
    use millrace_fetch::{AddressPolicy, StaticResolver};

    use super::*;

    fn guard() -> UrlGuard {
        UrlGuard::new(
            AddressPolicy::new(false),
            Arc::new(
                StaticResolver::new()
                    .with("hooks.example.com", ["93.184.216.34".parse().unwrap()])
                    .with("inside.example.com", ["10.1.2.3".parse().unwrap()]),
            ),
        )
    }

    fn spec(url: &str, secret: &str) -> WebhookSpec {
        WebhookSpec { url: url.into(), secret: secret.into(), events: default_events() }
    }

    #[test]
    fn events_default_to_run_completed_and_unknown_fields_are_refused() {
        let spec: WebhookSpec = serde_json::from_str(r#"{"url": "https://h/x", "secret": "s"}"#).unwrap();
        assert_eq!(spec.events, [WebhookEvent::RunCompleted]);
        let spec: WebhookSpec =
            serde_json::from_str(r#"{"url": "https://h/x", "secret": "s", "events": ["job.failed", "job.completed"]}"#)
                .unwrap();
        assert_eq!(spec.events, [WebhookEvent::JobFailed, WebhookEvent::JobCompleted]);
        assert!(serde_json::from_str::<WebhookSpec>(r#"{"url": "u", "secret": "s", "headers": {}}"#).is_err());
        assert!(serde_json::from_str::<WebhookSpec>(r#"{"url": "u", "secret": "s", "events": ["run.done"]}"#).is_err());
        assert!(!format!("{spec:?}").contains("\"s\""), "the secret is not printed");
    }

    #[tokio::test]
    async fn refused_urls_empty_secrets_and_no_events_are_422() {
        let guard = guard();
        check_spec(&spec("https://hooks.example.com/millrace", "s3cret"), &guard).await.unwrap();
        for (bad, says) in [
            (spec("https://inside.example.com/h", "s"), "10.1.2.3, a private address"),
            (spec("http://127.0.0.1:9/h", "s"), "loopback"),
            (spec("http://169.254.169.254/latest", "s"), "metadata"),
            (spec("ftp://hooks.example.com/h", "s"), "refused"),
            (spec("not a url", "s"), "refused"),
            (spec("https://hooks.example.com/h", " "), "secret"),
            (WebhookSpec { events: vec![], ..spec("https://hooks.example.com/h", "s") }, "events"),
        ] {
            let err = check_spec(&bad, &guard).await.unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidArgument, "{bad:?}");
            assert!(err.message.contains(says), "{bad:?}: {}", err.message);
        }
    }
}
