//! Readers of a job's progress events (`GET /v1/jobs/{id}/events`, gRPC `WatchJob`), served
//! from one follower per watched job, and capped per client and in total.
//!
//! Before, each reader held a Redis connection of its own for its blocking `XREAD`: a thousand
//! readers of one job were a thousand connections, and nothing capped them. Now the first
//! reader of a job starts a follower task, which alone reads the job's events stream (one
//! blocking `XREAD` on one connection), keeps what it read, and hands each new batch to every
//! reader of the job through a broadcast channel; a reader that joins later gets what the
//! follower holds, then the broadcasts, both taken under one lock so that nothing falls between
//! them. The follower ends when its last reader has gone (checked after each read, so within
//! [`EVENT_POLL`]).
//!
//! Why one follower per job, not one task reading every watched job with one `XREAD` over many
//! keys: a blocking `XREAD` cannot take a new key while it waits, so adding a job would need a
//! `CLIENT UNBLOCK` from a second connection and a re-read; and the event parsing lives in
//! `millrace_pipeline::events`, which reads one key. Connections are now bounded by the number
//! of distinct watched jobs, itself at most `MILLRACE_MAX_WATCHERS`.
//!
//! The stream behaves as documented in ARCHITECTURE.md ("Progress events"): replay, then follow,
//! end after a final event with nothing after it (a retried job goes on after `failed`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use millrace_auth::Caller;
use millrace_common::ApiError;
use millrace_common::ErrorCode;
use millrace_common::sync::lock;
use millrace_pipeline::JobStore;
use millrace_pipeline::events::{JobEvent, read_events};
use redis::aio::MultiplexedConnection;
use tokio::sync::broadcast;

use crate::config::WatcherCaps;

/// How long one blocking read of a job's events waits before the follower checks the job's
/// record and whether anyone still reads.
const EVENT_POLL: Duration = Duration::from_secs(5);

/// Updates a reader may fall behind by before it catches up from the follower's history.
const CHANNEL_CAPACITY: usize = 256;

/// `Retry-After` of a refused watcher: watchers last as long as a job runs, so not at once.
const WATCHER_RETRY_AFTER_SECS: u64 = 5;

/// Who is watching, for the per-client cap: the API key (by its id), whatever address it comes
/// from, so one key cannot take every reader of a replica by spreading over addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Client(String);

impl Client {
    pub fn of(caller: &Caller) -> Self {
        Self(caller.key_id.clone())
    }
}

/// What a follower hands its readers.
#[derive(Debug, Clone)]
enum Update {
    /// New entries of the events stream, in order. When the last is final, nothing followed it
    /// at the time it was read.
    Events(Arc<[JobEvent]>),
    /// The job ended without a final event in its stream (recorded before events existed, or
    /// trimmed away): this one comes from its record.
    Finished(JobEvent),
    /// The job's record is gone, or its events cannot be read: readers end.
    End,
}

/// What a follower has read, shared with joining readers under one lock.
#[derive(Default)]
struct History {
    events: Vec<JobEvent>,
    finished: Option<JobEvent>,
    ended: bool,
}

struct Follower {
    history: Mutex<History>,
    updates: broadcast::Sender<Update>,
}

impl Follower {
    /// Appends to the history and broadcasts under the same lock a joining reader takes.
    fn publish(&self, update: Update) {
        let mut history = lock(&self.history);
        match &update {
            Update::Events(events) => history.events.extend(events.iter().cloned()),
            Update::Finished(event) => history.finished = Some(event.clone()),
            Update::End => history.ended = true,
        }
        // No receiver is not an error: the follower notices and ends after its read.
        let _ = self.updates.send(update);
    }

    /// What a reader starting after `after` has to deliver first, and the channel of what follows.
    fn join(&self, after: &str) -> (Vec<Update>, broadcast::Receiver<Update>) {
        let history = lock(&self.history);
        (backlog(&history, after), self.updates.subscribe())
    }
}

fn backlog(history: &History, after: &str) -> Vec<Update> {
    let after = stream_id(after);
    let events: Vec<JobEvent> = history.events.iter().filter(|event| stream_id(&event.id) > after).cloned().collect();
    let mut backlog = Vec::new();
    if !events.is_empty() {
        backlog.push(Update::Events(events.into()));
    } else if history.events.last().is_some_and(JobEvent::is_final) {
        // The reader resumes after the job's end: nothing more is coming.
        backlog.push(Update::End);
        return backlog;
    }
    backlog.extend(history.finished.clone().map(Update::Finished));
    if history.ended {
        backlog.push(Update::End);
    }
    backlog
}

/// `{ms}-{seq}` as a pair that orders like the stream; "0" (from the start) is the smallest.
fn stream_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_client: HashMap<Client, usize>,
}

