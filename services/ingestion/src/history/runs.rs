//! Runs and their items in the history: created with their items (all `pending`), fed to the
//! pipeline by the feeder, joined with their jobs' rows to report on them.
//!
//! An item's `status` column says where it stands before it has a job (`pending`, `refused`,
//! `skipped`, `cancelled`) or that it was `submitted`; once it has a job, the job's row says the
//! rest. Its attempts are its job's plus those of the jobs `retry-failed` replaced.

use serde::Serialize;
use serde_json::{Value, json};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::store::{FINAL, HistoryError, HistoryStore, rfc3339, text};

/// Items inserted per statement when a run is created.
const INSERT_CHUNK: usize = 5_000;

/// A new run's durable record.
#[derive(Debug, Clone)]
pub struct NewRunRecord {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub collection: String,
    pub crawl: Option<Value>,
    /// The webhook spec (with its secret: delivery needs it).
    pub webhook: Option<Value>,
    /// The key the run was created with, and the collections it may use: the feeder submits the
    /// items as that key would.
    pub key_id: String,
    pub key_collections: Option<Vec<String>>,
    pub items: Vec<NewItem>,
}

#[derive(Debug, Clone)]
pub struct NewItem {
    /// The item as given (what `POST /v1/ingest` accepts), JSON text.
    pub spec: String,
    pub url: String,
    pub document_id: String,
}

/// A run's row.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub run_id: String,
    pub tenant: String,
    pub name: String,
    pub collection: String,
    pub kind: String,
    pub status: String,
    pub crawl: Option<Value>,
    #[serde(skip)]
    pub webhook: Option<Value>,
    #[serde(skip)]
    pub key_id: String,
    #[serde(skip)]
    pub key_collections: Option<Vec<String>>,
    pub items: i64,
    #[serde(skip)]
    pub completions: i32,
    pub created_at: String,
    pub finished_at: Option<String>,
}

impl RunRow {
    fn from_row(row: &Row) -> Result<Self, HistoryError> {
        Ok(Self {
            run_id: row.try_get("id")?,
            tenant: row.try_get("tenant")?,
            name: row.try_get("name")?,
            collection: row.try_get("collection")?,
            kind: row.try_get("kind")?,
            status: row.try_get("status")?,
            crawl: row.try_get::<_, Option<String>>("crawl")?.and_then(|t| serde_json::from_str(&t).ok()),
            webhook: row.try_get::<_, Option<String>>("webhook")?.and_then(|t| serde_json::from_str(&t).ok()),
            key_id: row.try_get("key_id")?,
            key_collections: row.try_get("key_collections")?,
            items: row.try_get("items_total")?,
            completions: row.try_get("completions")?,
            created_at: row.try_get("created_at")?,
            finished_at: row.try_get("finished_at")?,
        })
    }
}

fn run_columns() -> String {
    format!(
        "id, tenant, name, collection, kind, status, crawl::text AS crawl, webhook::text AS webhook, key_id,
         key_collections, items_total, completions, {} AS created_at, {} AS finished_at",
        rfc3339("created_at"),
        rfc3339("finished_at")
    )
}

/// One item as listed and reported.
#[derive(Debug, Clone, Serialize)]
pub struct ItemRow {
    pub item_id: i64,
    pub url: String,
    pub document_id: String,
    pub status: String,
    pub job_id: Option<String>,
    pub http_status: Option<i32>,
    pub chunks: i64,
    pub tokens: i64,
    pub cost_usd: f64,
    pub attempts: i32,
    pub last_attempt_at: Option<String>,
    /// Why it failed, was refused or was skipped.
    pub error: Option<String>,
    /// Links followed from a crawl's start page (crawl pages only).
    pub depth: Option<i32>,
}

/// The item's status: its own until it has a job, then its job's (`queued` until the job's row
/// is written).
const ITEM_STATUS: &str = "CASE WHEN i.job_id IS NULL THEN i.status WHEN j.id IS NULL THEN 'queued' ELSE j.status END";

fn item_select() -> String {
    format!(
        "SELECT i.id, coalesce(nullif(i.url, ''), j.url, '') AS url,
                coalesce(nullif(i.document_id, ''), j.document_id, '') AS document_id,
                {ITEM_STATUS} AS status, i.job_id, coalesce(j.http_status, i.http_status) AS http_status,
                coalesce(j.chunks, 0) AS chunks, coalesce(j.tokens, 0) AS tokens, coalesce(j.cost_usd, 0) AS cost_usd,
                i.attempts_before + coalesce(j.attempts, CASE WHEN i.job_id IS NULL THEN 0 ELSE 1 END) AS attempts,
                {} AS last_attempt_at, coalesce(j.error, i.reason) AS error, i.depth
         FROM run_items i LEFT JOIN jobs j ON j.id = i.job_id",
        rfc3339("j.last_attempt_at")
    )
}

