//! The crawler's two steps on the job store for one page of a crawl, each idempotent so that a
//! redelivered crawl entry makes no second job and counts nothing twice:
//!
//! 1. [`JobStore::create_page_job`]: the page's job, with the page's marker (URL → job id in
//!    `Keys::run_pages`) and the run's `pages` count in the same transaction, under the run's
//!    `max_pages`;
//! 2. [`JobStore::page_done`]: the new links join the frontier, a page not taken is recorded
//!    in the history, and the page leaves the run's `pending`, once (`Keys::run_done`).

use std::sync::LazyLock;

use millrace_common::time::now_millis;
use redis::AsyncCommands as _;

use crate::entry::CrawlEntry;
use crate::scripts::CRAWL_PAGE;
use crate::{Job, JobStore, JobStoreError, NewJob};

/// Sets a job record's `http_status` only if the record exists (HSET would make a stub of an
/// expired one).
static SET_HTTP_STATUS: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'http_status', ARGV[1]) end return 0",
    )
});

/// Transactions retried at most when other pages of the run are taken meanwhile.
const MAX_ATTEMPTS: usize = 100;

/// What [`JobStore::create_page_job`] did.
#[derive(Debug, Clone)]
pub enum PageJob {
    /// The page's job, made now.
    Created(Box<Job>),
    /// An earlier delivery made it: its id.
    Existing(String),
    /// The run has taken `max_pages` pages already: no job.
    Full,
}

/// How the crawler is done with a page.
#[derive(Debug, Clone, Default)]
pub struct PageOutcome {
    /// Why the page was not taken (recorded as `page_skipped`); `None` if taken, or not to be
    /// recorded (a cancelled run).
    pub skipped: Option<String>,
    pub http_status: Option<u16>,
    /// New pages for the frontier: normalised URL and depth. Those the run has seen are dropped.
    pub links: Vec<(String, u32)>,
}

/// What [`JobStore::page_done`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageDone {
    /// Counted; `true` if this finished the run.
    Counted(bool),
    /// An earlier delivery already did it: nothing changed.
    AlreadyDone,
    /// The run is gone (expired).
    UnknownRun,
}

impl JobStore {
    /// Creates the job of page `url` of run `run_id` (`new.run_id` should name it too) unless
    /// an earlier delivery did, or the run already has `max_pages` pages. WATCHes the run's
    /// page markers, which every page taken writes, so two pages taken at once cannot both be
    /// the last one allowed.
    pub async fn create_page_job(
        &self,
        run_id: &str,
        url: &str,
        max_pages: u64,
        new: NewJob,
    ) -> Result<PageJob, JobStoreError> {
        let pages_key = self.keys().run_pages(run_id);
        let run_key = self.keys().run(run_id);
        let ttl = self.retention().as_secs().max(1) as i64;
        let mut conn = self.pool().get().await?;
        for _ in 0..MAX_ATTEMPTS {
            redis::cmd("WATCH").arg(&pages_key).query_async::<()>(&mut conn).await?;
            let existing: Option<String> = conn.hget(&pages_key, url).await?;
            if let Some(job_id) = existing {
                redis::cmd("UNWATCH").query_async::<()>(&mut conn).await?;
                return Ok(PageJob::Existing(job_id));
            }
            let pages: Option<u64> = conn.hget(&run_key, "pages").await?;
            if pages.unwrap_or(0) >= max_pages {
                redis::cmd("UNWATCH").query_async::<()>(&mut conn).await?;
                return Ok(PageJob::Full);
            }
            let (mut pipe, fields) = self.create_pipe(&mut conn, &new).await?;
            let job_id =
                fields.iter().find(|(name, _)| *name == "job_id").map(|(_, id)| id.clone()).unwrap_or_default();
            pipe.hset(&pages_key, url, &job_id)
                .ignore()
                .expire(&pages_key, ttl)
                .ignore()
                .hincr(&run_key, "pages", 1)
                .ignore();
            // EXEC answers nil when another page was taken meanwhile: try again.
            if pipe.query_async::<Option<()>>(&mut conn).await?.is_some() {
                return Ok(PageJob::Created(Box::new(Self::new_job(fields)?)));
            }
        }
        Err(JobStoreError::Redis(redis::RedisError::from((
            redis::ErrorKind::Client,
            "too many concurrent page takes on one run",
        ))))
    }

    /// Whether the crawler is already done with page `url` of run `run_id`.
    pub async fn page_is_done(&self, run_id: &str, url: &str) -> Result<bool, JobStoreError> {
        let mut conn = self.pool().get().await?;
        Ok(conn.sismember(self.keys().run_done(run_id), url).await?)
    }

    /// Ends the crawler's work on `entry`'s page, once (see the module).
    pub async fn page_done(&self, entry: &CrawlEntry, outcome: &PageOutcome) -> Result<PageDone, JobStoreError> {
        let mut conn = self.pool().get().await?;
        let keys = self.keys();
        let mut invocation = CRAWL_PAGE.prepare_invoke();
        invocation
            .key(keys.run(&entry.run_id))
            .key(keys.run_seen(&entry.run_id))
            .key(keys.run_done(&entry.run_id))
            .key(keys.crawl_stream())
            .key(keys.history_stream())
            .arg(&entry.url)
            .arg(now_millis())
            .arg(&entry.run_id)
            .arg(&entry.tenant)
            .arg(&entry.collection)
            .arg(outcome.skipped.as_deref().unwrap_or(""))
            .arg(outcome.http_status.map(|status| status.to_string()).unwrap_or_default())
            .arg(entry.depth);
        for (url, depth) in &outcome.links {
            invocation.arg(url).arg(depth);
        }
        let result: i64 = invocation.invoke_async(&mut conn).await?;
        Ok(match result {
            -2 => PageDone::UnknownRun,
            -3 => PageDone::AlreadyDone,
            finished => PageDone::Counted(finished == 1),
        })
    }

    /// Marks `urls` seen by run `run_id` (the start page, before it is fetched): they will not
    /// join the frontier again.
    pub async fn mark_seen(&self, run_id: &str, urls: &[&str]) -> Result<(), JobStoreError> {
        let mut conn = self.pool().get().await?;
        let key = self.keys().run_seen(run_id);
        let _: i64 = conn.sadd(&key, urls).await?;
        let _: bool = conn.expire(&key, self.retention().as_secs().max(1) as i64).await?;
        Ok(())
    }

    /// Records the HTTP status of the fetch of a job submitted by URL on its record (`http_status`),
    /// if the record still exists.
    pub async fn set_http_status(&self, job_id: &str, status: u16) -> Result<(), JobStoreError> {
        let mut conn = self.pool().get().await?;
        let _: i64 = SET_HTTP_STATUS.key(self.keys().job(job_id)).arg(status).invoke_async(&mut conn).await?;
        Ok(())
    }
}
