//! The stream worker against a real redis-server: acknowledgement, dead letters after exactly
//! N deliveries, reclaim of a dead consumer's entries, backpressure and safe trimming; deferral
//! (`defer`) and gated reads (`gate`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod defer;
mod gate;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use millrace_streams::{Gate, Handler, HandlerError, Message, StreamWorker, WorkerConfig, ensure_group};
use millrace_testkit::RedisServer;
use redis::AsyncCommands;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy)]
enum Behaviour {
    Succeed,
    AlwaysRetry,
    Fatal,
    /// Never returns (a worker that dies mid-entry).
    Hang,
    /// Defers the first `n` calls (a downstream that is down for a while), then succeeds.
    DeferFirst(usize),
}

/// What one call saw: the delivery count and the entry's field `n`.
type Seen = (u64, Option<String>);

#[derive(Clone)]
struct Recorder {
    behaviour: Behaviour,
    calls: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    given_up: Arc<std::sync::Mutex<Vec<String>>>,
    seen: Arc<std::sync::Mutex<Vec<Seen>>>,
    delay: Duration,
}

impl Recorder {
    fn new(behaviour: Behaviour) -> Self {
        Self {
            behaviour,
            calls: Arc::default(),
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
            given_up: Arc::default(),
            seen: Arc::default(),
            delay: Duration::ZERO,
        }
    }
}

impl Handler for Recorder {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        self.seen.lock().unwrap().push((message.delivery, message.fields.get("n").cloned()));
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        match self.behaviour {
            Behaviour::Succeed => Ok(()),
            Behaviour::AlwaysRetry => Err(HandlerError::Retry("upstream unavailable".into())),
            Behaviour::Fatal => Err(HandlerError::Fatal("bad document".into())),
            Behaviour::Hang => std::future::pending().await,
            Behaviour::DeferFirst(n) if call < n => Err(HandlerError::Deferred("downstream unavailable".into())),
            Behaviour::DeferFirst(_) => Ok(()),
        }
    }

    async fn give_up(&self, message: &Message, reason: &str) {
        self.given_up.lock().unwrap().push(format!("{}: {reason}", message.id));
    }
}

fn config(consumer: &str, concurrency: usize) -> WorkerConfig {
    WorkerConfig {
        stream: "s".into(),
        group: "g".into(),
        consumer: consumer.into(),
        dead_letter_stream: "s:dlq".into(),
        concurrency,
        block: Duration::from_millis(200),
        visibility_timeout: Duration::from_millis(600),
        reclaim_interval: Duration::from_millis(100),
        max_deliveries: 3,
        trim_interval: Duration::from_millis(200),
        defer_delay: Duration::from_millis(10),
        drain_deadline: Duration::from_secs(2),
        metrics_interval: Duration::from_millis(100),
        retire_idle_consumers: Duration::from_secs(3600),
    }
}

struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn start(redis: &RedisServer, config: WorkerConfig, handler: Recorder) -> Running {
    start_with(&redis.url, config, handler, None)
}

fn start_with(url: &str, config: WorkerConfig, handler: Recorder, gate: Option<Arc<dyn Gate>>) -> Running {
    let client = redis::Client::open(url).unwrap();
    let pool = millrace_common::redis_conn::pool(url, 4).unwrap();
    let mut worker = StreamWorker::new(config, client, pool, handler);
    if let Some(gate) = gate {
        worker = worker.with_gate(gate);
    }
    let stop = CancellationToken::new();
    let token = stop.clone();
    let task = tokio::spawn(async move { worker.run(token).await.unwrap() });
    Running { stop, task }
}

async fn connection(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap()
}

async fn add(conn: &mut redis::aio::MultiplexedConnection, count: usize) {
    for i in 0..count {
        let _: String = conn.xadd("s", "*", &[("n", i.to_string())]).await.unwrap();
    }
}

