//! The durable history's tables in PostgreSQL (ingestion's database, the key store's): one row
//! per run, per run item and per job. Made on first use under an advisory lock of their own,
//! as the key store's are, so that replicas starting together do not race on the catalog.

use std::time::Duration;

use deadpool_postgres::Pool;
use millrace_common::ConfigError;
use millrace_common::postgres::DatabaseTls;
use millrace_pipeline::Job;
use serde_json::Value;
use tokio::sync::OnceCell;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

/// Connections of one replica: the history worker (at most `worker::CONCURRENCY` at once), the
/// feeder (one) and the API's reads share them; the rest is the API's, so that a worker catching
/// up on a large run does not starve the reads.
const POOL_SIZE: usize = 16;
/// How long a call waits for a connection before the history counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

const SCHEMA: &str = "
SELECT pg_advisory_xact_lock(7305728);
CREATE TABLE IF NOT EXISTS runs (
    id text PRIMARY KEY,
    tenant text NOT NULL,
    name text NOT NULL,
    collection text NOT NULL,
    kind text NOT NULL,
    status text NOT NULL,
    crawl jsonb,
    webhook jsonb,
    key_id text NOT NULL,
    key_collections text[],
    items_total bigint NOT NULL DEFAULT 0,
    completions integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE INDEX IF NOT EXISTS runs_by_tenant ON runs (tenant, id);
CREATE INDEX IF NOT EXISTS runs_running ON runs (id) WHERE status = 'running';
CREATE TABLE IF NOT EXISTS run_items (
    id bigserial PRIMARY KEY,
    run_id text NOT NULL,
    key text,
    spec jsonb NOT NULL DEFAULT '{}'::jsonb,
    url text NOT NULL DEFAULT '',
    document_id text NOT NULL DEFAULT '',
    status text NOT NULL,
    job_id text,
    reason text,
    http_status integer,
    depth integer,
    attempts_before integer NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS run_items_by_run ON run_items (run_id, id);
CREATE INDEX IF NOT EXISTS run_items_pending ON run_items (run_id, id) WHERE status = 'pending';
CREATE UNIQUE INDEX IF NOT EXISTS run_items_by_key ON run_items (run_id, key);
CREATE UNIQUE INDEX IF NOT EXISTS run_items_by_job ON run_items (job_id);
CREATE TABLE IF NOT EXISTS jobs (
    id text PRIMARY KEY,
    tenant text NOT NULL,
    collection text NOT NULL,
    run_id text,
    document_id text NOT NULL,
    version bigint NOT NULL,
    status text NOT NULL,
    url text NOT NULL DEFAULT '',
    source text NOT NULL DEFAULT '',
    content_type text NOT NULL DEFAULT '',
    http_status integer,
    chunks bigint NOT NULL DEFAULT 0,
    tokens bigint NOT NULL DEFAULT 0,
    cost_usd double precision NOT NULL DEFAULT 0,
    attempts integer NOT NULL DEFAULT 1,
    error text,
    created_at timestamptz NOT NULL,
    last_attempt_at timestamptz,
    finished_at timestamptz,
    trace_id text,
    record jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_tenant ON jobs (tenant, id DESC);
CREATE INDEX IF NOT EXISTS jobs_by_run ON jobs (run_id, id DESC) WHERE run_id IS NOT NULL;
";

/// The statuses a job never leaves except by a retry that starts a new attempt.
pub const FINAL: &str = "('completed', 'failed', 'cancelled')";

/// Timestamps leave PostgreSQL as RFC 3339 text in UTC.
pub fn rfc3339(column: &str) -> String {
    format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history unavailable: {0}")]
    Unavailable(String),
    #[error("history query failed: {0}")]
    Query(#[from] tokio_postgres::Error),
}

impl HistoryError {
    /// Whether waiting may help (no connection, or one lost mid-query).
    pub fn is_outage(&self) -> bool {
        match self {
            Self::Unavailable(_) => true,
            Self::Query(err) => err.is_closed() || err.as_db_error().is_none(),
        }
    }
}

impl From<deadpool_postgres::PoolError> for HistoryError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        Self::Unavailable(err.to_string())
    }
}

impl From<HistoryError> for millrace_common::ApiError {
    fn from(err: HistoryError) -> Self {
        if err.is_outage() {
            tracing::warn!(error = %err, "history unavailable");
            millrace_common::ApiError::unavailable(err.to_string()).with_retry_after(1)
        } else {
            tracing::error!(error = %err, "history query failed");
            millrace_common::ApiError::internal(err.to_string())
        }
    }
}

/// The history's connection pool; cheap to clone.
#[derive(Clone)]
pub struct HistoryStore {
    pool: Option<Pool>,
    schema: std::sync::Arc<OnceCell<()>>,
}

impl std::fmt::Debug for HistoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryStore").field("configured", &self.pool.is_some()).finish()
    }
}

