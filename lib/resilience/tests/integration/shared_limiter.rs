use std::time::Duration;

use millrace_resilience::{LimiterConfig, Quota, RateLimiter};
use millrace_testkit::RedisServer;
use tokio::time::Instant;

use crate::helpers::{MARGIN, WINDOW, config, connection, replica, unique_key};

const SPAN: Duration = WINDOW.saturating_add(MARGIN);

fn rpm(rpm: u64) -> Quota {
    Quota { rpm: Some(rpm), tpm: None }
}

#[tokio::test]
async fn two_replicas_share_one_quota_in_a_burst() -> anyhow::Result<()> {
    let redis = RedisServer::shared()?;
    let key = unique_key("burst");
    let a = replica(&redis.url, &key, rpm(5), 2);
    let b = replica(&redis.url, &key, rpm(5), 2);
    let started = Instant::now();
    // Twenty concurrent requests, half through each replica, none willing to wait.
    let attempts = (0..20).map(|i| {
        let limiter = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move { limiter.acquire(1, Instant::now()).await }
    });
    let results = futures::future::join_all(attempts).await;
    let admitted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(admitted, 5, "{results:?}");
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(refused.limit, "requests");
        let wait = refused.wait.unwrap();
        assert!(wait > Duration::ZERO && wait <= SPAN, "{wait:?}");
    }
    let snapshot = a.snapshot();
    assert_eq!(snapshot.mode, "shared");
    assert_eq!(a.snapshot().admitted_total + b.snapshot().admitted_total, 5);

    // The sixth fits once the first entry leaves the window (+ margin), not before.
    b.acquire(1, started + Duration::from_secs(5)).await?;
    let elapsed = started.elapsed();
    assert!(elapsed >= SPAN - Duration::from_millis(50) && elapsed < SPAN + Duration::from_millis(400), "{elapsed:?}");
    assert_eq!(b.snapshot().waited_total, 1);
    Ok(())
}

#[tokio::test]
async fn two_replicas_never_exceed_the_quota_in_any_window() -> anyhow::Result<()> {
    let redis = RedisServer::shared()?;
    let key = unique_key("sustained");
    let replicas = [replica(&redis.url, &key, rpm(4), 2), replica(&redis.url, &key, rpm(4), 2)];
    let started = Instant::now();
    let run_for = Duration::from_millis(2500);
    // Three callers per replica, each acquiring as fast as it is admitted.
    let callers = replicas.iter().flat_map(|limiter| (0..3).map(move |_| limiter.clone())).map(|limiter| {
        tokio::spawn(async move {
            let mut admitted = Vec::new();
            while let Ok(_reservation) = limiter.acquire(1, started + run_for).await {
                admitted.push(Instant::now());
            }
            admitted
        })
    });
    let mut admitted: Vec<Instant> = Vec::new();
    for caller in callers.collect::<Vec<_>>() {
        admitted.extend(caller.await?);
    }
    admitted.sort();
    // Bursts at about 0, 1.1 and 2.2 s (12 in all, fewer on a slow machine), and never more
    // than 4 within one window.
    let offsets: Vec<_> = admitted.iter().map(|t| t.duration_since(started)).collect();
    assert!((8..=12).contains(&admitted.len()), "{offsets:?}");
    for (i, first) in admitted.iter().enumerate() {
        let in_window = admitted[i..].iter().take_while(|t| t.duration_since(*first) < WINDOW).count();
        assert!(in_window <= 4, "{in_window} admissions within one window from {:?}", first.duration_since(started));
    }
    Ok(())
}

