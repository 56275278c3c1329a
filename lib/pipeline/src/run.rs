//! Runs: many documents submitted as one piece of work, either a list of items or a crawl of a
//! site. A run's live state is a Redis hash (`Keys::run`) with these fields:
//!
//! - `tenant`, `collection`: copied onto every job and crawl entry of the run;
//! - `status`: `running`, then `done` (set once by `settle_run` when `pending` and `open` are
//!   both zero) or `cancelled`;
//! - `pending`: work not yet turned into a job (items still to submit, crawl pages still to
//!   fetch), kept by [`JobStore::run_progress`];
//! - `open`: the run's jobs not yet finished, kept by job creation (+1) and `FINISH` (−1);
//! - `crawl`: the [`CrawlSpec`] as JSON, for a crawl; `pages`: pages a crawl took into its
//!   frontier (at most `max_pages`), kept by the crawler;
//! - `created_ms`, `finished_ms`.
//!
//! The durable record of a run (its items, report and webhooks) is the ingestion service's, in
//! PostgreSQL, written from the history stream (`entry::HistoryEntry`).

use std::collections::HashMap;

use millrace_common::telemetry::context;
use millrace_common::time::now_millis;
use redis::AsyncCommands as _;
use serde::{Deserialize, Serialize};

use crate::entry::CrawlEntry;
use crate::scripts::RUN_PROGRESS;
use crate::{JobStore, JobStoreError};

/// What to crawl: the `crawl` of `POST /v1/runs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrawlSpec {
    /// The start page.
    pub url: String,
    /// Pages taken at most (skipped pages do not count).
    #[serde(default = "CrawlSpec::default_max_pages")]
    pub max_pages: u32,
    /// Links followed at most from the start page (0: the start page and the sitemap's pages).
    #[serde(default = "CrawlSpec::default_max_depth")]
    pub max_depth: u32,
    #[serde(default)]
    pub scope: CrawlScope,
    /// Regular expressions over the URL's path and query: when any is given, a page is taken
    /// only if one matches.
    #[serde(default)]
    pub include: Vec<String>,
    /// Regular expressions over the URL's path and query: a page that matches one is skipped.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Whether the site's sitemap.xml (and the sitemaps robots.txt names) seeds the frontier.
    #[serde(default = "CrawlSpec::default_sitemap")]
    pub sitemap: bool,
}

impl CrawlSpec {
    pub const DEFAULT_MAX_PAGES: u32 = 100;
    pub const DEFAULT_MAX_DEPTH: u32 = 3;

    fn default_max_pages() -> u32 {
        Self::DEFAULT_MAX_PAGES
    }

    fn default_max_depth() -> u32 {
        Self::DEFAULT_MAX_DEPTH
    }

    fn default_sitemap() -> bool {
        true
    }
}

/// Which pages a crawl may take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrawlScope {
    /// The start page's host (scheme and port included).
    #[default]
    Host,
    /// URLs under the start page's path (its directory: up to the last `/`).
    Prefix,
}

/// A run's live status (the hash's `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Done,
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Done => "done",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "running" => Self::Running,
            "done" => Self::Done,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }
}

/// A job's live status and attempt (see [`JobStore::live_many`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveJob {
    pub status: crate::JobStatus,
    /// As [`crate::Job::attempts`].
    pub attempts: u64,
    /// As [`crate::Job::last_attempt_at`].
    pub last_attempt_at: String,
}

/// A new run's live state.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub run_id: String,
    pub tenant: String,
    pub collection: String,
    /// How many items will be submitted (0 for a crawl, whose start page is pending instead).
    pub items: u64,
    pub crawl: Option<CrawlSpec>,
}

/// A run's live state as read from its hash.
#[derive(Debug, Clone, PartialEq)]
pub struct RunState {
    pub run_id: String,
    pub tenant: String,
    pub collection: String,
    pub status: RunStatus,
    pub pending: i64,
    pub open: i64,
    pub pages: u64,
    pub crawl: Option<CrawlSpec>,
    pub created_ms: i64,
    pub finished_ms: Option<i64>,
}