struct Shared {
    jobs: JobStore,
    redis: redis::Client,
    caps: WatcherCaps,
    counts: Mutex<Counts>,
    followers: Mutex<HashMap<String, Arc<Follower>>>,
}

/// Every reader of every job's events on this replica.
#[derive(Clone)]
pub struct Watchers {
    shared: Arc<Shared>,
}

impl Watchers {
    pub fn new(jobs: JobStore, redis: redis::Client, caps: WatcherCaps) -> Self {
        Self { shared: Arc::new(Shared { jobs, redis, caps, counts: Mutex::default(), followers: Mutex::default() }) }
    }

    /// Readers now open, in all and of `caller`.
    pub fn open(&self, client: &Client) -> (usize, usize) {
        let counts = lock(&self.shared.counts);
        (counts.total, counts.per_client.get(client).copied().unwrap_or(0))
    }

    /// A job's events after stream entry `after` ("0" for all), ending after the final one;
    /// refused with 429 past the key's cap and 503 past the total, before any Redis work. A job
    /// the caller may not see (another tenant's, or of a collection its key may not use) is the
    /// same 404 as an unknown one.
    pub async fn watch(
        &self,
        caller: &Caller,
        job_id: &str,
        after: String,
    ) -> Result<impl futures::Stream<Item = JobEvent> + Send + use<>, ApiError> {
        let permit = self.admit(Client::of(caller))?;
        let job = self.shared.jobs.get(job_id).await.map_err(crate::core::store_error)?;
        if !job.is_some_and(|job| crate::core::job_visible(caller, &job)) {
            return Err(crate::core::unknown_job(job_id));
        }
        let Joined { follower, backlog, updates } = self.join(job_id, &after).await?;
        let reader = Reader {
            _permit: permit,
            follower,
            updates,
            last: stream_id(&after),
            pending: backlog.into_iter().flat_map(Item::from_update).collect(),
            done: false,
        };
        Ok(futures::stream::unfold(reader, Reader::next))
    }

    fn admit(&self, client: Client) -> Result<Permit, ApiError> {
        let caps = self.shared.caps;
        let mut counts = lock(&self.shared.counts);
        let of_client = counts.per_client.get(&client).copied().unwrap_or(0);
        if of_client >= caps.per_client {
            metrics::counter!(crate::metrics::REQUESTS_REJECTED, "reason" => "watchers_per_client").increment(1);
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                format!("this key already watches {of_client} jobs' events, its limit; close one first"),
            )
            .with_retry_after(WATCHER_RETRY_AFTER_SECS));
        }
        if counts.total >= caps.total {
            metrics::counter!(crate::metrics::REQUESTS_REJECTED, "reason" => "watchers").increment(1);
            return Err(ApiError::unavailable(format!(
                "this replica already serves {} event streams, its limit; retry later",
                counts.total
            ))
            .with_retry_after(WATCHER_RETRY_AFTER_SECS));
        }
        counts.total += 1;
        *counts.per_client.entry(client.clone()).or_default() += 1;
        Ok(Permit { shared: self.shared.clone(), client })
    }

    /// Joins the job's follower, started if there is none. The join happens under the
    /// followers' lock, which a follower takes to decide it has no reader left, so a reader never
    /// joins one that is ending. A new follower's connection is made here, so that a Redis that
    /// cannot be reached is the caller's 503, not an empty stream.
    async fn join(&self, job_id: &str, after: &str) -> Result<Joined, ApiError> {
        if let Some(follower) = lock(&self.shared.followers).get(job_id) {
            return Ok(Joined::new(follower.clone(), after));
        }
        let conn = millrace_common::redis_conn::blocking_connection(&self.shared.redis)
            .await
            .map_err(|err| ApiError::unavailable(format!("job store unavailable: {err}")))?;
        let mut followers = lock(&self.shared.followers);
        // Another reader of the job may have started one while this one connected.
        if let Some(follower) = followers.get(job_id) {
            return Ok(Joined::new(follower.clone(), after));
        }
        let (updates, _) = broadcast::channel(CHANNEL_CAPACITY);
        let follower = Arc::new(Follower { history: Mutex::default(), updates });
        followers.insert(job_id.to_owned(), follower.clone());
        tracing::debug!(job_id, followed_jobs = followers.len(), "following a job's events");
        let joined = Joined::new(follower.clone(), after);
        tokio::spawn(follow(self.shared.clone(), job_id.to_owned(), follower, conn));
        Ok(joined)
    }
}

/// A reader's start: the follower, what it has to deliver first, and the channel of the rest.
struct Joined {
    follower: Arc<Follower>,
    backlog: Vec<Update>,
    updates: broadcast::Receiver<Update>,
}

impl Joined {
    fn new(follower: Arc<Follower>, after: &str) -> Self {
        let (backlog, updates) = follower.join(after);
        Self { follower, backlog, updates }
    }
}

