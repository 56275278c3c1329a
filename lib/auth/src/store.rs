//! The key store: API keys in PostgreSQL, kept as the SHA-256 of their secret. The tables are
//! made on first use (once per process), so a service starts before PostgreSQL does and a
//! process that only ever sees the bootstrap key never connects at all.

use std::time::Duration;

use deadpool_postgres::Pool;
use millrace_common::postgres::DatabaseTls;
use millrace_common::{ApiError, ConfigError};
use serde::Serialize;
use tokio::sync::OnceCell;
use tokio_postgres::Row;

use crate::secret::{self, KeyDigest};
use crate::{Caller, Scope};

/// Connections of one replica to the key store: lookups are single indexed reads, and the
/// cache answers most requests.
const POOL_SIZE: usize = 8;
/// How long a request waits for a connection (or a connect) before the store counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// What a caller is told to wait when the store is down.
pub(crate) const RETRY_AFTER_SECS: u64 = 1;

/// Both tables of this crate, made together under one advisory lock, because concurrent
/// `CREATE TABLE IF NOT EXISTS` of the same table by two replicas can still fail on
/// PostgreSQL's catalog.
const SCHEMA: &str = "
SELECT pg_advisory_xact_lock(7305727);
CREATE TABLE IF NOT EXISTS api_keys (
    id text PRIMARY KEY,
    tenant text NOT NULL,
    name text NOT NULL,
    key_hash text NOT NULL UNIQUE,
    prefix text NOT NULL,
    scopes text[] NOT NULL,
    collections text[],
    rpm integer,
    tpm integer,
    daily_budget_usd double precision,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX IF NOT EXISTS api_keys_by_tenant ON api_keys (tenant, created_at);
CREATE TABLE IF NOT EXISTS audit_events (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    actor_key_id text NOT NULL,
    actor_tenant text NOT NULL,
    action text NOT NULL,
    tenant text NOT NULL,
    target text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS audit_events_by_action ON audit_events (action, id);
CREATE INDEX IF NOT EXISTS audit_events_by_tenant ON audit_events (tenant, id);
";

/// Timestamps leave PostgreSQL as RFC 3339 text in UTC, so no date type crosses the crate.
pub(crate) fn rfc3339(column: &str) -> String {
    format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
}

/// What a new key may do; validated by the caller of [`KeyStore::create`] (`validate_new_key`).
#[derive(Debug, Clone, PartialEq)]
pub struct NewKey {
    pub tenant: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub collections: Option<Vec<String>>,
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    pub daily_budget_usd: Option<f64>,
}

/// A key as it may be shown: never its secret or hash.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyRecord {
    pub id: String,
    pub tenant: String,
    pub name: String,
    /// The first characters of the secret, to tell keys apart.
    pub prefix: String,
    pub scopes: Vec<Scope>,
    pub collections: Option<Vec<String>>,
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    pub daily_budget_usd: Option<f64>,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

impl KeyRecord {
    /// The caller this key stands for.
    pub fn caller(&self) -> Caller {
        Caller {
            key_id: self.id.clone(),
            tenant: self.tenant.clone(),
            scopes: self.scopes.clone(),
            collections: self.collections.clone(),
            rpm: self.rpm,
            tpm: self.tpm,
            daily_budget_usd: self.daily_budget_usd,
        }
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }

    fn from_row(row: &Row) -> Result<Self, StoreError> {
        let scopes: Vec<String> = row.try_get("scopes")?;
        let scopes = scopes
            .iter()
            .map(|scope| scope.parse())
            .collect::<Result<Vec<Scope>, _>>()
            .map_err(|err| StoreError::Corrupt(err.to_string()))?;
        let count = |column: &str| -> Result<Option<u32>, StoreError> {
            let value: Option<i32> = row.try_get(column)?;
            value.map(u32::try_from).transpose().map_err(|_| StoreError::Corrupt(format!("negative {column}")))
        };
        Ok(Self {
            id: row.try_get("id")?,
            tenant: row.try_get("tenant")?,
            name: row.try_get("name")?,
            prefix: row.try_get("prefix")?,
            scopes,
            collections: row.try_get("collections")?,
            rpm: count("rpm")?,
            tpm: count("tpm")?,
            daily_budget_usd: row.try_get("daily_budget_usd")?,
            created_at: row.try_get("created_at")?,
            revoked_at: row.try_get("revoked_at")?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No connection (PostgreSQL down, or the pool exhausted past its timeout).
    #[error("key store unavailable: {0}")]
    Unavailable(String),
    #[error("key store query failed: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("key store holds a value this version cannot read: {0}")]
    Corrupt(String),
    #[error("cannot make a secret: {0}")]
    Rng(String),
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        Self::Unavailable(err.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(_) => ApiError::unavailable(err.to_string()).with_retry_after(RETRY_AFTER_SECS),
            // A connection lost mid-query is an outage too; an error PostgreSQL answered is ours.
            StoreError::Query(ref query) if query.is_closed() || query.as_db_error().is_none() && is_io(query) => {
                ApiError::unavailable(err.to_string()).with_retry_after(RETRY_AFTER_SECS)
            }
            StoreError::Query(_) | StoreError::Corrupt(_) | StoreError::Rng(_) => ApiError::internal(err.to_string()),
        }
    }
}

fn is_io(err: &tokio_postgres::Error) -> bool {
    std::error::Error::source(err).is_some_and(|source| source.is::<std::io::Error>())
}

/// API keys (and, sharing the pool, the audit log) in PostgreSQL. Cheap to clone.
#[derive(Clone)]
pub struct KeyStore {
    pool: Pool,
    schema: std::sync::Arc<OnceCell<()>>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore").finish_non_exhaustive()
    }
}

const COLUMNS: &str = "id, tenant, name, prefix, scopes, collections, rpm, tpm, daily_budget_usd";

fn select_columns() -> String {
    format!("{COLUMNS}, {} AS created_at, {} AS revoked_at", rfc3339("created_at"), rfc3339("revoked_at"))
}

impl KeyStore {
    /// A store on `url` (`variable` names the setting in errors). Connects nothing yet.
    pub fn new(variable: &str, url: &str, tls: &DatabaseTls) -> Result<Self, ConfigError> {
        let pool = millrace_common::postgres::pool(variable, url, tls, POOL_SIZE, CONNECT_TIMEOUT)?;
        Ok(Self::from_pool(pool))
    }

    pub fn from_pool(pool: Pool) -> Self {
        Self { pool, schema: std::sync::Arc::new(OnceCell::new()) }
    }

    /// A pooled connection, the tables made first if this process has not yet made sure of them
    /// (a failure is not remembered: the next call tries again).
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        let client = self.pool.get().await?;
        self.schema
            .get_or_try_init(|| async {
                client.batch_execute(&format!("BEGIN; {SCHEMA} COMMIT;")).await?;
                tracing::debug!("key store tables ready");
                Ok::<(), StoreError>(())
            })
            .await?;
        Ok(client)
    }

    /// Makes a key; the secret is returned only here, and only its digest is stored.
    pub async fn create(&self, key: &NewKey) -> Result<(KeyRecord, String), StoreError> {
        let secret = secret::generate().map_err(|err| StoreError::Rng(err.to_string()))?;
        let id = format!("key_{}", uuid::Uuid::now_v7().simple());
        let scopes: Vec<&str> = key.scopes.iter().map(|scope| scope.as_str()).collect();
        let client = self.client().await?;
        let row = client
            .query_one(
                &format!(
                    "INSERT INTO api_keys (id, tenant, name, key_hash, prefix, scopes, collections, rpm, tpm, daily_budget_usd)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                     RETURNING {}",
                    select_columns()
                ),
                &[
                    &id,
                    &key.tenant,
                    &key.name,
                    &secret::digest_hex(&secret::digest(&secret)),
                    &secret::display_prefix(&secret),
                    &scopes,
                    &key.collections,
                    &key.rpm.map(|rpm| i32::try_from(rpm).unwrap_or(i32::MAX)),
                    &key.tpm.map(|tpm| i32::try_from(tpm).unwrap_or(i32::MAX)),
                    &key.daily_budget_usd,
                ],
            )
            .await?;
        Ok((KeyRecord::from_row(&row)?, secret))
    }

    /// The key whose secret has this digest, revoked or not.
    pub async fn find(&self, digest: &KeyDigest) -> Result<Option<KeyRecord>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {} FROM api_keys WHERE key_hash = $1", select_columns()),
                &[&secret::digest_hex(digest)],
            )
            .await?;
        row.as_ref().map(KeyRecord::from_row).transpose()
    }

    /// Every key (of `tenant`, if given), oldest first.
    pub async fn list(&self, tenant: Option<&str>) -> Result<Vec<KeyRecord>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {} FROM api_keys WHERE $1::text IS NULL OR tenant = $1 ORDER BY created_at, id",
                    select_columns()
                ),
                &[&tenant],
            )
            .await?;
        rows.iter().map(KeyRecord::from_row).collect()
    }

    /// Revokes a key; None if unknown. Revoking a revoked key changes nothing (it keeps its
    /// first revocation time) and says so: `(record, false)`.
    pub async fn revoke(&self, id: &str) -> Result<Option<(KeyRecord, bool)>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    // `now()` is this transaction's start: equal only if this statement set it.
                    "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1
                     RETURNING {}, revoked_at = now() AS newly",
                    select_columns()
                ),
                &[&id],
            )
            .await?;
        row.map(|row| Ok((KeyRecord::from_row(&row)?, row.try_get::<_, bool>("newly")?))).transpose()
    }
}
