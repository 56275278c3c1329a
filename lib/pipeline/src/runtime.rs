//! What a stage service adds to the common [`Host`]: its stream worker (gated on its breaker
//! toward the gateway), its stats in `Admin.Stats`, and the helpers its handler shares.

use std::sync::Arc;

use millrace_common::host::Consumes;
use millrace_common::{ApiError, Host, ServiceConfig, Settings, redis_conn};
use millrace_proto::ChunkBatch;
use millrace_proto::{BreakerStats, StatsResponse};
use millrace_resilience::CircuitBreaker;
use millrace_streams::{Handler, HandlerError, Message, StreamWorker, WorkerConfig, queue_stats};
use tonic::service::Routes;

use crate::{BatchRef, EntryRef, Job, JobStore, Keys, Stage};

/// The name of a stage's breaker toward the llm-gateway. A stage whose stats show a breaker of
/// this name calls the gateway (the LLM extractor, the gateway embedder), so its jobs need the
/// LLM budget: the ingestion service reads it to know whether a spent budget stops new jobs.
pub const GATEWAY_BREAKER: &str = "llm-gateway";

/// What every stage opens before its handler exists: its ports, Redis and the job store.
pub struct StageBase {
    pub stage: Stage,
    pub host: Host,
    pub client: redis::Client,
    pub pool: deadpool_redis::Pool,
    pub jobs: JobStore,
}

impl StageBase {
    /// Binds both ports first, so a taken port fails before anything else starts.
    pub async fn open(stage: Stage, config: &ServiceConfig) -> std::io::Result<Self> {
        let host = Host::bind(stage.name(), config).await?;
        let client = redis_conn::client(&config.redis).map_err(std::io::Error::other)?;
        let pool = redis_conn::pool(&config.redis, 16).map_err(std::io::Error::other)?;
        let jobs = JobStore::new(pool.clone(), Keys::new(config.key_prefix.clone()), config.job_retention)
            .with_failed_payload_retention(config.failed_payload_retention);
        Ok(Self { stage, host, client, pool, jobs })
    }

    /// The service around `handler`, ready when Redis answers (add more checks with `with_check`).
    pub fn into_service<H: Handler>(self, worker: WorkerConfig, handler: H) -> StageService<H> {
        StageService {
            stage: self.stage,
            keys: self.jobs.keys().clone(),
            worker,
            host: self.host.with_redis_check(self.pool.clone()),
            client: self.client,
            pool: self.pool,
            handler,
            breaker: None,
            extra_worker: None,
        }
    }
}

/// A second stream worker's run, started with the stage's.
type ExtraWorker = Box<
    dyn FnOnce(
            tokio_util::sync::CancellationToken,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), millrace_streams::StreamError>> + Send>>
        + Send,
>;

/// A stage service: its stream worker on a host.
pub struct StageService<H> {
    stage: Stage,
    keys: Keys,
    worker: WorkerConfig,
    host: Host,
    client: redis::Client,
    pool: deadpool_redis::Pool,
    handler: H,
    /// The stage's breaker toward its downstream: while open, the worker stops pulling.
    breaker: Option<CircuitBreaker>,
    /// Another stream this service consumes (the chunking service's crawl stream).
    extra_worker: Option<ExtraWorker>,
}

/// The stream-worker settings of a stage, read from `MILLRACE_*` variables.
pub fn worker_config(
    settings: &Settings,
    config: &ServiceConfig,
    stage: Stage,
    default_concurrency: usize,
) -> Result<WorkerConfig, millrace_common::ConfigError> {
    let keys = Keys::new(config.key_prefix.clone());
    WorkerConfig::from_settings(
        settings,
        keys.stream(stage),
        stage.name().to_owned(),
        keys.dead_letters(stage),
        config.consumer_name.clone(),
        config.shutdown_deadline,
        default_concurrency,
    )
}

/// What a stage's `--describe` says it consumes.
pub fn consumes(worker: &WorkerConfig) -> Consumes {
    Consumes {
        stream: worker.stream.clone(),
        group: worker.group.clone(),
        dead_letters: worker.dead_letter_stream.clone(),
    }
}

