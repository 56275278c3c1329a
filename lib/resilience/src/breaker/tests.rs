use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::test_metrics::TestRecorder;

fn config() -> BreakerConfig {
    BreakerConfig {
        window: Duration::from_secs(30),
        min_calls: 1000,
        failure_rate: 0.5,
        consecutive_failures: 3,
        open_for: Duration::from_secs(1),
        max_open_for: Duration::from_secs(3),
        half_open_probes: 1,
    }
}

fn fail(breaker: &CircuitBreaker, times: u32) {
    for _ in 0..times {
        breaker.try_call().unwrap().failure();
    }
}

fn succeed(breaker: &CircuitBreaker, times: u32) {
    for _ in 0..times {
        breaker.try_call().unwrap().success();
    }
}

fn retry_in(breaker: &CircuitBreaker) -> Duration {
    breaker.try_call().unwrap_err().retry_in
}

#[test]
fn defaults_and_settings() {
    let defaults = BreakerConfig::default();
    assert_eq!(BreakerConfig::from_settings(&Settings::default(), "").unwrap(), defaults);
    let settings = Settings::from_pairs([
        ("LLM_BREAKER_WINDOW_MS", "10000"),
        ("LLM_BREAKER_MIN_CALLS", "4"),
        ("LLM_BREAKER_FAILURE_RATE", "0.25"),
        ("LLM_BREAKER_CONSECUTIVE_FAILURES", "2"),
        ("LLM_BREAKER_OPEN_MS", "100"),
        ("LLM_BREAKER_MAX_OPEN_MS", "800"),
        ("LLM_BREAKER_HALF_OPEN_PROBES", "3"),
    ]);
    let config = BreakerConfig::from_settings(&settings, "LLM_").unwrap();
    assert_eq!(
        config,
        BreakerConfig {
            window: Duration::from_secs(10),
            min_calls: 4,
            failure_rate: 0.25,
            consecutive_failures: 2,
            open_for: Duration::from_millis(100),
            max_open_for: Duration::from_millis(800),
            half_open_probes: 3,
        }
    );
    for (name, value) in [
        ("MILLRACE_BREAKER_FAILURE_RATE", "0"),
        ("MILLRACE_BREAKER_FAILURE_RATE", "1.5"),
        ("MILLRACE_BREAKER_FAILURE_RATE", "NaN"),
        ("MILLRACE_BREAKER_MIN_CALLS", "0"),
        ("MILLRACE_BREAKER_MAX_OPEN_MS", "10"),
        ("MILLRACE_BREAKER_HALF_OPEN_PROBES", "x"),
    ] {
        let err = BreakerConfig::from_settings(&Settings::from_pairs([(name, value)]), "").unwrap_err();
        assert_eq!(err.variable, name, "{value}");
    }
}

#[tokio::test(start_paused = true)]
async fn opens_after_consecutive_failures() {
    let recorder = TestRecorder::default();
    let _guard = recorder.install();
    let breaker = CircuitBreaker::new("b", config());
    fail(&breaker, 2);
    succeed(&breaker, 1);
    fail(&breaker, 2);
    assert_eq!(breaker.state(), BreakerState::Closed);
    fail(&breaker, 1);
    assert_eq!(breaker.state(), BreakerState::Open);
    let snapshot = breaker.snapshot();
    assert_eq!(
        (snapshot.calls_in_window, snapshot.failures_in_window, snapshot.consecutive_failures, snapshot.openings),
        (6, 5, 3, 1)
    );
    assert_eq!(snapshot.retry_in_ms, Some(1000));
    assert_eq!(recorder.get("millrace_breaker_state{breaker=b}"), 2.0);
    assert_eq!(recorder.get("millrace_breaker_transitions_total{breaker=b,to=open}"), 1.0);
}