impl ItemRow {
    fn from_row(row: &Row) -> Result<Self, HistoryError> {
        Ok(Self {
            item_id: row.try_get("id")?,
            url: text(row, "url"),
            document_id: text(row, "document_id"),
            status: row.try_get("status")?,
            job_id: row.try_get("job_id")?,
            http_status: row.try_get("http_status")?,
            chunks: row.try_get("chunks")?,
            tokens: row.try_get("tokens")?,
            cost_usd: row.try_get("cost_usd")?,
            attempts: row.try_get("attempts")?,
            last_attempt_at: row.try_get("last_attempt_at")?,
            error: row.try_get("error")?,
            depth: row.try_get("depth")?,
        })
    }
}

/// Counts and sums of a run, from its items and jobs.
#[derive(Debug, Clone, Default)]
pub struct RunTotals {
    pub counts: Vec<(String, i64)>,
    pub tokens: i64,
    pub cost_usd: f64,
    pub failures: Vec<(String, i64)>,
    pub skipped: Vec<(String, i64)>,
}

/// An item the feeder claimed.
#[derive(Debug, Clone)]
pub struct ClaimedItem {
    pub id: i64,
    pub spec: Value,
}

/// What became of a claimed item.
#[derive(Debug, Clone)]
pub enum ItemOutcome {
    Submitted { job_id: String, document_id: String },
    Refused { reason: String },
}

