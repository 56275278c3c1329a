//! The faults of a chaos run, one at a time at random moments (seeded), each followed by its
//! recovery before the next: SIGKILL of any service replica and its restart, Redis SIGKILL and
//! restart (AOF, fsync every second), PostgreSQL stopped in immediate mode and restarted,
//! upstream 5xx bursts and latency spikes (the fake's `POST /control`), and a stage replica
//! frozen with SIGSTOP past the visibility timeout, then SIGCONT.
//!
//! When a killed stage replica held entries, it stays down until another replica has finished
//! them (or a deadline), which measures how long an orphaned entry takes to be reclaimed.

use std::collections::BTreeMap;
use std::time::Duration;

use millrace_e2e::Stack;
use millrace_testkit::{ChildProcess, Signal, wait_for_http};
use redis::streams::StreamPendingCountReply;
use serde_json::json;

use crate::rng::Rng;
use crate::unix_ms;

pub const STAGES: [&str; 4] = ["chunking", "metadata", "embeddings", "storage"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    KillStage,
    KillService,
    KillRedis,
    StopPostgres,
    Upstream5xx,
    UpstreamLatency,
    FreezeStage,
}

impl Kind {
    pub fn describe(self) -> &'static str {
        match self {
            Self::KillStage => "SIGKILL of a stage replica (chunking, metadata, embeddings, storage), then restart",
            Self::KillService => "SIGKILL of an ingestion or llm-gateway replica, then restart",
            Self::KillRedis => "Redis SIGKILL, then restart from its AOF (appendfsync everysec)",
            Self::StopPostgres => "PostgreSQL immediate stop (SIGQUIT, as pg_ctl stop -m immediate), then restart",
            Self::Upstream5xx => "upstream 5xx burst (fake error rate 50-100%)",
            Self::UpstreamLatency => "upstream latency spike (1.5-6 s per call)",
            Self::FreezeStage => "stage replica frozen with SIGSTOP past the visibility timeout, then SIGCONT",
        }
    }

    fn draw(rng: &mut Rng) -> Self {
        match rng.below(100) {
            0..28 => Self::KillStage,
            28..40 => Self::KillService,
            40..49 => Self::KillRedis,
            49..58 => Self::StopPostgres,
            58..70 => Self::Upstream5xx,
            70..82 => Self::UpstreamLatency,
            _ => Self::FreezeStage,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: Kind,
    pub target: String,
    pub start_ms: u64,
    /// When the faulty part was back (restarted and healthy, resumed, or the upstream healed).
    pub end_ms: u64,
}

/// An entry held by a replica that was killed, and how long until another replica finished it.
#[derive(Debug, Clone)]
pub struct Reclaim {
    pub replica: String,
    pub entry: String,
    /// `None`: still pending when the measurement gave up.
    pub millis: Option<u64>,
}

pub struct Injector<'a> {
    pub stack: &'a mut Stack,
    pub rng: Rng,
    pub visibility_timeout_ms: u64,
    /// The fake upstream's latency and jitter outside of spikes.
    pub base_latency_ms: (u64, u64),
    pub faults: Vec<Fault>,
    pub reclaims: Vec<Reclaim>,
    http: reqwest::Client,
}

/// Every process label of the stack: `metadata`, `metadata-2`, …
pub fn labels(stack: &Stack) -> Vec<String> {
    let mut labels: Vec<String> = stack.services.keys().map(|name| (*name).to_owned()).collect();
    labels.extend(stack.replicas.iter().map(|(label, _)| label.clone()));
    labels
}

/// The service a label names (`metadata-2` is `metadata`).
fn service_of(label: &str) -> &str {
    match label.rsplit_once('-') {
        Some((name, n)) if n.chars().all(|c| c.is_ascii_digit()) => name,
        _ => label,
    }
}

/// The consumer name the harness gives a stage replica.
fn consumer(label: &str) -> String {
    match label.rsplit_once('-') {
        Some((name, n)) if n.chars().all(|c| c.is_ascii_digit()) => format!("{name}-e2e-{n}"),
        _ => format!("{label}-e2e"),
    }
}

fn port(stack: &Stack, label: &str) -> u16 {
    match stack.services.get(label) {
        Some(service) => service.http_port,
        None => stack.replicas.iter().find(|(l, _)| l == label).map(|(_, s)| s.http_port).unwrap(),
    }
}

fn process<'s>(stack: &'s mut Stack, label: &str) -> &'s mut ChildProcess {
    if stack.services.contains_key(label) {
        return &mut stack.services.get_mut(label).unwrap().process;
    }
    &mut stack.replicas.iter_mut().find(|(l, _)| l == label).unwrap().1.process
}

