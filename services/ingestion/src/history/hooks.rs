//! The runs' side of webhooks: which events a run asked for, and the deliveries handed to the
//! webhook outbox (`crate::webhooks`, which signs, sends and retries them). Kept behind these
//! few functions so that the rest of the runs code does not depend on how delivery works.

use millrace_common::ApiError;
use millrace_fetch::UrlGuard;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::runs::RunRow;

/// A run's `webhook` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub url: String,
    pub secret: String,
    #[serde(default = "Spec::default_events")]
    pub events: Vec<Event>,
}

impl Spec {
    fn default_events() -> Vec<Event> {
        vec![Event::RunCompleted]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    #[serde(rename = "run.completed")]
    RunCompleted,
    #[serde(rename = "job.completed")]
    JobCompleted,
    #[serde(rename = "job.failed")]
    JobFailed,
}

impl Event {
    pub fn name(self) -> &'static str {
        match self {
            Self::RunCompleted => "run.completed",
            Self::JobCompleted => "job.completed",
            Self::JobFailed => "job.failed",
        }
    }
}

/// Checks a run's webhook: a secret, an http(s) URL that the address rules allow (422 else).
pub async fn check_spec(spec: &Spec, urls: &UrlGuard) -> Result<(), ApiError> {
    if spec.secret.is_empty() || spec.secret.len() > 256 {
        return Err(ApiError::invalid("`webhook.secret` must have 1 to 256 characters"));
    }
    if spec.events.is_empty() {
        return Err(ApiError::invalid("`webhook.events` must name at least one event"));
    }
    if !(spec.url.starts_with("http://") || spec.url.starts_with("https://")) || spec.url.len() > 2048 {
        return Err(ApiError::invalid("`webhook.url` must be an http or https URL"));
    }
    urls.check(&spec.url).await.map_err(|err| ApiError::invalid(format!("`webhook.url` is refused: {err}")))?;
    Ok(())
}

/// The run's webhook, if it asked for one.
pub fn spec_of(run: &RunRow) -> Option<Spec> {
    run.webhook.clone().and_then(|value| serde_json::from_value(value).ok())
}

/// Where deliveries go. Until the webhook outbox is wired in, a delivery is only logged.
#[derive(Clone, Default)]
pub struct Hooks {}

impl Hooks {
    /// Hands one delivery to the outbox (idempotent on `event_id`).
    pub async fn enqueue(
        &self,
        run: &RunRow,
        spec: &Spec,
        event: Event,
        event_id: String,
        body: Value,
    ) -> Result<(), String> {
        tracing::info!(
            run_id = %run.run_id,
            tenant = %run.tenant,
            event = event.name(),
            event_id,
            url = %millrace_fetch::loggable(&spec.url),
            bytes = body.to_string().len(),
            "webhook delivery (outbox not wired in yet)"
        );
        Ok(())
    }
}