#[tokio::test(start_paused = true)]
async fn failure_rate_opens_only_after_min_calls() {
    let breaker = CircuitBreaker::new(
        "b",
        BreakerConfig { min_calls: 10, consecutive_failures: 1000, failure_rate: 0.5, ..config() },
    );
    // 5 failures in 9 calls: over the rate, but fewer calls than min_calls.
    for _ in 0..4 {
        fail(&breaker, 1);
        succeed(&breaker, 1);
    }
    fail(&breaker, 1);
    assert_eq!(breaker.state(), BreakerState::Closed);
    // The tenth call succeeds: 5/10 is at the rate, but only a failure opens.
    succeed(&breaker, 1);
    assert_eq!(breaker.state(), BreakerState::Closed);
    fail(&breaker, 1);
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn outcomes_leave_the_window() {
    let breaker = CircuitBreaker::new(
        "b",
        BreakerConfig { min_calls: 4, consecutive_failures: 1000, failure_rate: 0.5, ..config() },
    );
    fail(&breaker, 2);
    succeed(&breaker, 1);
    // A window and a bucket later, those three are gone: one failure is 1 call, below min_calls.
    tokio::time::advance(Duration::from_secs(30) + Duration::from_millis(1600)).await;
    fail(&breaker, 1);
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(breaker.snapshot().calls_in_window, 1);
    fail(&breaker, 2);
    assert_eq!(breaker.state(), BreakerState::Closed);
    fail(&breaker, 1);
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_rejects_without_calling() {
    let recorder = TestRecorder::default();
    let _guard = recorder.install();
    let breaker = CircuitBreaker::new("b", config());
    fail(&breaker, 3);
    let calls = AtomicU32::new(0);
    let result = breaker
        .call(async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .await;
    // Refused as deferred: the entry waits for the downstream without using up a delivery.
    let Err(HandlerError::Deferred(reason)) = result else { panic!("expected a refusal") };
    assert_eq!(reason, "circuit breaker b is open; retry in 1s");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(recorder.get("millrace_breaker_rejected_total{breaker=b}"), 1.0);
}

#[tokio::test(start_paused = true)]
async fn half_open_lets_exactly_n_probes_through_at_once() {
    let breaker = CircuitBreaker::new("b", BreakerConfig { half_open_probes: 2, ..config() });
    fail(&breaker, 3);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(breaker.state(), BreakerState::HalfOpen);

    // Five concurrent calls, each held until released: only two reach the downstream.
    let entered = AtomicU32::new(0);
    let release = tokio::sync::Notify::new();
    let calls = (0..5).map(|_| {
        breaker.call(async {
            entered.fetch_add(1, Ordering::SeqCst);
            release.notified().await;
            Ok(())
        })
    });
    let all = futures::future::join_all(calls);
    tokio::pin!(all);
    tokio::select! {
        _ = &mut all => panic!("the probes must still be running"),
        () = tokio::time::sleep(Duration::from_millis(10)) => {}
    }
    assert_eq!(entered.load(Ordering::SeqCst), 2);
    assert_eq!(breaker.try_call().unwrap_err().retry_in, Duration::ZERO);
    release.notify_waiters();
    let results = all.await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 2);
    assert_eq!(results.iter().filter(|r| matches!(r, Err(HandlerError::Deferred(_)))).count(), 3);
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn probe_successes_close_and_reset() {
    let recorder = TestRecorder::default();
    let _guard = recorder.install();
    let breaker = CircuitBreaker::new("b", BreakerConfig { half_open_probes: 2, ..config() });
    fail(&breaker, 3);
    tokio::time::advance(Duration::from_secs(1)).await;
    let first = breaker.try_call().unwrap();
    let second = breaker.try_call().unwrap();
    first.success();
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    second.success();
    assert_eq!(breaker.state(), BreakerState::Closed);
    let snapshot = breaker.snapshot();
    assert_eq!(
        (snapshot.calls_in_window, snapshot.failures_in_window, snapshot.consecutive_failures, snapshot.openings),
        (0, 0, 0, 0)
    );
    assert_eq!(snapshot.retry_in_ms, None);
    assert_eq!(recorder.get("millrace_breaker_state{breaker=b}"), 0.0);
    assert_eq!(recorder.get("millrace_breaker_transitions_total{breaker=b,to=half_open}"), 1.0);
    assert_eq!(recorder.get("millrace_breaker_transitions_total{breaker=b,to=closed}"), 1.0);
    // The run starts over: two failures do not open it.
    fail(&breaker, 2);
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_for_a_doubled_period_up_to_the_cap() {
    let breaker = CircuitBreaker::new("b", config());
    fail(&breaker, 3);
    assert_eq!(retry_in(&breaker), Duration::from_secs(1));
    for (expected, openings) in [(2, 2), (3, 3), (3, 4)] {
        tokio::time::advance(breaker.snapshot().retry_in_ms.map(Duration::from_millis).unwrap()).await;
        fail(&breaker, 1);
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(retry_in(&breaker), Duration::from_secs(expected));
        assert_eq!(breaker.snapshot().openings, openings);
    }
    tokio::time::advance(Duration::from_secs(3)).await;
    succeed(&breaker, 1);
    assert_eq!(breaker.state(), BreakerState::Closed);
    // Closing resets the period.
    fail(&breaker, 3);
    assert_eq!(retry_in(&breaker), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn neutral_and_stale_permits_do_not_count() {
    let breaker = CircuitBreaker::new("b", BreakerConfig { consecutive_failures: 2, ..config() });
    fail(&breaker, 1);
    for _ in 0..5 {
        drop(breaker.try_call().unwrap());
    }
    assert_eq!(breaker.snapshot().calls_in_window, 1);
    assert_eq!(breaker.state(), BreakerState::Closed);

    // A call started while closed that succeeds after the breaker opened is ignored, and so is
    // one that fails after it went half-open (it must not re-open it).
    let slow_success = breaker.try_call().unwrap();
    let slow_failure = breaker.try_call().unwrap();
    fail(&breaker, 1);
    assert_eq!(breaker.state(), BreakerState::Open);
    slow_success.success();
    assert_eq!(breaker.state(), BreakerState::Open);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    slow_failure.failure();
    assert_eq!(breaker.state(), BreakerState::HalfOpen);

    // A dropped probe frees its slot without deciding anything.
    let probe = breaker.try_call().unwrap();
    assert!(breaker.try_call().is_err());
    drop(probe);
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    breaker.try_call().unwrap().success();
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn ready_waits_until_half_open_and_for_a_free_probe_slot() {
    let breaker = CircuitBreaker::new("b", BreakerConfig { open_for: Duration::from_secs(5), ..config() });
    assert_eq!(breaker.ready().await, usize::MAX);
    fail(&breaker, 3);
    let started = Instant::now();
    assert_eq!(breaker.ready().await, 1);
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(breaker.state(), BreakerState::HalfOpen);

    // The only slot is taken: ready() waits until the probe resolves.
    let probe = breaker.try_call().unwrap();
    let waiter = tokio::spawn({
        let breaker = breaker.clone();
        async move { breaker.ready().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished());
    probe.success();
    assert_eq!(waiter.await.unwrap(), usize::MAX);
}

#[tokio::test(start_paused = true)]
async fn only_deferred_failures_count_against_the_breaker() {
    let breaker = CircuitBreaker::new("b", BreakerConfig { consecutive_failures: 2, ..config() });
    let deferred = || async { Err::<(), _>(HandlerError::Deferred("down".into())) };
    let retry = || async { Err::<(), _>(HandlerError::Retry("quota".into())) };
    let fatal = || async { Err::<(), _>(HandlerError::Fatal("bad input".into())) };

    assert_eq!(breaker.call(deferred()).await, Err(HandlerError::Deferred("down".into())));
    // A quota or a bad request says nothing about the downstream's health: neither resets
    // the run of failures nor adds to it.
    assert_eq!(breaker.call(retry()).await, Err(HandlerError::Retry("quota".into())));
    assert_eq!(breaker.call(fatal()).await, Err(HandlerError::Fatal("bad input".into())));
    assert_eq!(breaker.snapshot().calls_in_window, 1);
    assert_eq!(breaker.state(), BreakerState::Closed);
    breaker.call(deferred()).await.unwrap_err();
    assert_eq!(breaker.state(), BreakerState::Open);

    // Half-open: a neutral outcome frees the probe slot without closing or re-opening.
    tokio::time::advance(Duration::from_secs(1)).await;
    breaker.call(retry()).await.unwrap_err();
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    assert_eq!(breaker.call(async { Ok(7) }).await, Ok(7));
    assert_eq!(breaker.state(), BreakerState::Closed);
}