impl HistoryStore {
    /// Records a run and its items, all pending, in one transaction.
    pub async fn create_run(&self, run: &NewRunRecord) -> Result<(), HistoryError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let kind = if run.crawl.is_some() { "crawl" } else { "items" };
        let crawl = run.crawl.as_ref().map(Value::to_string);
        let webhook = run.webhook.as_ref().map(Value::to_string);
        tx.execute(
            "INSERT INTO runs (id, tenant, name, collection, kind, status, crawl, webhook, key_id, key_collections, items_total)
             VALUES ($1, $2, $3, $4, $5, 'starting', ($6::text)::jsonb, ($7::text)::jsonb, $8, $9, $10)",
            &[
                &run.id,
                &run.tenant,
                &run.name,
                &run.collection,
                &kind,
                &crawl,
                &webhook,
                &run.key_id,
                &run.key_collections,
                &(run.items.len() as i64),
            ],
        )
        .await?;
        for chunk in run.items.chunks(INSERT_CHUNK) {
            let specs: Vec<&str> = chunk.iter().map(|item| item.spec.as_str()).collect();
            let urls: Vec<&str> = chunk.iter().map(|item| item.url.as_str()).collect();
            let ids: Vec<&str> = chunk.iter().map(|item| item.document_id.as_str()).collect();
            tx.execute(
                "INSERT INTO run_items (run_id, spec, url, document_id, status)
                 SELECT $1, s::jsonb, u, d, 'pending'
                 FROM unnest($2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS t(s, u, d, n) ORDER BY n",
                &[&run.id, &specs, &urls, &ids],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Sets a run's status (`running` once its live state exists, `cancelled` if it could not
    /// be made).
    pub async fn set_run_status(&self, run_id: &str, status: &str) -> Result<(), HistoryError> {
        let client = self.client().await?;
        client.execute("UPDATE runs SET status = $2 WHERE id = $1", &[&run_id, &status]).await?;
        Ok(())
    }

    pub async fn run(&self, run_id: &str) -> Result<Option<RunRow>, HistoryError> {
        let client = self.client().await?;
        let row = client.query_opt(&format!("SELECT {} FROM runs WHERE id = $1", run_columns()), &[&run_id]).await?;
        row.as_ref().map(RunRow::from_row).transpose()
    }

    /// The tenant's runs, newest first, after the run `after` (a cursor).
    pub async fn list_runs(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRow>, HistoryError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {} FROM runs WHERE tenant = $1 AND ($2::text IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
                    run_columns()
                ),
                &[&tenant, &after, &(limit as i64)],
            )
            .await?;
        rows.iter().map(RunRow::from_row).collect()
    }

    pub async fn run_totals(&self, run_id: &str) -> Result<RunTotals, HistoryError> {
        let client = self.client().await?;
        let counts = client
            .query(
                &format!(
                    "SELECT {ITEM_STATUS} AS status, count(*) AS n
                     FROM run_items i LEFT JOIN jobs j ON j.id = i.job_id WHERE i.run_id = $1 GROUP BY 1"
                ),
                &[&run_id],
            )
            .await?;
        let sums = client
            .query_one(
                "SELECT coalesce(sum(tokens), 0)::bigint AS tokens, coalesce(sum(cost_usd), 0) AS cost
                 FROM jobs WHERE run_id = $1",
                &[&run_id],
            )
            .await?;
        let grouped = |statuses: &str| {
            format!(
                "SELECT coalesce(reason, '') AS reason, count(*) AS n FROM (
                     SELECT {ITEM_STATUS} AS status, coalesce(j.error, i.reason) AS reason
                     FROM run_items i LEFT JOIN jobs j ON j.id = i.job_id WHERE i.run_id = $1) s
                 WHERE status IN {statuses} GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 50"
            )
        };
        let pairs = |rows: Vec<Row>, name: &str| -> Result<Vec<(String, i64)>, HistoryError> {
            rows.iter().map(|row| Ok((row.try_get::<_, String>(name)?, row.try_get::<_, i64>("n")?))).collect()
        };
        let failures = client.query(&grouped("('failed', 'refused')"), &[&run_id]).await?;
        let skipped = client.query(&grouped("('skipped')"), &[&run_id]).await?;
        Ok(RunTotals {
            counts: pairs(counts, "status")?,
            tokens: sums.try_get("tokens")?,
            cost_usd: sums.try_get("cost")?,
            failures: pairs(failures, "reason")?,
            skipped: pairs(skipped, "reason")?,
        })
    }

    /// A page of a run's items in order, after the item `after`, of one status if given.
    pub async fn items(
        &self,
        run_id: &str,
        status: Option<&str>,
        after: Option<i64>,
        limit: Option<usize>,
    ) -> Result<Vec<ItemRow>, HistoryError> {
        let client = self.client().await?;
        let limit = limit.map_or(i64::MAX, |limit| limit as i64);
        let rows = client
            .query(
                &format!(
                    "{} WHERE i.run_id = $1 AND i.id > $2 AND ($3::text IS NULL OR {ITEM_STATUS} = $3)
                     ORDER BY i.id LIMIT $4",
                    item_select()
                ),
                &[&run_id, &after.unwrap_or(0), &status, &limit],
            )
            .await?;
        rows.iter().map(ItemRow::from_row).collect()
    }

    /// Streams every item of a run through `each`, in order (the report).
    pub async fn for_each_item(&self, run_id: &str, mut each: impl FnMut(ItemRow)) -> Result<(), HistoryError> {
        use futures::{StreamExt as _, pin_mut};
        let client = self.client().await?;
        let query = format!("{} WHERE i.run_id = $1 ORDER BY i.id", item_select());
        let params: [&(dyn ToSql + Sync); 1] = [&run_id];
        let rows = client.query_raw(&query, params).await?;
        pin_mut!(rows);
        while let Some(row) = rows.next().await {
            each(ItemRow::from_row(&row?)?);
        }
        Ok(())
    }

    /// Marks a run cancelled and its unsubmitted items with it; answers the jobs of the run that
    /// may still be unfinished (for the caller to cancel), or `None` if it was not running.
    pub async fn cancel_run(&self, run_id: &str) -> Result<Option<Vec<String>>, HistoryError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let changed = tx
            .execute(
                "UPDATE runs SET status = 'cancelled', finished_at = now() WHERE id = $1 AND status = 'running'",
                &[&run_id],
            )
            .await?;
        if changed == 0 {
            return Ok(None);
        }
        tx.execute("UPDATE run_items SET status = 'cancelled' WHERE run_id = $1 AND status = 'pending'", &[&run_id])
            .await?;
        let rows = tx
            .query(
                &format!(
                    "SELECT i.job_id AS id FROM run_items i LEFT JOIN jobs j ON j.id = i.job_id
                     WHERE i.run_id = $1 AND i.job_id IS NOT NULL AND (j.id IS NULL OR j.status NOT IN {FINAL})
                     UNION SELECT id FROM jobs WHERE run_id = $1 AND status NOT IN {FINAL}"
                ),
                &[&run_id],
            )
            .await?;
        tx.commit().await?;
        rows.iter().map(|row| Ok(row.try_get("id")?)).collect()
    }

