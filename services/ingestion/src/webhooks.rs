//! Webhooks: when a run ends (and, if asked, when each of its jobs ends) millrace POSTs a signed
//! JSON body to the run's URL. Deliveries go through a transactional outbox in PostgreSQL
//! ([`Outbox`]), so an event recorded once is delivered even if the replica that recorded it
//! dies; every replica runs the delivery loop ([`deliver`]), and a row is claimed by one replica
//! at a time (`FOR UPDATE SKIP LOCKED` plus a lease), retried with backoff for a day, then
//! marked failed. Targets pass the same address rules as fetched documents.

mod config;
pub mod deliver;
mod outbox;
mod sign;
mod spec;

pub use self::config::WebhookConfig;
pub use self::deliver::Deliverer;
pub use self::outbox::{Attempt, Delivery, DeliveryStatus, LogPage, LogQuery, NewDelivery, Outbox, OutboxError};
pub use self::sign::{SIGNATURE_HEADER, signature};
pub use self::spec::{WebhookEvent, WebhookSpec, check_spec};

/// The header that names the event (`run.completed`, `job.completed`, `job.failed`).
pub const EVENT_HEADER: &str = "X-Millrace-Event";
/// The header that names the delivery (the event id), the same on every attempt, so that a
/// receiver can drop a repeat.
pub const DELIVERY_HEADER: &str = "X-Millrace-Delivery";

use std::time::Duration;

use millrace_common::{ConfigError, Host};
use millrace_fetch::{FetchConfig, Fetcher, UrlGuard};

/// Connections of one replica to the outbox: a claim, a few attempts' records and the log.
const POOL_SIZE: usize = 4;
/// How long a call waits for a connection (or a connect) before the outbox counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

impl Deliverer {
    /// The outbox in the key store's database and its deliverer (targets checked by `urls`, the
    /// submit rules), or None without `MILLRACE_DATABASE_URL`: no webhooks then.
    pub fn from_config(config: &crate::Config, urls: &UrlGuard) -> Result<Option<Self>, ConfigError> {
        let Some(url) = config.auth.database_url.as_deref() else {
            return Ok(None);
        };
        let pool = millrace_common::postgres::pool(
            "DATABASE_URL",
            url,
            &config.auth.database_tls,
            POOL_SIZE,
            CONNECT_TIMEOUT,
        )?;
        let fetch = FetchConfig { timeout: config.webhooks.timeout, ..config.fetch.clone() };
        let fetcher = Fetcher::with_guard(fetch, urls.clone())
            .map_err(|err| ConfigError::new("WEBHOOK_TIMEOUT_MS", format!("cannot build the webhook client: {err}")))?;
        Ok(Some(Self::new(Outbox::new(pool), fetcher, config.webhooks.clone())))
    }

    /// Runs the delivery loop and the backlog gauges on `host` until it stops.
    pub fn start(self, host: Host, metrics_interval: Duration) -> Host {
        let outbox = self.outbox().clone();
        host.with_sampler(move |stop| {
            tokio::spawn(self.run(stop));
        })
        .with_sampler(move |stop| {
            millrace_common::metrics::spawn_sampler(metrics_interval, stop, move || {
                let outbox = outbox.clone();
                async move {
                    if let Ok((pending, oldest)) = outbox.backlog().await {
                        metrics::gauge!(crate::metrics::WEBHOOKS_PENDING).set(pending as f64);
                        metrics::gauge!(crate::metrics::WEBHOOK_OLDEST_PENDING).set(oldest.as_secs_f64());
                    }
                }
            });
        })
    }
}
