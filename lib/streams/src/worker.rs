//! The consumer loop: read with backpressure (and behind an optional gate), handle, acknowledge,
//! defer, reclaim, dead-letter, trim.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use millrace_common::telemetry::context;
use redis::aio::MultiplexedConnection;
use redis::streams::{
    StreamAutoClaimReply, StreamClaimReply, StreamInfoGroupsReply, StreamPendingCountReply, StreamPendingReply,
    StreamReadReply,
};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug, info, warn};

use crate::{Gate, HandlerError, Message, WorkerConfig};

/// Entries asked for in one read, at most (and never more than free permits).
const MAX_READ: usize = 64;

/// How often a gated worker with no room asks its gate again even if no entry finished, in case
/// the gate let more in on its own (e.g. a breaker that closed).
const GATE_RECHECK: Duration = Duration::from_millis(100);

/// What a stage does with one entry. Handlers must be idempotent: an entry can be delivered
/// more than once (a worker killed after its effects but before its acknowledgement).
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, message: &Message) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Called when the entry is given up on (fatal error or too many deliveries), before it
    /// moves to the dead-letter stream: the place to mark its job failed. May run more than once.
    fn give_up(&self, message: &Message, reason: &str) -> impl Future<Output = ()> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis pool: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
}

/// Creates the consumer group (from the start of the stream, creating the stream if needed).
pub async fn ensure_group<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
    stream: &str,
    group: &str,
) -> redis::RedisResult<()> {
    let created: redis::RedisResult<()> =
        redis::cmd("XGROUP").arg("CREATE").arg(stream).arg(group).arg("0").arg("MKSTREAM").query_async(conn).await;
    match created {
        Err(err) if err.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// A cheap view of a running worker, for stats.
#[derive(Clone)]
pub struct WorkerHandle {
    in_flight: Arc<AtomicUsize>,
    limit: usize,
}

impl WorkerHandle {
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Entries being handled now. Not the permits taken: the read loop holds every free
    /// permit while it waits for entries, so an idle worker would look full.
    pub fn in_use(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// Counts one entry in flight for as long as it lives (a task aborted at shutdown included).
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn start(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct StreamWorker<H> {
    inner: Inner<H>,
}

struct Inner<H> {
    config: WorkerConfig,
    client: redis::Client,
    pool: deadpool_redis::Pool,
    handler: H,
    permits: Arc<Semaphore>,
    /// Entries being handled now (see [`WorkerHandle::in_use`]).
    in_flight: Arc<AtomicUsize>,
    errors_key: String,
    gate: Option<Arc<dyn Gate>>,
    /// Whether reads are paused by the gate, so that a pause is logged once, not per attempt.
    paused: AtomicBool,
    /// Woken when an entry finishes, for a gated read loop waiting for room.
    finished: Notify,
}

impl<H: Handler> StreamWorker<H> {
    pub fn new(config: WorkerConfig, client: redis::Client, pool: deadpool_redis::Pool, handler: H) -> Self {
        let permits = Arc::new(Semaphore::new(config.concurrency));
        let errors_key = format!("{}:errors", config.stream);
        Self {
            inner: Inner {
                config,
                client,
                pool,
                handler,
                permits,
                in_flight: Arc::new(AtomicUsize::new(0)),
                errors_key,
                gate: None,
                paused: AtomicBool::new(false),
                finished: Notify::new(),
            },
        }
    }

    /// Pulls entries only when `gate` allows it, and only as many as it allows (see [`Gate`]).
    /// Without a gate the concurrency permits alone decide.
    pub fn with_gate(mut self, gate: Arc<dyn Gate>) -> Self {
        self.inner.gate = Some(gate);
        self
    }

    pub fn handle(&self) -> WorkerHandle {
        WorkerHandle { in_flight: self.inner.in_flight.clone(), limit: self.inner.config.concurrency }
    }

    /// Runs until `shutdown`, then waits (up to the drain deadline) for in-flight entries.
    /// Entries still in flight after that stay pending and are reclaimed by other replicas.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), StreamError> {
        let inner = Arc::new(self.inner);
        // Redis may come up after this service: wait for it rather than exit.
        let mut backoff = Duration::from_millis(200);
        loop {
            match inner.create_group().await {
                Ok(()) => break,
                Err(err) => {
                    warn!(stream = %inner.config.stream, error = %err, "cannot create consumer group yet; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        info!(stream = %inner.config.stream, consumer = %inner.config.consumer, "stream worker started");
        if inner.gate.is_some() {
            metrics::gauge!(crate::metrics::PAUSED, "stage" => inner.config.group.clone()).set(0.0);
        }
        let background = shutdown.child_token();
        tokio::spawn(inner.clone().trim_loop(background.clone()));
        crate::metrics::start(&inner.config, inner.pool.clone(), background.clone());

        inner.drain_own_pending(&shutdown).await;
        inner.read_loop(&shutdown).await;
        background.cancel();

        let limit = inner.config.concurrency as u32;
        match tokio::time::timeout(inner.config.drain_deadline, inner.permits.acquire_many(limit)).await {
            Ok(_) => info!(stream = %inner.config.stream, "stream worker drained"),
            Err(_) => warn!(
                stream = %inner.config.stream,
                in_flight = inner.config.concurrency - inner.permits.available_permits(),
                "drain deadline passed; leaving in-flight entries to be reclaimed"
            ),
        }
        Ok(())
    }
}

impl<H: Handler> Inner<H> {
    async fn create_group(&self) -> Result<(), StreamError> {
        let mut conn = self.pool.get().await?;
        Ok(ensure_group(&mut conn, &self.config.stream, &self.config.group).await?)
    }

    /// Waits until the gate lets entries in and its answer leaves room beside the entries in
    /// flight; returns how many may be read now, or `None` on shutdown. Without a gate, the
    /// permits alone decide (`take_permits` waits for them).
    async fn room(&self, shutdown: &CancellationToken) -> Option<usize> {
        let Some(gate) = &self.gate else { return Some(MAX_READ) };
        loop {
            if shutdown.is_cancelled() {
                return None;
            }
            let mut ready = gate.ready();
            let allowed = match (&mut ready).now_or_never() {
                Some(allowed) => allowed,
                None => {
                    self.set_paused(true);
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => return None,
                        allowed = ready => allowed,
                    }
                }
            };
            self.set_paused(allowed == 0);
            let free = self.permits.available_permits();
            let in_flight = self.config.concurrency.saturating_sub(free);
            let room = allowed.saturating_sub(in_flight).min(free).min(MAX_READ);
            if room > 0 {
                return Some(room);
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return None,
                _ = self.finished.notified() => {}
                _ = tokio::time::sleep(GATE_RECHECK) => {}
            }
        }
    }

    fn set_paused(&self, paused: bool) {
        if self.paused.swap(paused, Ordering::Relaxed) == paused {
            return;
        }
        let value = if paused { 1.0 } else { 0.0 };
        metrics::gauge!(crate::metrics::PAUSED, "stage" => self.config.group.clone()).set(value);
        if paused {
            info!(stream = %self.config.stream, "pausing reads: downstream unavailable");
        } else {
            info!(stream = %self.config.stream, "resuming reads: downstream available");
        }
    }

    /// Waits for one free permit, then takes as many more as are free (up to `max`).
    async fn take_permits(&self, shutdown: &CancellationToken, max: usize) -> Option<Vec<OwnedSemaphorePermit>> {
        let first = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return None,
            permit = self.permits.clone().acquire_owned() => permit.ok()?,
        };
        let mut permits = vec![first];
        while permits.len() < max {
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        Some(permits)
    }

    /// A restarted consumer first finishes what it had claimed before it stopped.
    async fn drain_own_pending(self: &Arc<Self>, shutdown: &CancellationToken) {
        let mut after = "-".to_owned();
        loop {
            let Some(room) = self.room(shutdown).await else { return };
            let Some(mut permits) = self.take_permits(shutdown, room).await else { return };
            match self.claim_own_pending(&after, permits.len()).await {
                Ok(messages) if messages.is_empty() => return,
                Ok(messages) => {
                    info!(stream = %self.config.stream, count = messages.len(), "resuming own pending entries");
                    for (message, complete) in messages {
                        after = format!("({}", message.id);
                        if let Some(permit) = permits.pop() {
                            tokio::spawn(self.clone().process(message, complete, permit, shutdown.clone()));
                        }
                    }
                }
                Err(err) => {
                    warn!(stream = %self.config.stream, error = %err, "cannot list own pending entries; skipping to new ones");
                    return;
                }
            }
        }
    }

    async fn claim_own_pending(&self, after: &str, count: usize) -> Result<Vec<(Message, bool)>, StreamError> {
        let mut conn = self.pool.get().await?;
        let pending: StreamPendingCountReply = redis::cmd("XPENDING")
            .arg(&self.config.stream)
            .arg(&self.config.group)
            .arg(after)
            .arg("+")
            .arg(count)
            .arg(&self.config.consumer)
            .query_async(&mut conn)
            .await?;
        if pending.ids.is_empty() {
            return Ok(Vec::new());
        }
        let claimed: StreamClaimReply = redis::cmd("XCLAIM")
            .arg(&self.config.stream)
            .arg(&self.config.group)
            .arg(&self.config.consumer)
            .arg(0)
            .arg(pending.ids.iter().map(|p| p.id.as_str()).collect::<Vec<_>>())
            .query_async(&mut conn)
            .await?;
        Ok(claimed
            .ids
            .into_iter()
            .map(|entry| {
                let delivered = pending.ids.iter().find(|p| p.id == entry.id).map_or(0, |p| p.times_delivered as u64);
                Message::from_redis(entry.id, entry.map, delivered + 1)
            })
            .collect())
    }

    /// Reads new entries, asking only for as many as there are free permits.
    async fn read_loop(self: &Arc<Self>, shutdown: &CancellationToken) {
        let mut conn: Option<MultiplexedConnection> = None;
        let mut backoff = Duration::from_millis(100);
        let mut next_reclaim = Instant::now();
        loop {
            let Some(room) = self.room(shutdown).await else { return };
            let Some(mut permits) = self.take_permits(shutdown, room).await else { return };
            // Reclaiming shares this loop (and its permits) with reading, so neither starves the other.
            if Instant::now() >= next_reclaim {
                if let Err(err) = self.reclaim(&mut permits, shutdown).await {
                    warn!(stream = %self.config.stream, error = %err, "reclaim failed");
                }
                next_reclaim = Instant::now() + self.config.reclaim_interval;
                if permits.is_empty() {
                    continue;
                }
            }
            let block = self
                .config
                .block
                .min(next_reclaim.saturating_duration_since(Instant::now()))
                .max(Duration::from_millis(1));
            let connection = match conn.as_mut() {
                Some(connection) => connection,
                None => match millrace_common::redis_conn::blocking_connection(&self.client).await {
                    Ok(connection) => conn.insert(connection),
                    Err(err) => {
                        warn!(stream = %self.config.stream, error = %err, "cannot connect to redis; retrying");
                        drop(permits);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                },
            };
            let mut command = redis::cmd("XREADGROUP");
            command
                .arg("GROUP")
                .arg(&self.config.group)
                .arg(&self.config.consumer)
                .arg("COUNT")
                .arg(permits.len())
                .arg("BLOCK")
                .arg(block.as_millis() as u64)
                .arg("STREAMS")
                .arg(&self.config.stream)
                .arg(">");
            let read = command.query_async::<Option<StreamReadReply>>(connection);
            let reply = tokio::select! {
                // A read cut off mid-way leaves the connection in an unknown state: drop it.
                _ = shutdown.cancelled() => return,
                reply = read => reply,
            };
            match reply {
                Ok(reply) => {
                    backoff = Duration::from_millis(100);
                    for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                        let Some(permit) = permits.pop() else { break };
                        let (message, complete) = Message::from_redis(entry.id, entry.map, 1);
                        tokio::spawn(self.clone().process(message, complete, permit, shutdown.clone()));
                    }
                }
                Err(err) => {
                    warn!(stream = %self.config.stream, error = %err, "stream read failed; reconnecting");
                    conn = None;
                    drop(permits);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn process(
        self: Arc<Self>,
        message: Message,
        complete: bool,
        permit: OwnedSemaphorePermit,
        shutdown: CancellationToken,
    ) {
        let _in_flight = InFlight::start(&self.in_flight);
        let span = self.process_span(&message);
        self.handle_entry(&message, complete, &shutdown).instrument(span).await;
        drop(permit);
        self.finished.notify_one();
    }

    /// The consumer span of one delivery, in the trace of the span that enqueued the entry (its
    /// `traceparent` field), with the time the entry waited in the stream as a span before it.
    fn process_span(&self, message: &Message) -> Span {
        let stream = &self.config.stream;
        let span = tracing::info_span!(
            "process",
            otel.name = format!("process {stream}"),
            otel.kind = "consumer",
            otel.status_code = tracing::field::Empty,
            messaging.system = "redis",
            messaging.operation.type = "process",
            messaging.destination.name = stream.as_str(),
            messaging.consumer.group.name = self.config.group.as_str(),
            messaging.message.id = message.id.as_str(),
            millrace.delivery = message.delivery,
            millrace.job.id = message.fields.get("job_id").map(String::as_str),
            millrace.batch = message.fields.get("batch").map(String::as_str),
        );
        if let Some(traceparent) = message.fields.get(context::TRACEPARENT_FIELD) {
            let parent = context::remote_context(traceparent);
            // The wait is recorded once, for the first delivery; a redelivery's wait is the
            // visibility timeout, not the queue.
            if message.delivery == 1
                && let Some(enqueued) = context::stream_entry_time(&message.id)
            {
                context::record_queue_wait(&parent, stream, &self.config.group, enqueued);
            }
            context::set_parent(&span, parent);
        }
        span
    }

    /// `complete`: whether `message.fields` holds the whole entry (see `Message::from_redis`).
    async fn handle_entry(self: &Arc<Self>, message: &Message, complete: bool, shutdown: &CancellationToken) {
        let stage = self.config.group.clone();
        let max = self.config.max_deliveries;
        if message.delivery > max {
            let last =
                self.last_error(&message.id).await.unwrap_or_else(|| "its worker stopped while handling it".into());
            self.dead_letter(message, &format!("gave up after {max} deliveries: {last}")).await;
            return;
        }
        let heartbeat = tokio::spawn(self.clone().heartbeat(message.id.clone()));
        let started = Instant::now();
        let outcome = AssertUnwindSafe(self.handler.handle(message)).catch_unwind().await.unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(HandlerError::Fatal(format!("handler panicked: {what}")))
        });
        metrics::histogram!(crate::metrics::HANDLER_DURATION, "stage" => stage.clone())
            .record(started.elapsed().as_secs_f64());
        if let Err(HandlerError::Deferred(_)) = &outcome {
            // Held a moment (its heartbeat still running) so that a stage without a gate does not
            // spin on an unavailable downstream; at shutdown it goes back at once.
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(self.config.defer_delay) => {}
            }
        }
        heartbeat.abort();
        let outcome_label = match &outcome {
            Ok(()) => "ok",
            Err(HandlerError::Deferred(_)) => "deferred",
            Err(HandlerError::Retry(_)) if message.delivery < max => "retry",
            Err(_) => "dead_letter",
        };
        metrics::counter!(crate::metrics::MESSAGES, "stage" => stage, "outcome" => outcome_label).increment(1);
        if outcome_label == "dead_letter" {
            Span::current().record("otel.status_code", "ERROR");
        }
        match outcome {
            Ok(()) => self.ack(&message.id).await,
            Err(HandlerError::Deferred(reason)) => self.defer(message, complete, &reason).await,
            Err(HandlerError::Fatal(reason)) => self.dead_letter(message, &reason).await,
            Err(HandlerError::Retry(reason)) if message.delivery >= max => {
                self.dead_letter(message, &format!("failed {max} deliveries; last error: {reason}")).await;
            }
            Err(HandlerError::Retry(reason)) => {
                warn!(stream = %self.config.stream, id = %message.id, delivery = message.delivery, error = %reason, "handler failed; will retry after the visibility timeout");
                self.remember_error(&message.id, &reason).await;
            }
        }
    }

    /// Keeps an entry that is still being worked on from looking idle, so it is not reclaimed
    /// from a live worker. JUSTID does not count as a delivery.
    async fn heartbeat(self: Arc<Self>, id: String) {
        let period = self.config.visibility_timeout / 3;
        loop {
            tokio::time::sleep(period).await;
            let Ok(mut conn) = self.pool.get().await else { continue };
            let refreshed: redis::RedisResult<Vec<String>> = redis::cmd("XCLAIM")
                .arg(&self.config.stream)
                .arg(&self.config.group)
                .arg(&self.config.consumer)
                .arg(0)
                .arg(&id)
                .arg("JUSTID")
                .query_async(&mut conn)
                .await;
            if let Err(err) = refreshed {
                debug!(id = %id, error = %err, "heartbeat failed");
            }
        }
    }

    /// Adds to `pipe` what finishes an entry: its acknowledgement and its remembered error.
    fn acknowledge<'p>(&self, pipe: &'p mut redis::Pipeline, id: &str) -> &'p mut redis::Pipeline {
        pipe.cmd("XACK")
            .arg(&self.config.stream)
            .arg(&self.config.group)
            .arg(id)
            .ignore()
            .cmd("HDEL")
            .arg(&self.errors_key)
            .arg(id)
            .ignore()
    }

    async fn ack(&self, id: &str) {
        let result: Result<(), StreamError> = async {
            let mut conn = self.pool.get().await?;
            self.acknowledge(&mut redis::pipe(), id).query_async::<()>(&mut conn).await?;
            Ok(())
        }
        .await;
        if let Err(err) = result {
            // The effects are durable; the entry will be redelivered and handled idempotently.
            warn!(stream = %self.config.stream, id, error = %err, "acknowledge failed");
        }
    }

    /// Puts a deferred entry back at the end of the stream as a new entry, so the delivery it
    /// had does not count: one transaction adds a copy of its fields and acknowledges the old
    /// one (nothing keys on entry ids: handlers key on job and batch ids, and the errors hash
    /// entry goes with the old id). If that fails, the entry stays pending and is reclaimed
    /// after the visibility timeout, as a retried one would be. The copy reaches every group
    /// reading the stream, which is right because each stage has its own stream and group.
    async fn defer(&self, message: &Message, complete: bool, reason: &str) {
        if !complete {
            warn!(stream = %self.config.stream, id = %message.id, reason, "cannot re-queue an entry with non-text fields; it will be retried after the visibility timeout");
            self.remember_error(&message.id, reason).await;
            return;
        }
        let result: Result<String, StreamError> = async {
            let mut conn = self.pool.get().await?;
            let mut add = redis::cmd("XADD");
            add.arg(&self.config.stream).arg("*");
            for (key, value) in &message.fields {
                add.arg(key).arg(value);
            }
            let mut pipe = redis::pipe();
            pipe.atomic().add_command(add);
            let (requeued,): (String,) = self.acknowledge(&mut pipe, &message.id).query_async(&mut conn).await?;
            Ok(requeued)
        }
        .await;
        match result {
            Ok(requeued) => {
                debug!(stream = %self.config.stream, id = %message.id, requeued, reason, "deferred entry: downstream unavailable; re-queued at the end of the stream");
            }
            Err(err) => {
                warn!(stream = %self.config.stream, id = %message.id, error = %err, "re-queueing a deferred entry failed; it will be retried after the visibility timeout");
                self.remember_error(&message.id, reason).await;
            }
        }
    }

    async fn remember_error(&self, id: &str, reason: &str) {
        if let Ok(mut conn) = self.pool.get().await {
            let _: redis::RedisResult<()> =
                redis::cmd("HSET").arg(&self.errors_key).arg(id).arg(reason).query_async(&mut conn).await;
        }
    }

    async fn last_error(&self, id: &str) -> Option<String> {
        let mut conn = self.pool.get().await.ok()?;
        redis::cmd("HGET").arg(&self.errors_key).arg(id).query_async::<Option<String>>(&mut conn).await.ok().flatten()
    }

    /// Marks the job failed, then copies the entry to the dead-letter stream and acknowledges
    /// it in one transaction.
    async fn dead_letter(&self, message: &Message, reason: &str) {
        warn!(stream = %self.config.stream, id = %message.id, delivery = message.delivery, reason, "dead-lettering entry");
        self.handler.give_up(message, reason).await;
        let result: Result<(), StreamError> = async {
            let mut conn = self.pool.get().await?;
            let mut add = redis::cmd("XADD");
            add.arg(&self.config.dead_letter_stream)
                .arg("*")
                .arg("source_stream")
                .arg(&self.config.stream)
                .arg("source_id")
                .arg(&message.id)
                .arg("deliveries")
                .arg(message.delivery)
                .arg("error")
                .arg(reason);
            for (key, value) in &message.fields {
                add.arg(key).arg(value);
            }
            let mut pipe = redis::pipe();
            pipe.atomic().add_command(add).ignore();
            self.acknowledge(&mut pipe, &message.id).query_async::<()>(&mut conn).await?;
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                metrics::counter!(crate::metrics::DEAD_LETTERS, "stage" => self.config.group.clone()).increment(1)
            }
            Err(err) => {
                warn!(stream = %self.config.stream, id = %message.id, error = %err, "dead-lettering failed; will retry")
            }
        }
    }

    /// Takes over entries idle past the visibility timeout (their worker died), as many as
    /// there are permits in hand. Without JUSTID, so each reclaim counts as a delivery.
    async fn reclaim(
        self: &Arc<Self>,
        permits: &mut Vec<OwnedSemaphorePermit>,
        shutdown: &CancellationToken,
    ) -> Result<(), StreamError> {
        let mut cursor = "0-0".to_owned();
        let mut conn = self.pool.get().await?;
        while !permits.is_empty() {
            let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(&self.config.stream)
                .arg(&self.config.group)
                .arg(&self.config.consumer)
                .arg(self.config.visibility_timeout.as_millis() as u64)
                .arg(&cursor)
                .arg("COUNT")
                .arg(permits.len())
                .query_async(&mut conn)
                .await?;
            for entry in reply.claimed {
                let delivery = self.delivery_count(&mut conn, &entry.id).await?;
                let Some(permit) = permits.pop() else { break };
                metrics::counter!(crate::metrics::RECLAIMED, "stage" => self.config.group.clone()).increment(1);
                info!(stream = %self.config.stream, id = %entry.id, delivery, "reclaimed an idle entry");
                let (message, complete) = Message::from_redis(entry.id, entry.map, delivery);
                tokio::spawn(self.clone().process(message, complete, permit, shutdown.clone()));
            }
            cursor = reply.next_stream_id;
            if cursor == "0-0" {
                break;
            }
        }
        Ok(())
    }

    async fn delivery_count(&self, conn: &mut deadpool_redis::Connection, id: &str) -> Result<u64, StreamError> {
        let reply: StreamPendingCountReply = redis::cmd("XPENDING")
            .arg(&self.config.stream)
            .arg(&self.config.group)
            .arg(id)
            .arg(id)
            .arg(1)
            .query_async(conn)
            .await?;
        Ok(reply.ids.first().map_or(1, |p| p.times_delivered as u64))
    }

    async fn trim_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.trim_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(err) = trim_below_pending(&self.pool, &self.config.stream).await {
                warn!(stream = %self.config.stream, error = %err, "trim failed");
            }
            if let Err(err) = self.retire_idle_consumers().await {
                warn!(stream = %self.config.stream, error = %err, "retiring idle consumers failed");
            }
        }
    }

    /// Removes the group's consumers that have nothing pending and have been idle for
    /// `retire_idle_consumers` (never this one). The check and the removal are one script, so
    /// a consumer that reads an entry in between is not removed with it (removing a consumer
    /// drops its pending entries).
    async fn retire_idle_consumers(&self) -> Result<(), StreamError> {
        let mut conn = self.pool.get().await?;
        let retired: Vec<String> = RETIRE_IDLE_CONSUMERS
            .key(&self.config.stream)
            .arg(&self.config.group)
            .arg(self.config.retire_idle_consumers.as_millis() as u64)
            .arg(&self.config.consumer)
            .invoke_async(&mut conn)
            .await?;
        if !retired.is_empty() {
            info!(stream = %self.config.stream, consumers = ?retired, "retired idle consumers with nothing pending");
        }
        Ok(())
    }
}

/// Removes idle consumers with nothing pending (`worker/retire_idle_consumers.lua`).
static RETIRE_IDLE_CONSUMERS: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("worker/retire_idle_consumers.lua")));

/// Trims a stream below the oldest entry any group still needs: its oldest pending entry, or
/// (with none pending) its last delivered one. Entries not yet delivered are above that floor.
pub(crate) async fn trim_below_pending(pool: &deadpool_redis::Pool, stream: &str) -> Result<u64, StreamError> {
    let mut conn = pool.get().await?;
    let groups: StreamInfoGroupsReply = match redis::cmd("XINFO").arg("GROUPS").arg(stream).query_async(&mut conn).await
    {
        Ok(groups) => groups,
        Err(_) => return Ok(0), // no stream yet
    };
    let mut floor: Option<(u64, u64)> = None;
    for group in &groups.groups {
        let needed = if group.pending > 0 {
            let summary: StreamPendingReply =
                redis::cmd("XPENDING").arg(stream).arg(&group.name).query_async(&mut conn).await?;
            match summary {
                StreamPendingReply::Data(data) => data.start_id,
                _ => group.last_delivered_id.clone(),
            }
        } else {
            group.last_delivered_id.clone()
        };
        let Some(id) = parse_id(&needed) else { return Ok(0) };
        floor = Some(floor.map_or(id, |f| f.min(id)));
    }
    let Some((ms, seq)) = floor else { return Ok(0) };
    let trimmed: u64 =
        redis::cmd("XTRIM").arg(stream).arg("MINID").arg(format!("{ms}-{seq}")).query_async(&mut conn).await?;
    if trimmed > 0 {
        debug!(stream, trimmed, "trimmed acknowledged entries");
    }
    Ok(trimmed)
}

fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::parse_id;

    #[test]
    fn stream_ids_order_numerically() {
        assert!(parse_id("10-0") > parse_id("9-5"));
        assert!(parse_id("9-10") > parse_id("9-9"));
        assert_eq!(parse_id("garbage"), None);
    }
}