/// Implements `Describe` for a stage's `Config` (a struct with `service: ServiceConfig` and
/// `worker: WorkerConfig`): its service settings and the stream its worker consumes.
#[macro_export]
macro_rules! describe_stage {
    ($config:ty) => {
        impl millrace_common::host::Describe for $config {
            fn described(&self) -> (&millrace_common::ServiceConfig, Option<millrace_common::host::Consumes>) {
                (&self.service, Some($crate::runtime::consumes(&self.worker)))
            }
        }
    };
}

impl<H: Handler> StageService<H> {
    /// Serves these gRPC services besides Admin, health and reflection.
    pub fn with_grpc(mut self, grpc: Routes) -> Self {
        self.host = self.host.with_grpc(grpc);
        self
    }

    /// Gates the stage's reads on `breaker` (toward the downstream its handler calls) and
    /// reports it in `Admin.Stats`.
    pub fn with_breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// Also consumes another stream with its own consumer group and handler (same delivery
    /// rules: ack after the handler, reclaim, dead letters), started and drained with the
    /// stage's worker. Not gated by the stage's breaker.
    pub fn with_worker<H2: Handler>(mut self, worker: WorkerConfig, handler: H2) -> Self {
        let worker = StreamWorker::new(worker, self.client.clone(), self.pool.clone(), handler);
        self.extra_worker = Some(Box::new(move |shutdown| Box::pin(async move { worker.run(shutdown).await })));
        self
    }

    /// Adds a readiness check (a dependency that must answer before the stage takes traffic).
    pub fn with_check<F, Fut>(mut self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        self.host = self.host.with_check(name, check);
        self
    }

    /// The host, with the stream worker as its work: the worker stops pulling at the signal and
    /// drains its in-flight entries within the shutdown deadline while the ports stay open.
    pub fn into_host(self) -> Host {
        let service: &'static str = self.stage.name();
        let mut worker = StreamWorker::new(self.worker, self.client, self.pool.clone(), self.handler);
        if let Some(breaker) = &self.breaker {
            worker = worker.with_gate(Arc::new(breaker.clone()));
        }
        let handle = worker.handle();
        let (pool, keys, stage, breaker) = (self.pool, self.keys, self.stage, self.breaker);
        let extra_worker = self.extra_worker;
        millrace_common::metrics::describe(millrace_resilience::metrics::METRICS);
        self.host
            .with_admin(move || {
                let pool = pool.clone();
                let keys = keys.clone();
                let breaker = breaker.clone();
                let (limit, in_use) = (handle.limit(), handle.in_use());
                async move {
                    let mut stats = stage_stats(&pool, &keys, service, stage, limit, in_use).await?;
                    if let Some(breaker) = breaker {
                        add_breaker(&mut stats, &breaker);
                    }
                    Ok(stats)
                }
            })
            .with_work(move |shutdown| async move {
                let result = match extra_worker {
                    Some(extra) => {
                        let (stage, extra) = tokio::join!(worker.run(shutdown.clone()), extra(shutdown));
                        stage.and(extra)
                    }
                    None => worker.run(shutdown).await,
                };
                result.map_err(std::io::Error::other)
            })
    }
}

/// Shows a stage's breaker in its stats, as a state and as `limits_json` (its full snapshot).
fn add_breaker(stats: &mut StatsResponse, breaker: &CircuitBreaker) {
    let snapshot = breaker.snapshot();
    stats.breakers.push(BreakerStats { name: snapshot.name.clone(), state: snapshot.state.label().to_owned() });
    stats.limits_json = serde_json::json!({ "breakers": [snapshot] }).to_string();
}

/// `millrace.v1.Admin/Stats` of a service whose queue is `stage`'s stream.
pub async fn stage_stats(
    pool: &deadpool_redis::Pool,
    keys: &Keys,
    service: &str,
    stage: Stage,
    concurrency_limit: usize,
    concurrency_in_use: usize,
) -> Result<StatsResponse, ApiError> {
    let mut conn = pool.get().await?;
    let queue = queue_stats(&mut conn, &keys.stream(stage), stage.name(), &keys.dead_letters(stage))
        .await
        .map_err(ApiError::from)?;
    Ok(StatsResponse {
        service: service.to_owned(),
        concurrency_limit: concurrency_limit as u32,
        concurrency_in_use: concurrency_in_use as u32,
        queues: vec![queue],
        ..StatsResponse::default()
    })
}