impl<'a> Injector<'a> {
    pub fn new(stack: &'a mut Stack, rng: Rng, visibility_timeout_ms: u64, base_latency_ms: (u64, u64)) -> Self {
        Self {
            stack,
            rng,
            visibility_timeout_ms,
            base_latency_ms,
            faults: Vec::new(),
            reclaims: Vec::new(),
            http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap(),
        }
    }

    /// Injects faults at random gaps of about `gap` until `until`.
    pub async fn run(&mut self, gap: Duration, until: tokio::time::Instant) {
        let gap_ms = gap.as_millis() as u64;
        loop {
            let wait = Duration::from_millis(self.rng.range(gap_ms / 2, gap_ms * 3 / 2));
            if tokio::time::Instant::now() + wait >= until {
                break;
            }
            tokio::time::sleep(wait).await;
            let kind = Kind::draw(&mut self.rng);
            self.inject(kind).await;
        }
    }

    fn labels_of(&self, services: &[&str]) -> Vec<String> {
        labels(self.stack).into_iter().filter(|label| services.contains(&service_of(label))).collect()
    }

    async fn wait_healthy(&self, label: &str) {
        let url = format!("http://127.0.0.1:{}/healthz", port(self.stack, label));
        if let Err(err) = wait_for_http(&url, Duration::from_secs(90)).await {
            panic!("{label} did not come back after a fault: {err}\n{}", self.stack.logs());
        }
    }

    async fn control(&self, body: serde_json::Value) {
        let (_, fake_port) = self.stack.fake.as_ref().expect("the chaos stack runs the fake upstream");
        let response = self.http.post(format!("http://127.0.0.1:{fake_port}/control")).json(&body).send().await;
        let status = response.map(|r| r.status().as_u16()).unwrap_or(0);
        assert_eq!(status, 200, "POST /control {body} on the fake upstream");
    }

    pub async fn inject(&mut self, kind: Kind) {
        let start_ms = unix_ms();
        let target = match kind {
            Kind::KillStage => {
                let label = self.rng.pick(&self.labels_of(&STAGES)).clone();
                self.kill_stage(&label).await
            }
            Kind::KillService => {
                let label = self.rng.pick(&self.labels_of(&["ingestion", "llm-gateway"])).clone();
                process(self.stack, &label).kill().unwrap();
                tokio::time::sleep(Duration::from_millis(self.rng.range(200, 2_000))).await;
                process(self.stack, &label).restart().unwrap();
                self.wait_healthy(&label).await;
                label
            }
            Kind::KillRedis => {
                self.stack.redis.kill().unwrap();
                tokio::time::sleep(Duration::from_millis(self.rng.range(300, 3_000))).await;
                tokio::task::block_in_place(|| self.stack.redis.restart()).unwrap();
                "redis".to_owned()
            }
            Kind::StopPostgres => {
                let postgres = self.stack.postgres.process();
                postgres.signal(Signal::SIGQUIT).unwrap();
                let stopped = tokio::task::block_in_place(|| postgres.wait_timeout(Duration::from_secs(15))).unwrap();
                assert!(stopped.is_some(), "PostgreSQL did not stop on SIGQUIT");
                tokio::time::sleep(Duration::from_millis(self.rng.range(300, 3_000))).await;
                tokio::task::block_in_place(|| self.stack.postgres.restart()).unwrap();
                "postgresql".to_owned()
            }
            Kind::Upstream5xx => {
                let rate = 0.5 + self.rng.unit() / 2.0;
                self.control(json!({"error_rate": rate})).await;
                tokio::time::sleep(Duration::from_millis(self.rng.range(3_000, 12_000))).await;
                self.control(json!({"error_rate": 0.0})).await;
                format!("upstream, error rate {:.0}%", rate * 100.0)
            }
            Kind::UpstreamLatency => {
                let latency = self.rng.range(1_500, 6_000);
                self.control(json!({"latency_ms": latency})).await;
                tokio::time::sleep(Duration::from_millis(self.rng.range(5_000, 15_000))).await;
                self.control(json!({"latency_ms": self.base_latency_ms.0, "jitter_ms": self.base_latency_ms.1})).await;
                format!("upstream, {latency} ms")
            }
            Kind::FreezeStage => {
                let label = self.rng.pick(&self.labels_of(&STAGES)).clone();
                process(self.stack, &label).signal(Signal::SIGSTOP).unwrap();
                let frozen = self.visibility_timeout_ms + self.rng.range(1_000, 4_000);
                tokio::time::sleep(Duration::from_millis(frozen)).await;
                process(self.stack, &label).signal(Signal::SIGCONT).unwrap();
                format!("{label}, {frozen} ms")
            }
        };
        let fault = Fault { kind, target, start_ms, end_ms: unix_ms() };
        eprintln!(
            "chaos: fault {:?} on {} for {} ms",
            fault.kind,
            fault.target,
            fault.end_ms.saturating_sub(fault.start_ms)
        );
        self.faults.push(fault);
    }

