//! Jobs in the history: the listing of `GET /v1/jobs`, newest first, by cursor.

use serde_json::Value;

use super::store::{FINAL, HistoryError, HistoryStore};

/// What a job listing asks for. Times are RFC 3339 text, already checked.
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    pub tenant: String,
    /// A status, or `unfinished` (queued or running: the history does not record which).
    pub status: Option<String>,
    pub run_id: Option<String>,
    pub collection: Option<String>,
    /// Unix milliseconds (parsed by the caller: PostgreSQL refuses some RFC 3339 offsets).
    pub created_after: Option<i64>,
    pub created_before: Option<i64>,
    /// The collections the key may use (`None`: all).
    pub collections: Option<Vec<String>>,
    /// The last job id of the page before.
    pub after: Option<String>,
    pub limit: usize,
}

/// A job's row: its id, its last recorded status and its record as the API shows it.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: String,
    pub status: String,
    pub record: Value,
}

impl HistoryStore {
    pub async fn list_jobs(&self, query: &JobQuery) -> Result<Vec<JobRow>, HistoryError> {
        let client = self.client().await?;
        let unfinished = query.status.as_deref() == Some("unfinished");
        let status = query.status.as_deref().filter(|_| !unfinished);
        let rows = client
            .query(
                &format!(
                    "SELECT id, status, record::text AS record FROM jobs
                     WHERE tenant = $1 AND ($2::text IS NULL OR status = $2) AND (NOT $3 OR status NOT IN {FINAL})
                       AND ($4::text IS NULL OR run_id = $4) AND ($5::text IS NULL OR collection = $5)
                       AND ($6::bigint IS NULL OR created_at >= to_timestamp($6::bigint / 1000.0))
                       AND ($7::bigint IS NULL OR created_at < to_timestamp($7::bigint / 1000.0))
                       AND ($8::text[] IS NULL OR collection = ANY($8))
                       AND ($9::text IS NULL OR id < $9)
                     ORDER BY id DESC LIMIT $10"
                ),
                &[
                    &query.tenant,
                    &status,
                    &unfinished,
                    &query.run_id,
                    &query.collection,
                    &query.created_after,
                    &query.created_before,
                    &query.collections,
                    &query.after,
                    &(query.limit as i64),
                ],
            )
            .await?;
        let mut jobs = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("id")?;
            let record: String = row.try_get("record")?;
            match serde_json::from_str::<Value>(&record) {
                Ok(record) if record.is_object() => jobs.push(JobRow { id, status: row.try_get("status")?, record }),
                // Never a null in a list a client iterates: the row is left out, and said so.
                _ => tracing::warn!(job_id = %id, "the history's record of a job cannot be read; left out of the list"),
            }
        }
        Ok(jobs)
    }
}
