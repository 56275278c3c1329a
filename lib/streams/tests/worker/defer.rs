//! Deferral: an entry turned down because a downstream is unavailable goes back to the stream
//! without using up a delivery, and is never lost when that cannot be written.

use std::sync::atomic::Ordering;
use std::time::Duration;

use millrace_testkit::RedisServer;
use redis::AsyncCommands;

use crate::{Behaviour, Recorder, add, config, connection, eventually, pending, start, start_with};

#[tokio::test]
async fn a_deferred_entry_is_handled_in_the_end_and_never_dead_lettered() {
    let redis = RedisServer::start().unwrap();
    let mut conn = connection(&redis).await;
    let cfg = config("a", 2);
    // More deferrals than deliveries allowed: each would have counted as a failure before.
    let deferrals = cfg.max_deliveries as usize + 2;
    let handler = Recorder::new(Behaviour::DeferFirst(deferrals));
    let running = start(&redis, cfg, handler.clone());
    add(&mut conn, 1).await;
    eventually("handled after the deferrals", async || handler.calls.load(Ordering::SeqCst) == deferrals + 1).await;
    eventually("none pending", async || pending(&mut conn).await == 0).await;
    assert_eq!(conn.xlen::<_, usize>("s:dlq").await.unwrap(), 0, "a deferred entry was dead-lettered");
    assert!(handler.given_up.lock().unwrap().is_empty());
    let seen = handler.seen.lock().unwrap().clone();
    assert!(seen.iter().all(|(delivery, _)| *delivery == 1), "a deferral used up a delivery: {seen:?}");
    assert!(seen.iter().all(|(_, n)| n.as_deref() == Some("0")), "the entry's fields changed: {seen:?}");
    assert!(!conn.exists::<_, bool>("s:errors").await.unwrap());
    running.stop.cancel();
    running.task.await.unwrap();
}

#[tokio::test]
async fn a_deferral_that_cannot_be_written_leaves_the_entry_pending() {
    let redis = RedisServer::start().unwrap();
    let mut conn = connection(&redis).await;
    // The worker's user may do everything but XADD, so the re-queue transaction is refused.
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "worker", "on", ">secret", "~*", "&*", "+@all", "-xadd"])
        .query_async(&mut conn)
        .await
        .unwrap();
    let url = redis.url.replace("redis://", "redis://worker:secret@");
    let mut cfg = config("a", 1);
    cfg.visibility_timeout = Duration::from_millis(200);
    let handler = Recorder::new(Behaviour::DeferFirst(usize::MAX));
    let running = start_with(&url, cfg, handler.clone(), None);
    add(&mut conn, 1).await;

    // The entry stays pending, so it comes back as a reclaimed delivery, as a retry would.
    eventually("redelivered", async || handler.seen.lock().unwrap().iter().any(|(delivery, _)| *delivery == 2)).await;
    assert_eq!(conn.xlen::<_, usize>("s").await.unwrap(), 1, "a copy was added after all");
    assert_eq!(pending(&mut conn).await, 1, "the entry was acknowledged without its copy");
    let errors: Vec<String> = conn.hvals("s:errors").await.unwrap();
    assert_eq!(errors, ["downstream unavailable"]);
    running.stop.cancel();
    running.task.await.unwrap();
}

#[tokio::test]
async fn a_held_deferred_entry_goes_back_at_once_on_shutdown() {
    let redis = RedisServer::start().unwrap();
    let mut conn = connection(&redis).await;
    let mut cfg = config("a", 1);
    cfg.defer_delay = Duration::from_secs(60);
    let handler = Recorder::new(Behaviour::DeferFirst(usize::MAX));
    let running = start(&redis, cfg, handler.clone());
    add(&mut conn, 1).await;
    eventually("deferred once", async || handler.calls.load(Ordering::SeqCst) == 1).await;
    running.stop.cancel();
    tokio::time::timeout(Duration::from_millis(500), running.task)
        .await
        .expect("shutdown waited for the deferral pause")
        .unwrap();
    assert_eq!(pending(&mut conn).await, 0);
    let entries: redis::streams::StreamRangeReply = conn.xrange_all("s").await.unwrap();
    let last = entries.ids.last().unwrap();
    assert_eq!(last.get::<String>("n").as_deref(), Some("0"), "the copy at the end carries the entry's fields");
    assert_eq!(entries.ids.len(), 2);
}
