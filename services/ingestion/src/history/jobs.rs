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
    pub created_after: Option<String>,
    pub created_before: Option<String>,
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
                       AND ($6::text IS NULL OR created_at >= ($6::text)::timestamptz)
                       AND ($7::text IS NULL OR created_at < ($7::text)::timestamptz)
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
        rows.iter()
            .map(|row| {
                let record: String = row.try_get("record")?;
                Ok(JobRow {
                    id: row.try_get("id")?,
                    status: row.try_get("status")?,
                    record: serde_json::from_str(&record).unwrap_or(Value::Null),
                })
            })
            .collect()
    }
}
