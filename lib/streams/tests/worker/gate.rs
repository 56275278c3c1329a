//! Gated reads: a closed gate hands out nothing (new, own pending or reclaimable entries), its
//! answer bounds the entries in flight, and shutdown does not wait for it to open.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::future::BoxFuture;
use millrace_streams::{Gate, ensure_group};
use millrace_testkit::RedisServer;
use redis::AsyncCommands;
use tokio::sync::watch;

use crate::{Behaviour, Recorder, add, config, connection, eventually, pending, read_and_die, start_with};

/// A gate the test opens and closes: 0 is closed, else how many entries may be in flight.
struct TestGate(watch::Receiver<usize>);

/// A gate answering `allowed`, and the handle that changes its answer.
fn test_gate(allowed: usize) -> (watch::Sender<usize>, Arc<dyn Gate>) {
    let (tx, rx) = watch::channel(allowed);
    (tx, Arc::new(TestGate(rx)))
}

impl Gate for TestGate {
    fn ready(&self) -> BoxFuture<'_, usize> {
        let mut allowed = self.0.clone();
        Box::pin(async move {
            let answer = allowed.wait_for(|n| *n > 0).await.map(|n| *n);
            match answer {
                Ok(n) => n,
                Err(_) => std::future::pending().await,
            }
        })
    }
}

/// Pending entries per consumer of group `g`.
async fn pending_of(conn: &mut redis::aio::MultiplexedConnection, consumer: &str) -> usize {
    let reply: redis::streams::StreamPendingReply = conn.xpending("s", "g").await.unwrap();
    match reply {
        redis::streams::StreamPendingReply::Data(data) => {
            data.consumers.iter().find(|c| c.name == consumer).map_or(0, |c| c.pending)
        }
        _ => 0,
    }
}

#[tokio::test]
async fn a_closed_gate_hands_out_nothing_until_it_opens() {
    let redis = RedisServer::start().unwrap();
    let mut conn = connection(&redis).await;
    ensure_group(&mut conn, "s", "g").await.unwrap();
    // Two entries of this consumer's own from before a restart, two of a dead consumer (idle past
    // the visibility timeout while the gate is closed), two new ones: every way in is gated.
    add(&mut conn, 2).await;
    read_and_die(&mut conn, "a", 2).await;
    add(&mut conn, 2).await;
    read_and_die(&mut conn, "dead", 2).await;
    add(&mut conn, 2).await;
    let mut cfg = config("a", 4);
    cfg.visibility_timeout = Duration::from_millis(100);
    let (open, gate) = test_gate(0);
    let handler = Recorder::new(Behaviour::Succeed);
    let running = start_with(&redis.url, cfg, handler.clone(), Some(gate));

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(handler.calls.load(Ordering::SeqCst), 0, "an entry was handled while the gate was closed");
    assert_eq!(pending_of(&mut conn, "dead").await, 2, "a dead consumer's entry was reclaimed while gated");
    assert_eq!(pending(&mut conn).await, 4, "a new entry was read while gated");

    open.send(usize::MAX).unwrap();
    eventually("all handled", async || handler.calls.load(Ordering::SeqCst) == 6).await;
    eventually("none pending", async || pending(&mut conn).await == 0).await;
    running.stop.cancel();
    running.task.await.unwrap();
}

#[tokio::test]
async fn a_gate_answering_one_keeps_one_entry_in_flight() {
    let redis = RedisServer::start().unwrap();
    let mut conn = connection(&redis).await;
    let (_open, gate) = test_gate(1);
    let mut handler = Recorder::new(Behaviour::Succeed);
    handler.delay = Duration::from_millis(40);
    let running = start_with(&redis.url, config("a", 4), handler.clone(), Some(gate));
    add(&mut conn, 6).await;
    eventually("all handled", async || handler.calls.load(Ordering::SeqCst) == 6).await;
    assert_eq!(handler.max_in_flight.load(Ordering::SeqCst), 1);
    eventually("none pending", async || pending(&mut conn).await == 0).await;
    running.stop.cancel();
    running.task.await.unwrap();
}

#[tokio::test]
async fn shutdown_while_gated_returns_promptly() {
    let redis = RedisServer::start().unwrap();
    let mut conn = connection(&redis).await;
    let (_open, gate) = test_gate(0);
    let handler = Recorder::new(Behaviour::Succeed);
    let running = start_with(&redis.url, config("a", 2), handler.clone(), Some(gate));
    // Once the group exists the worker is past start-up and waiting on the gate.
    eventually("group created", async || {
        let groups: redis::streams::StreamInfoGroupsReply = conn.xinfo_groups("s").await.unwrap_or_default();
        !groups.groups.is_empty()
    })
    .await;
    add(&mut conn, 1).await;
    running.stop.cancel();
    tokio::time::timeout(Duration::from_millis(500), running.task)
        .await
        .expect("the worker kept waiting on its gate after shutdown")
        .unwrap();
    assert_eq!(handler.calls.load(Ordering::SeqCst), 0);
}
