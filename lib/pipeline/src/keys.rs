//! Every Redis key and stream name, in one place. Job-scoped keys carry the job id as a hash
//! tag (`{…}`) so that a Redis Cluster keeps one job's keys on one shard.

use crate::Stage;

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    pub fn stream(&self, stage: Stage) -> String {
        format!("{}:stream:{}", self.prefix, stage.name())
    }

    pub fn dead_letters(&self, stage: Stage) -> String {
        format!("{}:dlq:{}", self.prefix, stage.name())
    }

    pub fn job(&self, job_id: &str) -> String {
        format!("{}:job:{{{job_id}}}", self.prefix)
    }

    /// A job's progress events (a stream, written by the job's scripts; see `events`).
    pub fn job_events(&self, job_id: &str) -> String {
        format!("{}:job:{{{job_id}}}:events", self.prefix)
    }

    pub fn content(&self, job_id: &str) -> String {
        format!("{}:content", self.job(job_id))
    }

    /// Which halves of each batch are done and which batches are enqueued/stored.
    pub fn join(&self, job_id: &str) -> String {
        format!("{}:join", self.job(job_id))
    }

    pub fn batch(&self, job_id: &str, batch: u32) -> String {
        format!("{}:batch:{batch}", self.job(job_id))
    }

    pub fn metadata_result(&self, job_id: &str, batch: u32) -> String {
        format!("{}:metadata:{batch}", self.job(job_id))
    }

    pub fn embeddings_result(&self, job_id: &str, batch: u32) -> String {
        format!("{}:embeddings:{batch}", self.job(job_id))
    }

    /// Every job, scored by creation time (ms).
    pub fn jobs_index(&self) -> String {
        format!("{}:jobs", self.prefix)
    }

    /// A tenant's jobs, scored by creation time (ms): what `GET /v1/jobs` lists for it.
    pub fn tenant_jobs(&self, tenant_id: &str) -> String {
        format!("{}:jobs:tenant:{tenant_id}", self.prefix)
    }

    /// Jobs not yet finished per tenant (a hash: tenant → count), kept by the scripts that keep
    /// [`Keys::job_status_counts`] (create, `FINISH`, a retry that reopens a job), for the
    /// per-tenant admission bound.
    pub fn tenant_backlog(&self) -> String {
        format!("{}:jobs:tenants", self.prefix)
    }

    /// Jobs not yet finished, for admission control.
    pub fn active_jobs(&self) -> String {
        format!("{}:jobs:active", self.prefix)
    }

    /// Recently finished jobs, scored by finish time (ms), for throughput estimates.
    pub fn finished_jobs(&self) -> String {
        format!("{}:jobs:finished", self.prefix)
    }

    /// Jobs by status, kept by the scripts that change a job's status: how many are `queued`
    /// and `running` now, and how many ever became `completed`, `failed` or `cancelled`.
    pub fn job_status_counts(&self) -> String {
        format!("{}:jobs:status", self.prefix)
    }

    /// The cached embedding of a text (by its content hash) under a model, shared by all jobs.
    pub fn embedding_cache(&self, model: &str, content_hash: &str) -> String {
        format!("{}:embcache:{model}:{content_hash}", self.prefix)
    }

    /// LLM spend of one UTC day (`YYYY-MM-DD`), across every gateway replica: a hash of
    /// `usd`, and `usd:{model}`, `prompt_tokens:{model}`, `completion_tokens:{model}`.
    pub fn llm_spend(&self, day: &str) -> String {
        format!("{}:llm:spend:{day}", self.prefix)
    }

    /// The shared rate limiter of one gateway upstream.
    pub fn llm_limiter(&self, upstream: &str) -> String {
        format!("{}:llm:limit:{upstream}", self.prefix)
    }

    /// Version counter of a document.
    pub fn document_version(&self, tenant_id: &str, document_id: &str) -> String {
        format!("{}:docver:{tenant_id}:{document_id}", self.prefix)
    }

    /// A document's jobs of the retention period, scored by version: a delete cancels those
    /// still running.
    pub fn document_jobs(&self, tenant_id: &str, document_id: &str) -> String {
        format!("{}:docjobs:{tenant_id}:{document_id}", self.prefix)
    }

    /// What happened to jobs and runs, for the durable history (a stream of
    /// [`crate::entry::HistoryEntry`], read by the ingestion service, which keeps jobs and runs
    /// in PostgreSQL): written by job creation, `FINISH`, a retry that reopens a job, and the
    /// crawler.
    pub fn history_stream(&self) -> String {
        format!("{}:stream:history", self.prefix)
    }

    /// Pages of crawls to fetch (a stream of [`crate::entry::CrawlEntry`], read by the chunking
    /// service's crawler).
    pub fn crawl_stream(&self) -> String {
        format!("{}:stream:crawl", self.prefix)
    }

    /// A run's live state (a hash; see [`crate::run`] for its fields), kept while the run is
    /// going and for the retention period after.
    pub fn run(&self, run_id: &str) -> String {
        format!("{}{{{run_id}}}", self.run_prefix())
    }

    /// What [`Keys::run`] puts before `{run_id}`: the scripts that find a job's run from its
    /// record (`FINISH`) build the key from it.
    pub fn run_prefix(&self) -> String {
        format!("{}:run:", self.prefix)
    }

    /// The normalised URLs a crawl has already taken into its frontier (a set), for dedup.
    pub fn run_seen(&self, run_id: &str) -> String {
        format!("{}:seen", self.run(run_id))
    }

    /// The pages a crawl took, normalised URL → job id (a hash): written with the job, in the
    /// same transaction, so a redelivered page finds its job instead of making a second one.
    pub fn run_pages(&self, run_id: &str) -> String {
        format!("{}:pages", self.run(run_id))
    }

    /// The crawl entries (normalised URLs) the crawler has finished with (a set), so that a
    /// redelivered entry is not counted twice.
    pub fn run_done(&self, run_id: &str) -> String {
        format!("{}:done", self.run(run_id))
    }

    /// A crawl's cached robots.txt of one origin (`http://host:port`).
    pub fn run_robots(&self, run_id: &str, origin: &str) -> String {
        format!("{}:robots:{origin}", self.run(run_id))
    }
}
