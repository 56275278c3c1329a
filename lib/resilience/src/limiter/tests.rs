//! The local limiter on tokio's paused clock; the Redis-shared one is tested against a real
//! redis-server in `tests/integration`.

use super::*;
use crate::test_metrics::TestRecorder;

const SPAN: Duration = Duration::from_millis(60_500);
const JITTER: Duration = Duration::from_millis(MAX_JITTER_MS);

fn limiter(rpm: Option<u64>, tpm: Option<u64>) -> RateLimiter {
    RateLimiter::local("up", Quota { rpm, tpm }, LimiterConfig::default())
}

/// Admits at once or fails the test.
async fn now(limiter: &RateLimiter, tokens: u64) -> Reservation {
    limiter.acquire(tokens, Instant::now()).await.unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[track_caller]
fn assert_between(value: Duration, low: Duration, high: Duration) {
    assert!(low <= value && value <= high, "{value:?} not in [{low:?}, {high:?}]");
}

#[test]
fn settings() {
    assert_eq!(Quota::from_settings(&Settings::default(), "LLM_").unwrap(), Quota::default());
    let settings = Settings::from_pairs([("LLM_RPM", "60"), ("LLM_TPM", "0")]);
    assert_eq!(Quota::from_settings(&settings, "LLM_").unwrap(), Quota { rpm: Some(60), tpm: None });
    let bad = Settings::from_pairs([("LLM_TPM", "lots")]);
    assert_eq!(Quota::from_settings(&bad, "LLM_").unwrap_err().variable, "MILLRACE_LLM_TPM");

    assert_eq!(LimiterConfig::from_settings(&Settings::default(), "").unwrap(), LimiterConfig::default());
    let settings = Settings::from_pairs([("LLM_LIMIT_MARGIN_MS", "0"), ("LLM_REPLICAS", "3")]);
    let config = LimiterConfig::from_settings(&settings, "LLM_").unwrap();
    assert_eq!((config.window, config.margin, config.replicas), (secs(60), Duration::ZERO, 3));
    let zero = Settings::from_pairs([("REPLICAS", "0")]);
    assert_eq!(LimiterConfig::from_settings(&zero, "").unwrap_err().variable, "MILLRACE_REPLICAS");
}

#[test]
fn a_replica_share_is_rounded_down_and_at_least_one() {
    let quota = Quota { rpm: Some(10), tpm: Some(1000) };
    assert_eq!(quota.share(3), Quota { rpm: Some(3), tpm: Some(333) });
    assert_eq!(quota.share(20), Quota { rpm: Some(1), tpm: Some(50) });
    assert_eq!(quota.share(0), quota);
    assert_eq!(Quota::default().share(4), Quota::default());
}

#[tokio::test(start_paused = true)]
async fn rpm_is_exact_in_a_sliding_window() {
    let recorder = TestRecorder::default();
    let _guard = recorder.install();
    let limiter = limiter(Some(3), None);
    let t0 = Instant::now();
    for _ in 0..3 {
        now(&limiter, 0).await;
        tokio::time::advance(secs(10)).await;
    }
    // At t0+30 s the window holds t0, t0+10, t0+20: the fourth fits when t0's entry leaves
    // at t0 + 60.5 s, and the fifth when t0+10's does, not a whole window later.
    limiter.acquire(0, t0 + secs(600)).await.unwrap();
    assert_between(t0.elapsed(), SPAN, SPAN + JITTER);
    limiter.acquire(0, t0 + secs(600)).await.unwrap();
    assert_between(t0.elapsed(), SPAN + secs(10), SPAN + secs(10) + JITTER);

    let snapshot = limiter.snapshot();
    assert_eq!((snapshot.admitted_total, snapshot.waited_total, snapshot.requests_in_window), (5, 2, 3));
    assert_eq!(snapshot.mode, "local");
    assert!(snapshot.longest_wait_ms >= 30_500, "{snapshot:?}");
    assert_eq!(recorder.get("millrace_limiter_admitted_total{limiter=up}"), 5.0);
    assert_eq!(recorder.get("millrace_limiter_waits_total{limiter=up,limit=requests}"), 2.0);
    assert_eq!(recorder.get("millrace_limiter_wait_seconds{limiter=up}"), 5.0);
    assert_eq!(recorder.get("millrace_limiter_waiting{limiter=up}"), 0.0);
}

#[tokio::test(start_paused = true)]
async fn n_at_once_then_the_next_waits_for_window_and_margin() {
    let limiter = limiter(Some(4), None);
    let t0 = Instant::now();
    let all = futures::future::join_all((0..4).map(|_| limiter.acquire(1, t0))).await;
    assert!(all.iter().all(Result::is_ok));
    let err = limiter.acquire(1, t0 + secs(60)).await.unwrap_err();
    assert_eq!((err.limit, err.wait), ("requests", Some(SPAN)));
    assert_eq!(t0.elapsed(), Duration::ZERO);
    limiter.acquire(1, t0 + secs(61)).await.unwrap();
    assert_between(t0.elapsed(), SPAN, SPAN + JITTER);
}

#[tokio::test(start_paused = true)]
async fn tpm_with_mixed_sizes() {
    let limiter = limiter(None, Some(100));
    let t0 = Instant::now();
    now(&limiter, 30).await;
    tokio::time::advance(secs(5)).await;
    now(&limiter, 50).await;
    tokio::time::advance(secs(5)).await;
    // 80 used: 60 more needs both earlier entries gone (t0+5 s's leaves at t0 + 65.5 s).
    let err = limiter.acquire(60, t0 + secs(60)).await.unwrap_err();
    assert_eq!((err.limit, err.wait), ("tokens", Some(SPAN - secs(5))));
    // 20 fits now; then 40 needs 50 freed: the first two entries again.
    now(&limiter, 20).await;
    assert_eq!(limiter.snapshot().tokens_in_window, 100);
    limiter.acquire(40, t0 + secs(120)).await.unwrap();
    assert_between(t0.elapsed(), SPAN + secs(5), SPAN + secs(5) + JITTER);
    assert_eq!(limiter.snapshot().tokens_in_window, 60);
}

#[tokio::test(start_paused = true)]
async fn a_request_over_the_tpm_fails_at_once() {
    let limiter = limiter(Some(10), Some(100));
    let t0 = Instant::now();
    let err = limiter.acquire(101, t0 + secs(3600)).await.unwrap_err();
    assert_eq!((err.limit, err.wait), ("tokens", None));
    assert!(err.to_string().contains("never fit the tokens per minute quota"), "{err}");
    assert_eq!(t0.elapsed(), Duration::ZERO);
    now(&limiter, 100).await;
}

#[tokio::test(start_paused = true)]
async fn settling_frees_or_uses_tokens() {
    let limiter = limiter(None, Some(100));
    let t0 = Instant::now();
    let reservation = now(&limiter, 90).await;
    assert_eq!(reservation.tokens(), 90);
    reservation.settle(10).await;
    now(&limiter, 90).await;
    assert_eq!(limiter.snapshot().tokens_in_window, 100);
    assert!(limiter.acquire(1, t0 + secs(1)).await.is_err());

    let limiter = self::limiter(None, Some(100));
    now(&limiter, 10).await.settle(95).await;
    let err = limiter.acquire(10, t0 + secs(1)).await.unwrap_err();
    assert_eq!(err.wait, Some(SPAN));
    // An unsettled reservation keeps its estimate.
    drop(now(&limiter, 5).await);
    assert_eq!(limiter.snapshot().tokens_in_window, 100);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_too_short_fails_at_once_with_the_wait() {
    let limiter = limiter(Some(1), None);
    let t0 = Instant::now();
    now(&limiter, 0).await;
    tokio::time::advance(secs(20)).await;
    let err = limiter.acquire(0, Instant::now() + secs(40)).await.unwrap_err();
    assert_eq!(err.wait, Some(SPAN - secs(20)));
    assert!(err.to_string().contains("requests per minute quota frees up in 40.5s"), "{err}");
    assert_eq!(t0.elapsed(), secs(20));
    assert_eq!(limiter.snapshot().waited_total, 0);
}

#[tokio::test(start_paused = true)]
async fn waiters_are_counted_until_admitted_or_cancelled() {
    let limiter = limiter(Some(1), None);
    let t0 = Instant::now();
    now(&limiter, 0).await;
    let first = tokio::spawn({
        let limiter = limiter.clone();
        async move { limiter.acquire(0, t0 + secs(600)).await }
    });
    let second = tokio::spawn({
        let limiter = limiter.clone();
        async move { limiter.acquire(0, t0 + secs(600)).await }
    });
    tokio::time::sleep(secs(1)).await;
    assert_eq!(limiter.snapshot().waiting, 2);
    second.abort();
    assert!(second.await.unwrap_err().is_cancelled());
    assert_eq!(limiter.snapshot().waiting, 1);
    first.await.unwrap().unwrap();
    assert_eq!(limiter.snapshot().waiting, 0);
    assert_between(t0.elapsed(), SPAN, SPAN + JITTER);
}

#[tokio::test(start_paused = true)]
async fn unlimited_admits_everything() {
    let limiter = limiter(None, None);
    for _ in 0..1000 {
        now(&limiter, 1_000_000).await.settle(3).await;
    }
    assert_eq!(limiter.snapshot().admitted_total, 1000);
}

#[tokio::test(start_paused = true)]
async fn a_zero_rpm_admits_nothing() {
    let limiter = limiter(Some(0), None);
    let err = limiter.acquire(0, Instant::now() + secs(600)).await.unwrap_err();
    assert_eq!((err.limit, err.wait), ("requests", None));
}

#[tokio::test(start_paused = true)]
async fn settling_is_send() {
    fn is_send<T: Send>(_: T) {}
    let limiter = limiter(Some(1), None);
    is_send(now(&limiter, 1).await.settle(2));
}

/// Real time: the connection to a port where nothing listens must be refused, not timed out.
#[tokio::test]
async fn an_unreachable_redis_switches_to_the_local_share_once() {
    let recorder = TestRecorder::default();
    let _guard = recorder.install();
    let url = format!("redis://127.0.0.1:{}", millrace_testkit::free_port());
    let conn = millrace_common::redis_conn::shared(&url).unwrap();
    let quota = Quota { rpm: Some(7), tpm: Some(90) };
    let config = LimiterConfig { replicas: 3, ..LimiterConfig::default() };
    let limiter = RateLimiter::shared("up", quota, config, conn, "test:fallback".into());
    assert_eq!(recorder.get("millrace_limiter_fallback{limiter=up}"), 0.0);

    // The share is 7 / 3 = 2 requests and 30 tokens.
    now(&limiter, 10).await;
    now(&limiter, 10).await;
    let err = limiter.acquire(1, Instant::now()).await.unwrap_err();
    assert_eq!(err.limit, "requests");
    assert_eq!(recorder.get("millrace_limiter_fallback{limiter=up}"), 1.0);
    let snapshot = limiter.snapshot();
    assert_eq!((snapshot.mode, snapshot.requests_in_window, snapshot.tokens_in_window), ("local-fallback", 2, 20));
    // More than the share but within the whole quota: it waits for Redis rather than never fitting.
    let limiter = RateLimiter::shared(
        "big",
        quota,
        LimiterConfig { replicas: 3, ..LimiterConfig::default() },
        millrace_common::redis_conn::shared(&url).unwrap(),
        "test:fallback-big".into(),
    );
    let err = limiter.acquire(60, Instant::now()).await.unwrap_err();
    assert_eq!(err.limit, "tokens");
    assert!(err.wait.is_some_and(|wait| wait <= FALLBACK_RETRY), "{err:?}");
}