    /// Puts a run's failed items back to `pending` (the feeder submits them again as new jobs)
    /// and the run back to running; `reopen` is called, inside the transaction, with how many
    /// (it reopens the live run), and must succeed for anything to change.
    pub async fn retry_failed<F, Fut, E>(&self, run_id: &str, reopen: F) -> Result<Result<u64, E>, HistoryError>
    where
        F: FnOnce(u64) -> Fut,
        Fut: std::future::Future<Output = Result<(), E>>,
    {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let updated = tx
            .execute(
                "UPDATE run_items i
                 SET status = 'pending', attempts_before = i.attempts_before + j.attempts, job_id = NULL,
                     spec = CASE WHEN r.kind = 'crawl' THEN jsonb_build_object('url', i.url, 'document_id', j.document_id)
                                 ELSE i.spec END,
                     url = CASE WHEN i.url = '' THEN j.url ELSE i.url END,
                     document_id = CASE WHEN i.document_id = '' THEN j.document_id ELSE i.document_id END
                 FROM jobs j, runs r
                 WHERE i.run_id = $1 AND j.id = i.job_id AND j.status = 'failed' AND r.id = i.run_id
                   AND r.status <> 'cancelled'",
                &[&run_id],
            )
            .await?;
        if updated == 0 {
            return Ok(Ok(0));
        }
        tx.execute("UPDATE runs SET status = 'running', finished_at = NULL WHERE id = $1", &[&run_id]).await?;
        if let Err(err) = reopen(updated).await {
            return Ok(Err(err));
        }
        tx.commit().await?;
        Ok(Ok(updated))
    }

    /// Records that a run is done (from its `run_done` history entry); answers the row if this
    /// call changed it.
    pub async fn finish_run(&self, run_id: &str) -> Result<Option<RunRow>, HistoryError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "UPDATE runs SET status = 'done', finished_at = now(), completions = completions + 1
                     WHERE id = $1 AND status = 'running' RETURNING {}",
                    run_columns()
                ),
                &[&run_id],
            )
            .await?;
        row.as_ref().map(RunRow::from_row).transpose()
    }

    /// The run's jobs whose rows are not final yet (to read again before a summary).
    pub async fn unfinished_jobs(&self, run_id: &str) -> Result<Vec<String>, HistoryError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT i.job_id AS id FROM run_items i LEFT JOIN jobs j ON j.id = i.job_id
                     WHERE i.run_id = $1 AND i.job_id IS NOT NULL AND (j.id IS NULL OR j.status NOT IN {FINAL})"
                ),
                &[&run_id],
            )
            .await?;
        rows.iter().map(|row| Ok(row.try_get("id")?)).collect()
    }

    /// A crawl's page became a job: its item (one per URL; a later job of the same page, made
    /// by `retry-failed`, replaces an earlier one). Items of item runs are the feeder's.
    pub async fn record_crawl_page(
        &self,
        run_id: &str,
        url: &str,
        document_id: &str,
        job_id: &str,
    ) -> Result<(), HistoryError> {
        let client = self.client().await?;
        let spec = json!({ "url": url, "document_id": document_id }).to_string();
        client
            .execute(
                "INSERT INTO run_items (run_id, key, spec, url, document_id, status, job_id)
                 SELECT $1, $2, ($3::text)::jsonb, $2, $4, 'submitted', $5 FROM runs WHERE id = $1 AND kind = 'crawl'
                 ON CONFLICT (run_id, key) DO UPDATE SET job_id = EXCLUDED.job_id, status = 'submitted'
                 WHERE run_items.job_id IS NULL AND run_items.status <> 'pending' OR run_items.job_id < EXCLUDED.job_id",
                &[&run_id, &url, &spec, &document_id, &job_id],
            )
            .await?;
        Ok(())
    }

    /// A page a crawl did not take, and why.
    pub async fn record_skipped(
        &self,
        run_id: &str,
        url: &str,
        reason: &str,
        http_status: Option<u16>,
        depth: u32,
    ) -> Result<(), HistoryError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO run_items (run_id, key, url, status, reason, http_status, depth)
                 VALUES ($1, $2, $2, 'skipped', $3, $4, $5) ON CONFLICT DO NOTHING",
                &[&run_id, &url, &reason, &http_status.map(i32::from), &(depth.min(i32::MAX as u32) as i32)],
            )
            .await?;
        Ok(())
    }

    /// Runs still running with items to submit, oldest first.
    pub async fn runs_to_feed(&self) -> Result<Vec<RunRow>, HistoryError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {} FROM runs r WHERE status = 'running'
                     AND EXISTS (SELECT 1 FROM run_items i WHERE i.run_id = r.id AND i.status = 'pending')
                     ORDER BY id LIMIT 100",
                    run_columns()
                ),
                &[],
            )
            .await?;
        rows.iter().map(RunRow::from_row).collect()
    }

    /// Claims up to `limit` pending items of a running run (`FOR UPDATE SKIP LOCKED`: another
    /// replica's feeder skips them), lets `submit` handle them, records what became of each and
    /// commits. Answers how many were handled.
    pub async fn feed<F, Fut>(&self, run_id: &str, limit: usize, submit: F) -> Result<usize, HistoryError>
    where
        F: FnOnce(Vec<ClaimedItem>) -> Fut,
        Fut: std::future::Future<Output = Vec<(i64, ItemOutcome)>>,
    {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let rows = tx
            .query(
                "SELECT i.id, i.spec::text AS spec FROM run_items i
                 WHERE i.run_id = $1 AND i.status = 'pending'
                   AND EXISTS (SELECT 1 FROM runs r WHERE r.id = $1 AND r.status = 'running')
                 ORDER BY i.id LIMIT $2 FOR UPDATE OF i SKIP LOCKED",
                &[&run_id, &(limit as i64)],
            )
            .await?;
        let claimed: Vec<ClaimedItem> = rows
            .iter()
            .map(|row| {
                Ok(ClaimedItem {
                    id: row.try_get("id")?,
                    spec: serde_json::from_str(&row.try_get::<_, String>("spec")?).unwrap_or(Value::Null),
                })
            })
            .collect::<Result<_, HistoryError>>()?;
        if claimed.is_empty() {
            return Ok(0);
        }
        let outcomes = submit(claimed).await;
        let mut ids = Vec::with_capacity(outcomes.len());
        let mut statuses = Vec::with_capacity(outcomes.len());
        let mut jobs: Vec<Option<String>> = Vec::with_capacity(outcomes.len());
        let mut reasons: Vec<Option<String>> = Vec::with_capacity(outcomes.len());
        let mut documents = Vec::with_capacity(outcomes.len());
        for (id, outcome) in &outcomes {
            ids.push(*id);
            match outcome {
                ItemOutcome::Submitted { job_id, document_id } => {
                    statuses.push("submitted");
                    jobs.push(Some(job_id.clone()));
                    reasons.push(None);
                    documents.push(document_id.clone());
                }
                ItemOutcome::Refused { reason } => {
                    statuses.push("refused");
                    jobs.push(None);
                    reasons.push(Some(reason.clone()));
                    documents.push(String::new());
                }
            }
        }
        tx.execute(
            "UPDATE run_items i SET status = u.status, job_id = u.job_id, reason = u.reason,
                 document_id = CASE WHEN i.document_id = '' THEN u.document_id ELSE i.document_id END
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[]) AS u(id, status, job_id, reason, document_id)
             WHERE i.id = u.id",
            &[&ids, &statuses, &jobs, &reasons, &documents],
        )
        .await?;
        tx.commit().await?;
        Ok(outcomes.len())
    }
}