/// One reader's place in the caps, given back when its stream is dropped.
struct Permit {
    shared: Arc<Shared>,
    client: Client,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = lock(&self.shared.counts);
        counts.total = counts.total.saturating_sub(1);
        if let Some(count) = counts.per_client.get_mut(&self.client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.per_client.remove(&self.client);
            }
        }
    }
}

/// Reads the job's events stream from the start for as long as anyone reads it.
async fn follow(shared: Arc<Shared>, job_id: String, follower: Arc<Follower>, mut conn: MultiplexedConnection) {
    let key = shared.jobs.keys().job_events(&job_id);
    let mut after = "0".to_owned();
    let mut saw_final = false;
    loop {
        let outcome = match read_events(&mut conn, &key, &after, EVENT_POLL).await {
            Ok(mut events) if !events.is_empty() => {
                // A failed job that was retried goes on after its `failed` event: a final event
                // is published as the end only once a read right after it found nothing more.
                while events.last().is_some_and(JobEvent::is_final) {
                    let Some(last) = events.last() else { break };
                    match read_events(&mut conn, &key, &last.id, Duration::ZERO).await {
                        Ok(more) if !more.is_empty() => events.extend(more),
                        Ok(_) => break,
                        Err(err) => {
                            tracing::warn!(job_id, error = %err, "job events: cannot read the stream");
                            break;
                        }
                    }
                }
                if let Some(last) = events.last() {
                    after = last.id.clone();
                    saw_final = last.is_final();
                }
                Some(Update::Events(events.into()))
            }
            // Nothing new for a while: a job that finished without a final event in its stream
            // ends with one from its record.
            Ok(_) => match shared.jobs.get(&job_id).await {
                Ok(Some(job)) if job.status.is_terminal() && !saw_final => {
                    saw_final = true;
                    Some(Update::Finished(JobEvent::finished(&job)))
                }
                Ok(Some(_)) => None,
                Ok(None) => Some(Update::End),
                Err(err) => {
                    tracing::warn!(job_id, error = %err, "job events: cannot read the job");
                    Some(Update::End)
                }
            },
            Err(err) => {
                tracing::warn!(job_id, error = %err, "job events: cannot read the stream");
                Some(Update::End)
            }
        };
        let end = matches!(outcome, Some(Update::End));
        // Under the followers' lock, so that a reader joining now either finds this follower
        // still listed and is served, or starts a new one.
        let mut followers = lock(&shared.followers);
        if let Some(update) = outcome {
            follower.publish(update);
        }
        if end || follower.updates.receiver_count() == 0 {
            if followers.get(&job_id).is_some_and(|listed| Arc::ptr_eq(listed, &follower)) {
                followers.remove(&job_id);
            }
            tracing::debug!(job_id, followed_jobs = followers.len(), "stopped following a job's events");
            return;
        }
    }
}

/// One item a reader delivers, or the end.
enum Item {
    Event(JobEvent),
    /// From the job's record: delivered whatever its id.
    Finished(JobEvent),
    End,
}

impl Item {
    fn from_update(update: Update) -> Vec<Self> {
        match update {
            Update::Events(events) => events.iter().cloned().map(Self::Event).collect(),
            Update::Finished(event) => vec![Self::Finished(event)],
            Update::End => vec![Self::End],
        }
    }
}

struct Reader {
    _permit: Permit,
    follower: Arc<Follower>,
    updates: broadcast::Receiver<Update>,
    /// The id of the last event delivered (or the reader's starting point).
    last: (u64, u64),
    pending: std::collections::VecDeque<Item>,
    done: bool,
}

impl Reader {
    async fn next(mut self) -> Option<(JobEvent, Self)> {
        loop {
            if self.done {
                return None;
            }
            match self.pending.pop_front() {
                Some(Item::Event(event)) => {
                    let id = stream_id(&event.id);
                    // Already delivered (a catch-up after lagging overlaps what came before).
                    if id <= self.last {
                        continue;
                    }
                    self.last = id;
                    self.done = event.is_final() && self.pending.is_empty();
                    return Some((event, self));
                }
                Some(Item::Finished(event)) => {
                    self.done = true;
                    return Some((event, self));
                }
                Some(Item::End) => return None,
                None => {}
            }
            match self.updates.recv().await {
                Ok(update) => self.pending.extend(Item::from_update(update)),
                // Fell behind the channel: take everything after the last delivered event from
                // the follower's history, and follow anew from there.
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    tracing::debug!(skipped, "job events: a slow reader catches up from the history");
                    let after = format!("{}-{}", self.last.0, self.last.1);
                    let (backlog, updates) = self.follower.join(&after);
                    self.updates = updates;
                    self.pending = backlog.into_iter().flat_map(Item::from_update).collect();
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