#[tokio::test]
async fn tokens_are_shared_and_settled() -> anyhow::Result<()> {
    let redis = RedisServer::shared()?;
    let key = unique_key("tokens");
    let quota = Quota { rpm: None, tpm: Some(100) };
    let a = replica(&redis.url, &key, quota, 2);
    let b = replica(&redis.url, &key, quota, 2);

    let big = a.acquire(80, Instant::now()).await?;
    let err = b.acquire(30, Instant::now()).await.unwrap_err();
    assert_eq!(err.limit, "tokens");
    assert!(err.wait.is_some_and(|wait| wait <= SPAN), "{err:?}");
    // The response used 20 tokens, not 80: 30 more now fit.
    big.settle(20).await;
    b.acquire(30, Instant::now()).await?;
    assert_eq!(b.snapshot().tokens_in_window, 50);
    // Settling upward uses quota: 50 + 40 = 90, so 30 more no longer fit, 10 do.
    let small = a.acquire(10, Instant::now()).await?;
    small.settle(40).await;
    assert!(a.acquire(30, Instant::now()).await.is_err());
    a.acquire(10, Instant::now()).await?;
    // More than the whole TPM never fits, even with all the time in the world.
    let err = a.acquire(101, Instant::now() + Duration::from_secs(60)).await.unwrap_err();
    assert_eq!((err.limit, err.wait), ("tokens", None));
    Ok(())
}

#[tokio::test]
async fn settling_an_entry_that_left_the_window_does_nothing() -> anyhow::Result<()> {
    let redis = RedisServer::shared()?;
    let key = unique_key("late-settle");
    let config = LimiterConfig { window: Duration::from_millis(200), margin: Duration::ZERO, replicas: 1 };
    let quota = Quota { rpm: None, tpm: Some(100) };
    let limiter = RateLimiter::shared("upstream", quota, config, connection(&redis.url), key);
    let reservation = limiter.acquire(10, Instant::now()).await?;
    tokio::time::sleep(Duration::from_millis(250)).await;
    reservation.settle(90).await;
    limiter.acquire(100, Instant::now()).await?;
    assert_eq!(limiter.snapshot().tokens_in_window, 100);
    Ok(())
}

#[tokio::test]
async fn falls_back_to_a_local_share_when_redis_is_unreachable() -> anyhow::Result<()> {
    // Nothing listens on this port.
    let url = format!("redis://127.0.0.1:{}", millrace_testkit::free_port());
    let limiter = replica(&url, &unique_key("fallback"), rpm(4), 2);
    let started = Instant::now();
    // 4 per window across 2 replicas: this one may admit 2 on its own.
    limiter.acquire(1, Instant::now()).await?;
    limiter.acquire(1, Instant::now()).await?;
    let err = limiter.acquire(1, Instant::now()).await.unwrap_err();
    assert_eq!(err.limit, "requests");
    assert!(err.wait.is_some_and(|wait| wait <= SPAN), "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
    let snapshot = limiter.snapshot();
    assert_eq!(snapshot.mode, "local-fallback");
    assert_eq!((snapshot.requests_in_window, snapshot.admitted_total), (2, 2));
    Ok(())
}

#[tokio::test]
async fn returns_to_redis_when_it_is_back() -> anyhow::Result<()> {
    let mut redis = RedisServer::start()?;
    let limiter = RateLimiter::shared("upstream", rpm(100), config(2), connection(&redis.url), unique_key("recover"));
    limiter.acquire(1, Instant::now()).await?;
    assert_eq!(limiter.snapshot().mode, "shared");

    redis.kill()?;
    limiter.acquire(1, Instant::now()).await?;
    assert_eq!(limiter.snapshot().mode, "local-fallback");
    redis.restart()?;
    // Within the retry interval it stays local; after it, the next acquire tries Redis again.
    limiter.acquire(1, Instant::now()).await?;
    assert_eq!(limiter.snapshot().mode, "local-fallback");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    limiter.acquire(1, Instant::now()).await?;
    assert_eq!(limiter.snapshot().mode, "shared");
    // The restarted server lost the log (no persistence): only this admission is in it.
    assert_eq!(limiter.snapshot().requests_in_window, 1);
    Ok(())
}
