//! The outbox: one row per event to deliver, and one per attempt made. Rows are written by
//! whoever sees the event happen (`enqueue`, idempotent on the event id, so an event seen twice
//! is delivered once) and worked by every replica's delivery loop (`claim`, then `finish`).

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use millrace_common::ApiError;
use serde::Serialize;
use tokio::sync::OnceCell;
use tokio_postgres::Row;

use super::WebhookEvent;

/// The outbox's tables, made once per process under an advisory lock of their own (the key
/// store's is 7305727), for the same reason as the key store's: concurrent `CREATE TABLE IF
/// NOT EXISTS` by two replicas can fail on the catalog.
const SCHEMA: &str = "
SELECT pg_advisory_xact_lock(7305731);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    event_id text PRIMARY KEY,
    -- The log's order and cursor.
    seq bigserial NOT NULL,
    tenant text NOT NULL,
    run_id text NOT NULL,
    event text NOT NULL,
    url text NOT NULL,
    secret text NOT NULL,
    body text NOT NULL,
    status text NOT NULL DEFAULT 'pending',
    attempts integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    last_http_status integer,
    last_error text
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_by_run ON webhook_deliveries (tenant, run_id, seq);
CREATE INDEX IF NOT EXISTS webhook_deliveries_finished ON webhook_deliveries (finished_at) WHERE status <> 'pending';
CREATE TABLE IF NOT EXISTS webhook_attempts (
    id bigserial PRIMARY KEY,
    event_id text NOT NULL REFERENCES webhook_deliveries (event_id) ON DELETE CASCADE,
    attempt integer NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    duration_ms integer NOT NULL,
    http_status integer,
    error text
);
CREATE INDEX IF NOT EXISTS webhook_attempts_by_event ON webhook_attempts (event_id, attempt);
";

/// Finished deliveries one statement of [`Outbox::prune`] deletes at most.
const PRUNE_BATCH: i64 = 1000;

/// Timestamps leave PostgreSQL as RFC 3339 text in UTC, as the key store's do.
fn rfc3339(column: &str) -> String {
    format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
}

/// An event to deliver.
#[derive(Clone, PartialEq)]
pub struct NewDelivery {
    /// Unique per event (say `run.completed:<run id>`, `job.failed:<job id>`): a second
    /// enqueue of the same id changes nothing.
    pub event_id: String,
    pub tenant: String,
    pub run_id: String,
    pub event: WebhookEvent,
    pub url: String,
    pub secret: String,
    pub body: serde_json::Value,
}

impl std::fmt::Debug for NewDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewDelivery")
            .field("event_id", &self.event_id)
            .field("tenant", &self.tenant)
            .field("run_id", &self.run_id)
            .field("event", &self.event)
            .field("url", &millrace_fetch::loggable(&self.url))
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not yet delivered; attempted again at `next_attempt_at`.
    Pending,
    /// A 2xx answer was received.
    Delivered,
    /// No 2xx within the retry window.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Result<Self, OutboxError> {
        match text {
            "pending" => Ok(Self::Pending),
            "delivered" => Ok(Self::Delivered),
            "failed" => Ok(Self::Failed),
            other => Err(OutboxError::Corrupt(format!("delivery status {other:?}"))),
        }
    }
}

/// One attempt of a delivery, as the log shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    pub attempt: u32,
    pub at: String,
    pub duration_ms: u32,
    pub http_status: Option<u16>,
    pub error: Option<String>,
}

/// A delivery as the log shows it: never its secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    pub id: String,
    pub event: WebhookEvent,
    pub url: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub created_at: String,
    pub next_attempt_at: Option<String>,
    pub finished_at: Option<String>,
    pub last_http_status: Option<u16>,
    pub last_error: Option<String>,
    pub attempt_log: Vec<Attempt>,
}

/// Which deliveries of a run the log shows: of one status, after a cursor, a page at a time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogQuery {
    pub status: Option<DeliveryStatus>,
    /// The previous page's `next_cursor`.
    pub after: Option<i64>,
    /// Page size (at least 1).
    pub limit: usize,
}

/// A page of the log; `next` is the cursor of the next page, if there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct LogPage {
    pub deliveries: Vec<Delivery>,
    pub next: Option<i64>,
}