    /// Kills a stage replica and returns its label. Two times in three it first looks (up to
    /// 10 s) for a stage replica that holds entries and kills that one instead, then keeps it
    /// down until another replica has finished what it held, measuring the reclaim; otherwise
    /// the replica is restarted after a moment and finds its own pending entries first.
    async fn kill_stage(&mut self, label: &str) -> String {
        let measure = self.rng.below(3) < 2;
        let mut label = label.to_owned();
        if measure && let Some(holder) = self.find_holder().await {
            label = holder;
        }
        let stage = service_of(&label).to_owned();
        let stream = format!("{}:stream:{stage}", self.stack.key_prefix);
        process(self.stack, &label).kill().unwrap();
        let killed_at = tokio::time::Instant::now();
        // Read after the kill: what is listed now is orphaned, not finished in the meantime.
        let held = if measure { self.pending(&stream, &stage, Some(&consumer(&label))).await } else { Vec::new() };
        if held.is_empty() {
            tokio::time::sleep(Duration::from_millis(self.rng.range(200, 2_000))).await;
        } else {
            let deadline = killed_at + Duration::from_millis(self.visibility_timeout_ms * 5 + 30_000);
            let mut open: BTreeMap<String, ()> = held.iter().map(|id| (id.clone(), ())).collect();
            while !open.is_empty() && tokio::time::Instant::now() < deadline {
                for id in open.keys().cloned().collect::<Vec<_>>() {
                    if !self.is_pending(&stream, &stage, &id).await {
                        let millis = killed_at.elapsed().as_millis() as u64;
                        self.reclaims.push(Reclaim { replica: label.clone(), entry: id.clone(), millis: Some(millis) });
                        open.remove(&id);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            for id in open.into_keys() {
                self.reclaims.push(Reclaim { replica: label.clone(), entry: id, millis: None });
            }
        }
        process(self.stack, &label).restart().unwrap();
        self.wait_healthy(&label).await;
        label
    }

    /// A stage replica that holds entries right now, looked for during up to 10 s.
    async fn find_holder(&self) -> Option<String> {
        let mut redis = self.redis().await?;
        let candidates = self.labels_of(&STAGES);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            for candidate in &candidates {
                let stage = service_of(candidate);
                let reply: Result<StreamPendingCountReply, _> = redis::cmd("XPENDING")
                    .arg(format!("{}:stream:{stage}", self.stack.key_prefix))
                    .arg(stage)
                    .arg("-")
                    .arg("+")
                    .arg(1)
                    .arg(consumer(candidate))
                    .query_async(&mut redis)
                    .await;
                if reply.is_ok_and(|r| !r.ids.is_empty()) {
                    return Some(candidate.clone());
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    async fn redis(&self) -> Option<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.stack.redis.url.as_str()).ok()?;
        tokio::time::timeout(Duration::from_secs(2), client.get_multiplexed_async_connection()).await.ok()?.ok()
    }

    /// Entry ids pending in a stage's group (of one consumer, if given).
    async fn pending(&self, stream: &str, group: &str, consumer: Option<&str>) -> Vec<String> {
        let Some(mut redis) = self.redis().await else { return Vec::new() };
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(stream).arg(group).arg("-").arg("+").arg(100);
        if let Some(consumer) = consumer {
            cmd.arg(consumer);
        }
        let reply: Result<StreamPendingCountReply, _> = cmd.query_async(&mut redis).await;
        reply.map(|r| r.ids.into_iter().map(|p| p.id).collect()).unwrap_or_default()
    }

    async fn is_pending(&self, stream: &str, group: &str, id: &str) -> bool {
        let Some(mut redis) = self.redis().await else { return true };
        let reply: Result<StreamPendingCountReply, _> =
            redis::cmd("XPENDING").arg(stream).arg(group).arg(id).arg(id).arg(1).query_async(&mut redis).await;
        reply.map(|r| !r.ids.is_empty()).unwrap_or(true)
    }
}