impl RunState {
    fn from_hash(run_id: &str, fields: &HashMap<String, String>) -> Option<Self> {
        let text = |name: &str| fields.get(name).cloned().unwrap_or_default();
        let number = |name: &str| fields.get(name).and_then(|v| v.parse::<i64>().ok());
        Some(Self {
            run_id: run_id.to_owned(),
            tenant: text("tenant"),
            collection: text("collection"),
            status: RunStatus::parse(fields.get("status")?)?,
            pending: number("pending").unwrap_or(0),
            open: number("open").unwrap_or(0),
            pages: number("pages").unwrap_or(0).max(0) as u64,
            crawl: fields.get("crawl").and_then(|json| serde_json::from_str(json).ok()),
            created_ms: number("created_ms").unwrap_or(0),
            finished_ms: number("finished_ms"),
        })
    }
}

impl JobStore {
    /// Records a run's live state. A crawl's start page is its first pending page, put on the
    /// crawl stream in the same transaction; an item run's items are all pending until each is
    /// submitted (or refused: either way [`JobStore::run_progress`] with −1).
    pub async fn create_run(&self, run: &NewRun) -> Result<(), JobStoreError> {
        let mut conn = self.pool().get().await?;
        let key = self.keys().run(&run.run_id);
        let mut fields = vec![
            ("tenant", run.tenant.clone()),
            ("collection", run.collection.clone()),
            ("status", RunStatus::Running.as_str().to_owned()),
            ("pending", if run.crawl.is_some() { 1 } else { run.items }.to_string()),
            ("open", "0".to_owned()),
            ("pages", "0".to_owned()),
            ("created_ms", now_millis().to_string()),
        ];
        let mut pipe = redis::pipe();
        pipe.atomic();
        if let Some(crawl) = &run.crawl {
            fields.push(("crawl", serde_json::to_string(crawl).unwrap_or_default()));
            let seed = CrawlEntry {
                run_id: run.run_id.clone(),
                tenant: run.tenant.clone(),
                collection: run.collection.clone(),
                url: crawl.url.clone(),
                depth: 0,
            };
            let mut enqueue = redis::cmd("XADD");
            enqueue.arg(self.keys().crawl_stream()).arg("*");
            for (name, value) in seed.to_fields(context::traceparent().as_deref()) {
                enqueue.arg(name).arg(value);
            }
            pipe.add_command(enqueue).ignore();
        }
        pipe.hset_multiple(&key, &fields).ignore().expire(&key, self.retention().as_secs().max(1) as i64).ignore();
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// The run's live state; `None` if unknown or expired.
    pub async fn run_state(&self, run_id: &str) -> Result<Option<RunState>, JobStoreError> {
        let mut conn = self.pool().get().await?;
        let fields: HashMap<String, String> = conn.hgetall(self.keys().run(run_id)).await?;
        Ok(RunState::from_hash(run_id, &fields))
    }

    /// Adds `pending_delta` to the run's work still to submit (−1 when an item was submitted or
    /// refused, or a crawl page was fetched or skipped; +n when a crawl found n new pages, added
    /// before their entries are) and finishes the run if nothing is left. Returns whether this
    /// call finished it; `None` if the run is unknown.
    pub async fn run_progress(&self, run_id: &str, pending_delta: i64) -> Result<Option<bool>, JobStoreError> {
        let mut conn = self.pool().get().await?;
        let result: i64 = RUN_PROGRESS
            .key(self.keys().run(run_id))
            .key(self.keys().history_stream())
            .arg(pending_delta)
            .arg(now_millis())
            .arg(run_id)
            .invoke_async(&mut conn)
            .await?;
        Ok((result != -2).then_some(result == 1))
    }

    /// Marks a running run cancelled: the crawler takes no more pages, and settling no longer
    /// finishes it. (Cancelling its unfinished jobs is the caller's.) Returns whether it was
    /// running.
    pub async fn cancel_run(&self, run_id: &str) -> Result<bool, JobStoreError> {
        let mut conn = self.pool().get().await?;
        let key = self.keys().run(run_id);
        // HSET only if running, atomically.
        let script = redis::Script::new(
            "if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
             redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_ms', ARGV[1]) return 1",
        );
        let changed: i64 = script.key(key).arg(now_millis()).invoke_async(&mut conn).await?;
        Ok(changed == 1)
    }

    /// Several jobs' records in one round trip (`None` for each unknown or expired one), in the
    /// order asked: the live state of a page of a run's items.
    pub async fn get_many(&self, job_ids: &[String]) -> Result<Vec<Option<crate::Job>>, JobStoreError> {
        if job_ids.is_empty() {
            return Ok(Vec::new());
        }
        // A few dozen records per round trip: one answer stays small (a connection's response
        // timeout bounds each).
        const PER_TRIP: usize = 50;
        let mut conn = self.pool().get().await?;
        let mut jobs = Vec::with_capacity(job_ids.len());
        for ids in job_ids.chunks(PER_TRIP) {
            let mut pipe = redis::pipe();
            for job_id in ids {
                pipe.hgetall(self.keys().job(job_id));
            }
            let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut conn).await?;
            jobs.extend(hashes.iter().map(crate::Job::from_hash));
        }
        Ok(jobs)
    }

