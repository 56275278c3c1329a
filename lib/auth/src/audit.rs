//! The audit log: who did what to whom, for the actions an operator must be able to trace (keys
//! created and revoked, documents deleted, dead letters retried, jobs cancelled), in the
//! `audit_events` table beside the keys.
//!
//! A failed write is logged and counted (`millrace_audit_write_failures_total`) but does not
//! fail the action: the action has already happened when it is recorded (a key exists, a
//! document is gone), so answering an error would only make the caller retry something done.
//! The count is what an alert watches.

use millrace_common::ApiError;
use serde::Serialize;
use serde_json::Value;

use crate::Caller;
use crate::store::{KeyStore, StoreError, rfc3339};

/// Failed audit writes (the action itself went through).
pub const AUDIT_WRITE_FAILURES: &str = "millrace_audit_write_failures_total";

/// One recorded action.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    pub id: i64,
    pub at: String,
    pub actor_key_id: String,
    pub actor_tenant: String,
    pub action: String,
    /// The tenant the action touched.
    pub tenant: String,
    /// What it touched: a key id, a document id, a job id, a dead-letter stage.
    pub target: String,
    pub detail: Value,
}

/// Which events to read, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditQuery {
    pub limit: u32,
    /// Only events older than this id (the last id of the previous page).
    pub before: Option<i64>,
    pub action: Option<String>,
    pub tenant: Option<String>,
}

/// Writes and reads audit events. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditLog {
    store: Option<KeyStore>,
}

impl AuditLog {
    /// The log in the key store's database; without one, records are only logged.
    pub fn new(store: Option<KeyStore>) -> Self {
        metrics::describe_counter!(
            AUDIT_WRITE_FAILURES,
            "Audit events that could not be written (the action went through)"
        );
        metrics::counter!(AUDIT_WRITE_FAILURES).increment(0);
        Self { store }
    }

    /// Records that `actor` did `action` to `target` of `tenant`. Never fails the action (see
    /// the module's doc).
    pub async fn record(&self, actor: &Caller, action: &str, tenant: &str, target: &str, detail: Value) {
        tracing::info!(actor_key_id = %actor.key_id, actor_tenant = %actor.tenant, action, tenant, target, "audit");
        let Some(store) = &self.store else {
            return;
        };
        if let Err(err) = insert(store, actor, action, tenant, target, &detail).await {
            metrics::counter!(AUDIT_WRITE_FAILURES).increment(1);
            tracing::error!(error = %err, action, tenant, target, "cannot write an audit event");
        }
    }

    /// Events matching `query`, newest first.
    pub async fn list(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, ApiError> {
        let Some(store) = &self.store else {
            return Err(ApiError::unavailable("no audit log: MILLRACE_DATABASE_URL is not set"));
        };
        Ok(select(store, query).await?)
    }
}

async fn insert(
    store: &KeyStore,
    actor: &Caller,
    action: &str,
    tenant: &str,
    target: &str,
    detail: &Value,
) -> Result<(), StoreError> {
    let client = store.client().await?;
    client
        .execute(
            "INSERT INTO audit_events (actor_key_id, actor_tenant, action, tenant, target, detail)
             VALUES ($1, $2, $3, $4, $5, $6::text::jsonb)",
            &[&actor.key_id, &actor.tenant, &action, &tenant, &target, &detail.to_string()],
        )
        .await?;
    Ok(())
}

async fn select(store: &KeyStore, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
    let client = store.client().await?;
    let rows = client
        .query(
            &format!(
                "SELECT id, {} AS at, actor_key_id, actor_tenant, action, tenant, target, detail::text AS detail
                 FROM audit_events
                 WHERE ($1::bigint IS NULL OR id < $1)
                   AND ($2::text IS NULL OR action = $2)
                   AND ($3::text IS NULL OR tenant = $3)
                 ORDER BY id DESC
                 LIMIT $4",
                rfc3339("at")
            ),
            &[&query.before, &query.action, &query.tenant, &i64::from(query.limit)],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let detail: String = row.try_get("detail")?;
            Ok(AuditEvent {
                id: row.try_get("id")?,
                at: row.try_get("at")?,
                actor_key_id: row.try_get("actor_key_id")?,
                actor_tenant: row.try_get("actor_tenant")?,
                action: row.try_get("action")?,
                tenant: row.try_get("tenant")?,
                target: row.try_get("target")?,
                detail: serde_json::from_str(&detail).map_err(|err| StoreError::Corrupt(err.to_string()))?,
            })
        })
        .collect()
}