/// A row a replica has claimed: what it needs to make one attempt.
#[derive(Clone)]
pub(crate) struct Claimed {
    pub event_id: String,
    pub event: WebhookEvent,
    pub url: String,
    pub secret: String,
    pub body: String,
    /// This attempt's number (1 for the first): the row's `attempts` after the claim, which
    /// `finish` checks so that a replica whose lease ran out cannot overwrite a newer attempt.
    pub attempt: u32,
    /// How long the event has waited, at the claim.
    pub age: Duration,
    /// Whether the retry window is over: this attempt is the last.
    pub last: bool,
}

/// What one attempt came to.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub duration: Duration,
    /// Whether a retry cannot help (the target's address is refused, the URL is invalid).
    pub permanent: bool,
}

impl Outcome {
    pub fn delivered(&self) -> bool {
        self.error.is_none() && self.http_status.is_some_and(|status| (200..300).contains(&status))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// No connection (PostgreSQL down, or the pool exhausted past its timeout).
    #[error("webhook outbox unavailable: {0}")]
    Unavailable(String),
    #[error("webhook outbox query failed: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("webhook outbox holds a value this version cannot read: {0}")]
    Corrupt(String),
    #[error("webhook body cannot be encoded: {0}")]
    Body(#[from] serde_json::Error),
}

impl From<deadpool_postgres::PoolError> for OutboxError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        Self::Unavailable(err.to_string())
    }
}

impl From<OutboxError> for ApiError {
    fn from(err: OutboxError) -> Self {
        match err {
            OutboxError::Unavailable(_) => ApiError::unavailable(err.to_string()).with_retry_after(1),
            OutboxError::Query(ref query) if query.is_closed() => {
                ApiError::unavailable(err.to_string()).with_retry_after(1)
            }
            _ => ApiError::internal(err.to_string()),
        }
    }
}

/// The outbox in PostgreSQL. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    pool: Pool,
    schema: Arc<OnceCell<()>>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").finish_non_exhaustive()
    }
}

impl Outbox {
    /// An outbox on `pool`; connects nothing yet.
    pub fn new(pool: Pool) -> Self {
        Self { pool, schema: Arc::new(OnceCell::new()) }
    }

    /// A pooled connection, the tables made first if this process has not yet made sure of
    /// them (a failure is not remembered: the next call tries again).
    async fn client(&self) -> Result<deadpool_postgres::Object, OutboxError> {
        let client = self.pool.get().await?;
        self.schema
            .get_or_try_init(|| async {
                client.batch_execute(&format!("BEGIN; {SCHEMA} COMMIT;")).await?;
                tracing::debug!("webhook outbox tables ready");
                Ok::<(), OutboxError>(())
            })
            .await?;
        Ok(client)
    }

    /// Records an event for delivery, due now. Idempotent on `event_id`: the first record wins,
    /// and a repeat is not an error.
    pub async fn enqueue(&self, delivery: NewDelivery) -> Result<(), OutboxError> {
        let body = serde_json::to_string(&delivery.body)?;
        let client = self.client().await?;
        let inserted = client
            .execute(
                "INSERT INTO webhook_deliveries (event_id, tenant, run_id, event, url, secret, body)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (event_id) DO NOTHING",
                &[
                    &delivery.event_id,
                    &delivery.tenant,
                    &delivery.run_id,
                    &delivery.event.as_str(),
                    &delivery.url,
                    &delivery.secret,
                    &body,
                ],
            )
            .await?;
        if inserted == 1 {
            tracing::debug!(event_id = %delivery.event_id, run_id = %delivery.run_id, event = %delivery.event, "webhook queued");
        }
        Ok(())
    }