    /// What a page of a run's items shows of each job still going: its status and attempt, read
    /// with HMGET (a few fields, not the whole record: a page has up to 1,000 items). `None` for
    /// each unknown or expired job, in the order asked.
    pub async fn live_many(&self, job_ids: &[String]) -> Result<Vec<Option<LiveJob>>, JobStoreError> {
        const PER_TRIP: usize = 200;
        let mut conn = self.pool().get().await?;
        let mut jobs = Vec::with_capacity(job_ids.len());
        for ids in job_ids.chunks(PER_TRIP) {
            let mut pipe = redis::pipe();
            for job_id in ids {
                pipe.cmd("HMGET").arg(self.keys().job(job_id)).arg(&["status", "gen", "last_attempt_ms", "created_ms"]);
            }
            let rows: Vec<[Option<String>; 4]> = pipe.query_async(&mut conn).await?;
            jobs.extend(rows.into_iter().map(|[status, generation, last_attempt, created]| {
                let status = crate::JobStatus::parse(status.as_deref()?)?;
                let generation = generation.and_then(|text| text.parse::<u64>().ok()).unwrap_or(0);
                let last_attempt_ms = last_attempt.or(created).and_then(|text| text.parse::<i64>().ok());
                Some(LiveJob {
                    status,
                    attempts: generation + 1,
                    last_attempt_at: last_attempt_ms
                        .map(millrace_common::time::rfc3339_from_millis)
                        .unwrap_or_default(),
                })
            }));
        }
        Ok(jobs)
    }

    /// Reopens a run for `items` more items (a retry of its failed ones): `pending` goes up by
    /// that many and a `done` run is `running` again (a cancelled one stays cancelled), with a
    /// full retention again. Returns false if the run is unknown or cancelled.
    pub async fn reopen_run(&self, run_id: &str, items: u64) -> Result<bool, JobStoreError> {
        let mut conn = self.pool().get().await?;
        let script = redis::Script::new(
            "local status = redis.call('HGET', KEYS[1], 'status')
             if not status or status == 'cancelled' then return 0 end
             redis.call('HINCRBY', KEYS[1], 'pending', ARGV[1])
             redis.call('HSET', KEYS[1], 'status', 'running')
             redis.call('HDEL', KEYS[1], 'finished_ms')
             redis.call('EXPIRE', KEYS[1], ARGV[2])
             return 1",
        );
        let reopened: i64 = script
            .key(self.keys().run(run_id))
            .arg(items)
            .arg(self.retention().as_secs().max(1))
            .invoke_async(&mut conn)
            .await?;
        Ok(reopened == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crawl_spec_takes_its_defaults_and_refuses_unknown_fields() {
        let spec: CrawlSpec = serde_json::from_value(serde_json::json!({"url": "http://a.example/"})).unwrap();
        assert_eq!(
            (spec.max_pages, spec.max_depth, spec.scope, spec.sitemap, spec.include.len()),
            (100, 3, CrawlScope::Host, true, 0)
        );
        let spec: CrawlSpec =
            serde_json::from_value(serde_json::json!({"url": "u", "scope": "prefix", "sitemap": false})).unwrap();
        assert_eq!((spec.scope, spec.sitemap), (CrawlScope::Prefix, false));
        assert!(serde_json::from_value::<CrawlSpec>(serde_json::json!({"url": "u", "depth": 2})).is_err());
    }

    #[test]
    fn run_state_reads_its_hash() {
        let fields: HashMap<String, String> = [
            ("tenant", "acme"),
            ("collection", "web"),
            ("status", "running"),
            ("pending", "3"),
            ("open", "2"),
            ("pages", "5"),
            ("crawl", r#"{"url":"http://a.example/"}"#),
            ("created_ms", "1000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let state = RunState::from_hash("r", &fields).unwrap();
        assert_eq!((state.status, state.pending, state.open, state.pages), (RunStatus::Running, 3, 2, 5));
        assert_eq!(state.crawl.unwrap().url, "http://a.example/");
        assert!(RunState::from_hash("r", &HashMap::new()).is_none());
    }
}