/// The batch a stream entry points at, with its job, if the job is still running and the entry
/// belongs to its current attempt. `None` means there is nothing to do (the job finished, its
/// record expired, or a dead-letter retry replaced the entry): acknowledge. An entry or a batch
/// payload that names another tenant than the job's record is refused (fatal): the stage acts
/// only for the tenant the job was submitted in.
pub async fn running_batch(
    jobs: &JobStore,
    message: &Message,
) -> Result<Option<(BatchRef, Job, ChunkBatch)>, HandlerError> {
    let entry = BatchRef::from_fields(&message.fields).map_err(HandlerError::Fatal)?;
    let Some(job) = jobs.get(&entry.job_id).await? else { return Ok(None) };
    if job.status.is_terminal() || entry.is_stale(&job) {
        tracing::debug!(job_id = %entry.job_id, batch = entry.batch, status = job.status.as_str(), generation = entry.generation, "job finished or retried; skipping batch");
        return Ok(None);
    }
    if entry.foreign(&job) {
        return Err(foreign_entry(&entry.tenant, &job));
    }
    let Some(chunks) = jobs.load_batch(&entry.job_id, entry.batch).await? else {
        finished_without_payload(jobs, &entry.job_id, &format!("batch {} payload", entry.batch)).await?;
        return Ok(None);
    };
    if !chunks.tenant_id.is_empty() && chunks.tenant_id != job.tenant_id {
        return Err(HandlerError::Fatal(format!(
            "batch {} payload names tenant {:?}, its job's record {:?}",
            entry.batch, chunks.tenant_id, job.tenant_id
        )));
    }
    Ok(Some((entry, job, chunks)))
}

/// The error for an entry whose tenant is not its job's (see [`EntryRef::foreign`]).
pub fn foreign_entry(tenant: &str, job: &Job) -> HandlerError {
    tracing::error!(job_id = %job.job_id, entry_tenant = tenant, job_tenant = %job.tenant_id, "stream entry names another tenant than its job; refused");
    HandlerError::Fatal(format!("the entry names tenant {tenant:?}, its job's record {:?}", job.tenant_id))
}

/// A payload (`what`) of a job that was running a moment ago is missing. That is expected when
/// the job finished since (a cancel drops its payloads at once) or its record expired: `Ok`
/// with the job as it is now (if its record is there), and the entry is done. Otherwise the
/// payload expired or was lost, which fails the job.
pub async fn finished_without_payload(jobs: &JobStore, job_id: &str, what: &str) -> Result<Option<Job>, HandlerError> {
    match jobs.get(job_id).await? {
        None => Ok(None),
        Some(job) if job.status.is_terminal() => Ok(Some(job)),
        Some(_) => Err(HandlerError::Fatal(format!("{what} is missing"))),
    }
}

/// Marks the job of a stream entry failed at `stage`, when the entry is given up on (unless a
/// dead-letter retry replaced the entry's attempt meanwhile). An entry naming another tenant
/// than its job's fails nothing: it was not written for that job.
pub async fn fail_job(jobs: &JobStore, message: &Message, stage: Stage, reason: &str) {
    let entry = match EntryRef::from_fields(&message.fields) {
        Ok(entry) => entry,
        Err(err) => {
            tracing::warn!(error = %err, "a dead-lettered entry names no job");
            return;
        }
    };
    if !entry.tenant.is_empty()
        && let Ok(Some(job)) = jobs.get(&entry.job_id).await
        && entry.foreign(&job)
    {
        tracing::warn!(job_id = %entry.job_id, "a foreign entry was given up on; its job is left as it is");
        return;
    }
    if let Err(err) = jobs.fail(&entry, stage, reason).await {
        tracing::warn!(job_id = %entry.job_id, error = %err, "could not mark job failed");
    }
}