/// A run's summary (`GET /v1/runs/{id}` and the `run.completed` webhook's body).
pub fn summary(run: &RunRow, totals: &RunTotals, live_status: Option<&str>, live_pending: i64) -> Value {
    let count = |name: &str| totals.counts.iter().filter(|(status, _)| status == name).map(|(_, n)| *n).sum::<i64>();
    let total: i64 = totals.counts.iter().map(|(_, n)| *n).sum();
    let in_progress = count("submitted") + count("queued") + count("running");
    let finished = count("completed") + count("failed") + count("cancelled") + count("skipped") + count("refused");
    // A crawl's pages still to fetch are not items yet: they count as left to do.
    let extra = if run.kind == "crawl" { live_pending.max(0) } else { 0 };
    let progress = if total + extra == 0 { 0.0 } else { finished as f64 / (total + extra) as f64 };
    let grouped = |pairs: &[(String, i64)]| -> Vec<Value> {
        pairs.iter().map(|(reason, count)| json!({"reason": reason, "count": count})).collect()
    };
    json!({
        "run_id": run.run_id,
        "name": run.name,
        "tenant": run.tenant,
        "collection": run.collection,
        "kind": run.kind,
        "status": live_status.unwrap_or(&run.status),
        "crawl": run.crawl,
        "webhook": run.webhook.as_ref().map(|hook| json!({"url": hook.get("url"), "events": hook.get("events")})),
        "items": total,
        "counts": {
            "pending": count("pending"),
            "in_progress": in_progress,
            "completed": count("completed"),
            "failed": count("failed"),
            "cancelled": count("cancelled"),
            "skipped": count("skipped"),
            "refused": count("refused"),
        },
        "progress": (progress * 10_000.0).round() / 10_000.0,
        "tokens": totals.tokens,
        "cost_usd": totals.cost_usd,
        "failures": grouped(&totals.failures),
        "skipped": grouped(&totals.skipped),
        "created_at": run.created_at,
        "finished_at": run.finished_at,
    })
}