    /// Claims up to `limit` due deliveries for this replica: each gets its next attempt number
    /// and is leased for `lease` (not due again before), in one statement whose `SKIP LOCKED`
    /// lets replicas claiming at once take different rows.
    pub(crate) async fn claim(
        &self,
        limit: usize,
        lease: Duration,
        retry_for: Duration,
    ) -> Result<Vec<Claimed>, OutboxError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "UPDATE webhook_deliveries d
                 SET attempts = d.attempts + 1, next_attempt_at = now() + $2 * interval '1 millisecond'
                 FROM (SELECT event_id FROM webhook_deliveries
                       WHERE status = 'pending' AND next_attempt_at <= now()
                       ORDER BY next_attempt_at LIMIT $1
                       FOR UPDATE SKIP LOCKED) due
                 WHERE d.event_id = due.event_id
                 RETURNING d.event_id, d.event, d.url, d.secret, d.body, d.attempts,
                           extract(epoch FROM now() - d.created_at)::float8 AS age_secs,
                           now() >= d.created_at + $3 * interval '1 millisecond' AS last",
                &[&(limit as i64), &millis(lease), &millis(retry_for)],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let event: String = row.try_get("event")?;
                let attempts: i32 = row.try_get("attempts")?;
                let age: f64 = row.try_get("age_secs")?;
                Ok(Claimed {
                    event_id: row.try_get("event_id")?,
                    event: WebhookEvent::parse(&event)
                        .ok_or_else(|| OutboxError::Corrupt(format!("webhook event {event:?}")))?,
                    url: row.try_get("url")?,
                    secret: row.try_get("secret")?,
                    body: row.try_get("body")?,
                    attempt: u32::try_from(attempts).unwrap_or(0),
                    age: Duration::try_from_secs_f64(age.max(0.0)).unwrap_or_default(),
                    last: row.try_get("last")?,
                })
            })
            .collect()
    }

    /// Records an attempt and what follows from it: delivered; failed, when it was the last or
    /// a retry cannot help;
    /// else due again after `retry_in` (never past the end of the retry window, so the last
    /// attempt falls on it). Returns the new status, or None when the row had moved on (this
    /// replica's lease ran out and another attempt was claimed): then nothing is changed.
    pub(crate) async fn finish(
        &self,
        claimed: &Claimed,
        outcome: &Outcome,
        retry_in: Duration,
        retry_for: Duration,
    ) -> Result<Option<DeliveryStatus>, OutboxError> {
        let status = if outcome.delivered() {
            DeliveryStatus::Delivered
        } else if claimed.last || outcome.permanent {
            DeliveryStatus::Failed
        } else {
            DeliveryStatus::Pending
        };
        let status_text = status.as_str();
        let http_status = outcome.http_status.map(i32::from);
        let attempt = i32::try_from(claimed.attempt).unwrap_or(i32::MAX);
        let duration_ms = i32::try_from(outcome.duration.as_millis()).unwrap_or(i32::MAX);
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let updated = tx
            .execute(
                "UPDATE webhook_deliveries
                 SET status = $3, last_http_status = $4, last_error = $5,
                     finished_at = CASE WHEN $3 = 'pending' THEN NULL ELSE now() END,
                     next_attempt_at = least(now() + $6 * interval '1 millisecond',
                                             created_at + $7 * interval '1 millisecond')
                 WHERE event_id = $1 AND attempts = $2 AND status = 'pending'",
                &[
                    &claimed.event_id,
                    &attempt,
                    &status_text,
                    &http_status,
                    &outcome.error,
                    &millis(retry_in),
                    &millis(retry_for),
                ],
            )
            .await?;
        if updated == 0 {
            return Ok(None);
        }
        tx.execute(
            "INSERT INTO webhook_attempts (event_id, attempt, duration_ms, http_status, error)
             VALUES ($1, $2, $3, $4, $5)",
            &[&claimed.event_id, &attempt, &duration_ms, &http_status, &outcome.error],
        )
        .await?;
        tx.commit().await?;
        Ok(Some(status))
    }

    /// Every delivery of a run in `tenant`, oldest first, each with its attempts.
    pub async fn deliveries(&self, tenant: &str, run_id: &str) -> Result<Vec<Delivery>, OutboxError> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self.log(tenant, run_id, &LogQuery { status: None, after, limit: 1000 }).await?;
            all.extend(page.deliveries);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// A page of a run's deliveries in `tenant`, oldest first, each with its attempts.
    pub async fn log(&self, tenant: &str, run_id: &str, query: &LogQuery) -> Result<LogPage, OutboxError> {
        let client = self.client().await?;
        let limit = i64::try_from(query.limit.max(1) + 1).unwrap_or(i64::MAX);
        let rows = client
            .query(
                &format!(
                    "SELECT seq, event_id, event, url, status, attempts, last_http_status, last_error,
                            {} AS created_at, {} AS finished_at,
                            CASE WHEN status = 'pending' THEN {} END AS next_attempt_at
                     FROM webhook_deliveries
                     WHERE tenant = $1 AND run_id = $2 AND seq > $3 AND ($4::text IS NULL OR status = $4)
                     ORDER BY seq LIMIT $5",
                    rfc3339("created_at"),
                    rfc3339("finished_at"),
                    rfc3339("next_attempt_at"),
                ),
                &[&tenant, &run_id, &query.after.unwrap_or(0), &query.status.map(DeliveryStatus::as_str), &limit],
            )
            .await?;
        let more = rows.len() > query.limit.max(1);
        let rows = &rows[..rows.len().min(query.limit.max(1))];
        let next = if more { rows.last().map(|row| row.try_get::<_, i64>("seq")).transpose()? } else { None };
        let ids: Vec<String> = rows.iter().map(|row| row.try_get("event_id")).collect::<Result<_, _>>()?;
        let attempts = client
            .query(
                &format!(
                    "SELECT event_id, attempt, duration_ms, http_status, error, {} AS at
                     FROM webhook_attempts WHERE event_id = ANY($1) ORDER BY event_id, attempt, id",
                    rfc3339("at")
                ),
                &[&ids],
            )
            .await?;
        let mut deliveries = rows.iter().map(delivery).collect::<Result<Vec<_>, _>>()?;
        for row in &attempts {
            let event_id: String = row.try_get("event_id")?;
            if let Some(delivery) = deliveries.iter_mut().find(|delivery| delivery.id == event_id) {
                delivery.attempt_log.push(Attempt {
                    attempt: unsigned(row.try_get("attempt")?),
                    at: row.try_get("at")?,
                    duration_ms: unsigned(row.try_get("duration_ms")?),
                    http_status: status(row.try_get("http_status")?),
                    error: row.try_get("error")?,
                });
            }
        }
        Ok(LogPage { deliveries, next })
    }

    /// Deletes the deliveries that finished (delivered or given up) more than `retention` ago,
    /// with their attempts, in batches of [`PRUNE_BATCH`] so that no statement holds many row
    /// locks for long; rows another replica is deleting are skipped, not waited for. Returns how
    /// many were deleted. Pending deliveries are never deleted, however old.
    pub async fn prune(&self, retention: Duration) -> Result<u64, OutboxError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "DELETE FROM webhook_deliveries
                 WHERE event_id IN (SELECT event_id FROM webhook_deliveries
                                    WHERE status <> 'pending' AND finished_at < now() - $1 * interval '1 millisecond'
                                    LIMIT $2 FOR UPDATE SKIP LOCKED)",
            )
            .await?;
        let mut deleted = 0;
        loop {
            let batch = client.execute(&statement, &[&millis(retention), &PRUNE_BATCH]).await?;
            deleted += batch;
            if batch < PRUNE_BATCH.unsigned_abs() {
                return Ok(deleted);
            }
        }
    }

    /// Deliveries not yet delivered nor given up, in all tenants, and the age of the oldest:
    /// the lag gauge.
    pub async fn backlog(&self) -> Result<(u64, Duration), OutboxError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT count(*) AS pending,
                        coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest
                 FROM webhook_deliveries WHERE status = 'pending'",
                &[],
            )
            .await?;
        let pending: i64 = row.try_get("pending")?;
        let oldest: f64 = row.try_get("oldest")?;
        Ok((u64::try_from(pending).unwrap_or(0), Duration::try_from_secs_f64(oldest.max(0.0)).unwrap_or_default()))
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn unsigned(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

fn status(value: Option<i32>) -> Option<u16> {
    value.and_then(|status| u16::try_from(status).ok())
}

fn delivery(row: &Row) -> Result<Delivery, OutboxError> {
    let event: String = row.try_get("event")?;
    let status_text: String = row.try_get("status")?;
    Ok(Delivery {
        id: row.try_get("event_id")?,
        event: WebhookEvent::parse(&event).ok_or_else(|| OutboxError::Corrupt(format!("webhook event {event:?}")))?,
        url: row.try_get("url")?,
        status: DeliveryStatus::parse(&status_text)?,
        attempts: unsigned(row.try_get("attempts")?),
        created_at: row.try_get("created_at")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        finished_at: row.try_get("finished_at")?,
        last_http_status: status(row.try_get("last_http_status")?),
        last_error: row.try_get("last_error")?,
        attempt_log: Vec::new(),
    })
}