impl HistoryStore {
    /// A store on `url` (`MILLRACE_DATABASE_URL`), or none: every call is then unavailable.
    /// Connects nothing yet.
    pub fn new(url: Option<&str>, tls: &DatabaseTls) -> Result<Self, ConfigError> {
        let pool = url
            .map(|url| millrace_common::postgres::pool("DATABASE_URL", url, tls, POOL_SIZE, CONNECT_TIMEOUT))
            .transpose()?;
        Ok(Self { pool, schema: std::sync::Arc::new(OnceCell::new()) })
    }

    /// No history: every call is unavailable.
    pub fn none() -> Self {
        Self { pool: None, schema: std::sync::Arc::new(OnceCell::new()) }
    }

    pub fn is_configured(&self) -> bool {
        self.pool.is_some()
    }

    /// A pooled connection, the tables made first if this process has not yet made sure of them.
    pub async fn client(&self) -> Result<deadpool_postgres::Object, HistoryError> {
        let pool =
            self.pool.as_ref().ok_or_else(|| HistoryError::Unavailable("MILLRACE_DATABASE_URL is not set".into()))?;
        let client = pool.get().await?;
        self.schema
            .get_or_try_init(|| async {
                client.batch_execute(&format!("BEGIN; {SCHEMA} COMMIT;")).await?;
                tracing::debug!("history tables ready");
                Ok::<(), HistoryError>(())
            })
            .await?;
        Ok(client)
    }

    /// Writes a job's row from its record. Idempotent; a row never goes back from a final
    /// status to an unfinished one of the same attempt, nor to an earlier attempt, so entries
    /// handled out of order or twice change nothing.
    pub async fn upsert_job(&self, job: &Job) -> Result<(), HistoryError> {
        let client = self.client().await?;
        upsert_job_on(&client, job).await
    }
}

pub async fn upsert_job_on(client: &tokio_postgres::Client, job: &Job) -> Result<(), HistoryError> {
    let record = serde_json::to_value(job).unwrap_or_else(|err| {
        tracing::warn!(job_id = %job.job_id, error = %err, "job record not representable as JSON");
        Value::Null
    });
    let tokens = (job.llm.prompt_tokens + job.llm.completion_tokens) as i64;
    let error = job.error.as_ref().map(|e| e.message.clone());
    let http_status = job.http_status.map(i32::from);
    let params: [&(dyn ToSql + Sync); 20] = [
        &job.job_id,
        &job.tenant_id,
        &job.collection,
        &job.run_id,
        &job.document_id,
        &(job.version as i64),
        &job.status.as_str(),
        &job.url,
        &job.source,
        &job.content_type,
        &http_status,
        &(job.chunks.total as i64),
        &tokens,
        &job.llm.cost_usd,
        &(job.attempts.min(i32::MAX as u64) as i32),
        &error,
        &job.created_at,
        &job.last_attempt_at,
        &job.finished_at,
        &job.trace_id,
    ];
    let mut all: Vec<&(dyn ToSql + Sync)> = params.to_vec();
    // PostgreSQL's jsonb refuses the NUL character, which a caller's metadata may hold.
    let record_text = record.to_string().replace("\\u0000", "\\ufffd");
    all.push(&record_text);
    client
        .execute(
            &format!(
                "INSERT INTO jobs (id, tenant, collection, run_id, document_id, version, status, url, source,
                     content_type, http_status, chunks, tokens, cost_usd, attempts, error, created_at,
                     last_attempt_at, finished_at, trace_id, record)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                     coalesce(nullif($17::text, '')::timestamptz, now()), nullif($18::text, '')::timestamptz, ($19::text)::timestamptz,
                     $20, ($21::text)::jsonb)
                 ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, http_status = EXCLUDED.http_status,
                     chunks = EXCLUDED.chunks, tokens = EXCLUDED.tokens, cost_usd = EXCLUDED.cost_usd,
                     attempts = EXCLUDED.attempts, error = EXCLUDED.error,
                     last_attempt_at = EXCLUDED.last_attempt_at, finished_at = EXCLUDED.finished_at,
                     trace_id = EXCLUDED.trace_id, record = EXCLUDED.record
                 WHERE EXCLUDED.attempts > jobs.attempts
                    OR (EXCLUDED.attempts = jobs.attempts
                        AND NOT (jobs.status IN {FINAL} AND EXCLUDED.status NOT IN {FINAL}))"
            ),
            &all,
        )
        .await?;
    Ok(())
}

/// An opaque cursor: the key of the last row of a page, in hex (so that any string of hex
/// pairs is a cursor: it names a point in the order, whatever it holds).
pub fn encode_cursor(key: &str) -> String {
    hex::encode(key.as_bytes())
}

pub fn decode_cursor(cursor: &str) -> Option<String> {
    let bytes = hex::decode(cursor).ok().filter(|bytes| !bytes.is_empty() && bytes.len() <= 128)?;
    // Any well-formed cursor is a position (the API documents cursors as hex): one that this
    // API did not give still reads as some key, so NUL, which PostgreSQL text refuses, goes.
    Some(String::from_utf8_lossy(&bytes).replace('\0', ""))
}

pub fn text(row: &Row, column: &str) -> String {
    row.try_get::<_, Option<String>>(column).ok().flatten().unwrap_or_default()
}
