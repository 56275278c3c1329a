//! The runs' side of webhooks: which events a run asked for, and the deliveries handed to the
//! webhook outbox (`crate::webhooks`, which signs, sends and retries them).

use serde_json::Value;

use super::runs::RunRow;
use crate::webhooks::{NewDelivery, Outbox};
pub use crate::webhooks::{WebhookEvent as Event, WebhookSpec as Spec, check_spec};

/// The run's webhook, if it asked for one.
pub fn spec_of(run: &RunRow) -> Option<Spec> {
    run.webhook.clone().and_then(|value| serde_json::from_value(value).ok())
}

/// Where deliveries go: the outbox, when there is a database (else nothing is sent).
#[derive(Clone, Default)]
pub struct Hooks {
    outbox: Option<Outbox>,
}

impl Hooks {
    pub fn new(outbox: Option<Outbox>) -> Self {
        Self { outbox }
    }

    /// Hands one delivery to the outbox (idempotent on `event_id`).
    pub async fn enqueue(
        &self,
        run: &RunRow,
        spec: &Spec,
        event: Event,
        event_id: String,
        body: Value,
    ) -> Result<(), String> {
        let Some(outbox) = &self.outbox else { return Ok(()) };
        let delivery = NewDelivery {
            event_id,
            tenant: run.tenant.clone(),
            run_id: run.run_id.clone(),
            event,
            url: spec.url.clone(),
            secret: spec.secret.clone(),
            body,
        };
        outbox.enqueue(delivery).await.map_err(|err| err.to_string())
    }
}