async fn pending(conn: &mut redis::aio::MultiplexedConnection) -> usize {
    let reply: redis::streams::StreamPendingReply = conn.xpending("s", "g").await.unwrap();
    reply.count()
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn handled_entries_are_acknowledged() {
    let redis = RedisServer::start().unwrap();
    let mut conn = connection(&redis).await;
    let handler = Recorder::new(Behaviour::Succeed);
    let running = start(&redis, config("a", 4), handler.clone());
    add(&mut conn, 10).await;
    eventually("all handled", async || handler.calls.load(Ordering::SeqCst) == 10).await;
    eventually("none pending", async || pending(&mut conn).await == 0).await;
    running.stop.cancel();
    running.task.await.unwrap();
}

#[tokio::test]
async fn an_entry_that_always_fails_is_dead_lettered_after_exactly_max_deliveries() {
    let redis = RedisServer::start().unwrap();
    let mut conn = connection(&redis).await;
    let handler = Recorder::new(Behaviour::AlwaysRetry);
    let running = start(&redis, config("a", 2), handler.clone());
    add(&mut conn, 1).await;
    eventually("dead-lettered", async || conn.xlen::<_, usize>("s:dlq").await.unwrap() == 1).await;
    // Give a wrong implementation time to deliver a fourth time.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(handler.calls.load(Ordering::SeqCst), 3);
    let dead: redis::streams::StreamRangeReply = conn.xrange_all("s:dlq").await.unwrap();
    assert_eq!(dead.ids[0].get::<u64>("deliveries"), Some(3));
    assert!(dead.ids[0].get::<String>("error").unwrap().contains("upstream unavailable"));
    assert_eq!(dead.ids[0].get::<String>("n").as_deref(), Some("0"), "the entry's fields are kept");
    assert_eq!(handler.given_up.lock().unwrap().len(), 1);
    assert_eq!(pending(&mut conn).await, 0);
    running.stop.cancel();
    running.task.await.unwrap();
}

#[tokio::test]
async fn a_fatal_error_is_dead_lettered_at_once() {
    let redis = RedisServer::start().unwrap();
    let mut conn = connection(&redis).await;
    let handler = Recorder::new(Behaviour::Fatal);
    let running = start(&redis, config("a", 2), handler.clone());
    add(&mut conn, 1).await;
    eventually("dead-lettered", async || conn.xlen::<_, usize>("s:dlq").await.unwrap() == 1).await;
    assert_eq!(handler.calls.load(Ordering::SeqCst), 1);
    running.stop.cancel();
    running.task.await.unwrap();
}

/// Reads entries as a consumer that then died would have: delivered, never acknowledged.
async fn read_and_die(conn: &mut redis::aio::MultiplexedConnection, consumer: &str, count: usize) {
    ensure_group(conn, "s", "g").await.unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg("s")
        .arg(">")
        .query_async(conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_dead_consumers_entries_are_reclaimed_by_a_live_one() {
    let redis = RedisServer::start().unwrap();
    let mut conn = connection(&redis).await;
    ensure_group(&mut conn, "s", "g").await.unwrap();
    add(&mut conn, 3).await;
    read_and_die(&mut conn, "dead", 3).await;

    let alive = Recorder::new(Behaviour::Succeed);
    let running = start(&redis, config("alive", 4), alive.clone());
    eventually("reclaimed and handled", async || alive.calls.load(Ordering::SeqCst) == 3).await;
    eventually("none pending", async || pending(&mut conn).await == 0).await;
    running.stop.cancel();
    running.task.await.unwrap();
}

#[tokio::test]
async fn a_slow_but_live_consumer_keeps_its_entry() {
    let redis = RedisServer::start().unwrap();
    let mut conn = connection(&redis).await;
    let slow = Recorder::new(Behaviour::Hang);
    let first = start(&redis, config("slow", 1), slow.clone());
    add(&mut conn, 1).await;
    eventually("taken by the slow consumer", async || slow.calls.load(Ordering::SeqCst) == 1).await;
    let other = Recorder::new(Behaviour::Succeed);
    let second = start(&redis, config("other", 1), other.clone());
    // Three visibility timeouts pass; heartbeats keep the entry from looking idle.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert_eq!(other.calls.load(Ordering::SeqCst), 0, "a live consumer's entry was taken");
    first.stop.cancel();
    first.task.abort();
    second.stop.cancel();
    second.task.await.unwrap();
}

#[tokio::test]
async fn a_restarted_consumer_finishes_its_own_pending_entries_first() {
    let redis = RedisServer::start().unwrap();
    let mut conn = connection(&redis).await;
    ensure_group(&mut conn, "s", "g").await.unwrap();
    add(&mut conn, 2).await;
    read_and_die(&mut conn, "same", 2).await;
    let mut long_timeout = config("same", 2);
    long_timeout.visibility_timeout = Duration::from_secs(600);
    let handler = Recorder::new(Behaviour::Succeed);
    let running = start(&redis, long_timeout, handler.clone());
    // No reclaim could take them (600 s visibility): only the own-pending drain can.
    eventually("own pending handled", async || handler.calls.load(Ordering::SeqCst) == 2).await;
    eventually("none pending", async || pending(&mut conn).await == 0).await;
    running.stop.cancel();
    running.task.await.unwrap();
}

#[tokio::test]
async fn never_more_entries_in_flight_than_permits() {
    let redis = RedisServer::start().unwrap();
    let mut conn = connection(&redis).await;
    let mut handler = Recorder::new(Behaviour::Succeed);
    handler.delay = Duration::from_millis(50);
    let running = start(&redis, config("a", 3), handler.clone());
    add(&mut conn, 30).await;
    eventually("all handled", async || handler.calls.load(Ordering::SeqCst) == 30).await;
    assert!(handler.max_in_flight.load(Ordering::SeqCst) <= 3);
    // Pending never exceeds the permits either: the rest waited in the stream, not in memory.
    running.stop.cancel();
    running.task.await.unwrap();
}

#[tokio::test]
async fn trimming_keeps_pending_entries() {
    let redis = RedisServer::start().unwrap();
    let mut conn = connection(&redis).await;
    let stuck = Recorder::new(Behaviour::Hang);
    let mut cfg = config("a", 1);
    cfg.visibility_timeout = Duration::from_secs(600);
    let running = start(&redis, cfg, stuck.clone());
    add(&mut conn, 1).await;
    eventually("first entry taken", async || stuck.calls.load(Ordering::SeqCst) == 1).await;
    add(&mut conn, 5).await;
    // Several trim rounds pass; the pending entry and the undelivered ones must all survive.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(conn.xlen::<_, usize>("s").await.unwrap(), 6);
    running.stop.cancel();
    running.task.abort();
}

#[tokio::test]
async fn idle_consumers_with_nothing_pending_are_retired_and_the_others_kept() {
    let redis = RedisServer::start().unwrap();
    let mut conn = connection(&redis).await;
    add(&mut conn, 2).await;
    let _: () = redis::cmd("XGROUP").arg(&["CREATE", "s", "g", "0"]).query_async(&mut conn).await.unwrap();
    // "gone" read an entry and acknowledged it (a replica that went away cleanly); "holder"
    // still holds one (a replica that died mid-entry: its entry must stay claimable).
    let read = |consumer: &'static str| {
        redis::cmd("XREADGROUP").arg(&["GROUP", "g", consumer, "COUNT", "1", "STREAMS", "s", ">"]).clone()
    };
    let taken: redis::streams::StreamReadReply = read("gone").query_async(&mut conn).await.unwrap();
    let _: u64 = conn.xack("s", "g", &[&taken.keys[0].ids[0].id]).await.unwrap();
    let _: redis::streams::StreamReadReply = read("holder").query_async(&mut conn).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    let mut cfg = config("a", 1);
    cfg.visibility_timeout = Duration::from_secs(600); // no reclaim of the held entry
    cfg.retire_idle_consumers = Duration::from_millis(20);
    let running = start(&redis, cfg, Recorder::new(Behaviour::Succeed));
    let consumers = async || -> Vec<String> {
        let mut conn = connection(&redis).await;
        let reply: redis::streams::StreamInfoConsumersReply = conn.xinfo_consumers("s", "g").await.unwrap();
        let mut names: Vec<String> = reply.consumers.into_iter().map(|c| c.name).collect();
        names.sort();
        names
    };
    eventually("gone retired", async || !consumers().await.contains(&"gone".to_owned())).await;
    // "holder" stays ("a", this worker, is never retired by itself; it joins the group with
    // its first read).
    assert!(consumers().await.contains(&"holder".to_owned()));
    assert_eq!(pending(&mut conn).await, 1, "the held entry is still pending");
    running.stop.cancel();
    running.task.abort();
}

#[tokio::test]
async fn the_handle_counts_entries_in_flight_not_permits_held_by_the_read_loop() {
    let redis = RedisServer::start().unwrap();
    let mut conn = connection(&redis).await;
    let stuck = Recorder::new(Behaviour::Hang);
    let mut cfg = config("a", 3);
    cfg.visibility_timeout = Duration::from_secs(600);
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let pool = millrace_common::redis_conn::pool(&redis.url, 4).unwrap();
    let worker = StreamWorker::new(cfg, client, pool, stuck.clone());
    let handle = worker.handle();
    let stop = CancellationToken::new();
    let token = stop.clone();
    let task = tokio::spawn(async move { worker.run(token).await.unwrap() });
    // Idle, the read loop waits holding all three permits: nothing is in flight.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!((handle.limit(), handle.in_use()), (3, 0));
    add(&mut conn, 1).await;
    eventually("entry taken", async || stuck.calls.load(Ordering::SeqCst) == 1).await;
    assert_eq!(handle.in_use(), 1);
    stop.cancel();
    task.abort();
}
