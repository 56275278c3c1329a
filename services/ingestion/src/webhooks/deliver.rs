//! The delivery loop every replica runs: claim due deliveries, POST each, record the attempt.

use std::time::{Duration, Instant};

use futures::future::join_all;
use millrace_common::{ConfigError, Host};
use millrace_fetch::{FetchConfig, FetchError, Fetcher, UrlGuard};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use tokio_util::sync::CancellationToken;

use super::outbox::{Claimed, Outcome};
use super::{DELIVERY_HEADER, DeliveryStatus, EVENT_HEADER, Outbox, OutboxError, SIGNATURE_HEADER, WebhookConfig};
use crate::metrics;

/// How often each replica deletes the finished deliveries past the retention.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Makes the deliveries of the outbox. Cheap to clone.
#[derive(Clone)]
pub struct Deliverer {
    outbox: Outbox,
    fetcher: Fetcher,
    config: WebhookConfig,
}

impl std::fmt::Debug for Deliverer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliverer").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Deliverer {
    /// `fetcher` carries the address rules and the POST's time limit.
    pub fn new(outbox: Outbox, fetcher: Fetcher, config: WebhookConfig) -> Self {
        Self { outbox, fetcher, config }
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// One pass: claims up to `concurrency` due deliveries and makes one attempt of each, at
    /// once. Returns the number of attempts made.
    pub async fn run_once(&self) -> Result<usize, OutboxError> {
        let claimed = self.outbox.claim(self.config.concurrency, self.config.lease, self.config.retry_for).await?;
        let attempts = claimed.len();
        for result in join_all(claimed.iter().map(|claimed| self.attempt(claimed))).await {
            // One row's failure to record must not stop the others; the row is due again when
            // its lease runs out.
            if let Err(err) = result {
                tracing::warn!(error = %err, "cannot record a webhook attempt");
            }
        }
        Ok(attempts)
    }

    /// Deletes the deliveries that finished more than the retention ago (see [`Outbox::prune`]).
    pub async fn prune(&self) -> Result<u64, OutboxError> {
        let deleted = self.outbox.prune(self.config.retention).await?;
        if deleted > 0 {
            tracing::info!(
                deleted,
                retention_days = self.config.retention.as_secs() / 86_400,
                "pruned finished webhook deliveries"
            );
        }
        Ok(deleted)
    }

    /// Delivers until `stop`, and beside it prunes the finished deliveries past the retention
    /// at start and every [`PRUNE_EVERY`] (a long first prune after an upgrade delays no
    /// delivery).
    pub async fn run(self, stop: CancellationToken) {
        tokio::join!(self.deliver_until(&stop), self.prune_until(&stop));
    }

    /// Deletes the finished deliveries past the retention now and every [`PRUNE_EVERY`], until
    /// `stop`. A failed pass is logged and tried again at the next interval: the log merely
    /// stays longer meanwhile.
    async fn prune_until(&self, stop: &CancellationToken) {
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                result = self.prune() => {
                    if let Err(err) = result {
                        tracing::warn!(error = %err, "cannot prune finished webhook deliveries");
                    }
                }
            }
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                () = tokio::time::sleep(PRUNE_EVERY) => {}
            }
        }
    }

    /// Delivers until `stop`: again at once after a pass that found work, else after the poll
    /// interval. An unreachable database is logged once per outage and retried.
    async fn deliver_until(&self, stop: &CancellationToken) {
        let mut down = false;
        loop {
            let wait = match self.run_once().await {
                Ok(0) => {
                    down = false;
                    self.config.poll
                }
                Ok(_) => {
                    down = false;
                    Duration::ZERO
                }
                Err(err) => {
                    if !down {
                        tracing::warn!(error = %err, "webhook outbox unavailable; deliveries wait");
                    }
                    down = true;
                    self.config.poll.max(Duration::from_secs(1))
                }
            };
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn attempt(&self, claimed: &Claimed) -> Result<(), OutboxError> {
        let started = Instant::now();
        let result = self.fetcher.post(&claimed.url, headers(claimed), claimed.body.clone().into_bytes()).await;
        let outcome = match result {
            Ok(status) if (200..300).contains(&status) => {
                Outcome { http_status: Some(status), error: None, duration: started.elapsed(), permanent: false }
            }
            Ok(status) => Outcome {
                http_status: Some(status),
                error: Some(format!("the receiver answered HTTP {status}")),
                duration: started.elapsed(),
                permanent: false,
            },
            // Every answer but a 2xx is retried (a receiver's 4xx may be a deploy in progress);
            // a refused address or an invalid URL is not, until the rules change.
            Err(err) => Outcome {
                http_status: None,
                error: Some(describe(&err)),
                duration: started.elapsed(),
                permanent: matches!(err, FetchError::Refused { .. } | FetchError::InvalidUrl { .. }),
            },
        };
        let retry_in = self.config.backoff(claimed.attempt);
        let Some(status) = self.outbox.finish(claimed, &outcome, retry_in, self.config.retry_for).await? else {
            tracing::info!(event_id = %claimed.event_id, attempt = claimed.attempt, "webhook attempt superseded");
            return Ok(());
        };
        let url = millrace_fetch::loggable(&claimed.url);
        match status {
            DeliveryStatus::Delivered => {
                ::metrics::counter!(metrics::WEBHOOKS_DELIVERED).increment(1);
                ::metrics::histogram!(metrics::WEBHOOK_DELIVERY_LAG)
                    .record((claimed.age + outcome.duration).as_secs_f64());
                tracing::info!(event_id = %claimed.event_id, event = %claimed.event, url = %url, attempt = claimed.attempt, "webhook delivered");
            }
            DeliveryStatus::Pending => {
                ::metrics::counter!(metrics::WEBHOOKS_RETRIED).increment(1);
                tracing::info!(
                    event_id = %claimed.event_id, event = %claimed.event, url = %url, attempt = claimed.attempt,
                    http_status = outcome.http_status, error = outcome.error.as_deref().unwrap_or(""),
                    retry_in_ms = u64::try_from(retry_in.as_millis()).unwrap_or(u64::MAX),
                    "webhook attempt failed; retrying"
                );
            }
            DeliveryStatus::Failed => {
                ::metrics::counter!(metrics::WEBHOOKS_FAILED).increment(1);
                tracing::warn!(
                    event_id = %claimed.event_id, event = %claimed.event, url = %url, attempts = claimed.attempt,
                    error = outcome.error.as_deref().unwrap_or(""),
                    "webhook not delivered; given up"
                );
            }
        }
        Ok(())
    }
}

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
                        ::metrics::gauge!(metrics::WEBHOOKS_PENDING).set(pending as f64);
                        ::metrics::gauge!(metrics::WEBHOOK_OLDEST_PENDING).set(oldest.as_secs_f64());
                    }
                }
            });
        })
    }
}

fn headers(claimed: &Claimed) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(EVENT_HEADER, HeaderValue::from_static(claimed.event.as_str()));
    // A hex digest and an id we made are always valid header values; a row that somehow holds
    // another id goes without the header rather than not at all.
    if let Ok(value) = HeaderValue::from_str(&super::signature(&claimed.secret, claimed.body.as_bytes())) {
        headers.insert(SIGNATURE_HEADER, value);
    }
    if let Ok(value) = HeaderValue::from_str(&claimed.event_id) {
        headers.insert(DELIVERY_HEADER, value);
    }
    headers
}

fn describe(err: &FetchError) -> String {
    match err {
        FetchError::Refused { reason } => format!("refused: {reason}"),
        other => other.to_string(),
    }
}
