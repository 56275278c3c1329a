//! Requests-per-minute and tokens-per-minute limits toward one downstream, shared by every
//! replica through Redis, so that together they never exceed the upstream's quota and never
//! get a 429 for it.
//!
//! The algorithm is a **sliding-window log**, not GCRA: the upstream admits "at most RPM
//! requests and TPM tokens in any 60 s sliding window" (see `tools/fake-openai/src/quota.rs`);
//! GCRA either bursts past such a window or leaves quota unused, while a log of admissions
//! uses it to the last request. An admission counts for `window + margin`, so clock skew and
//! network jitter between us and the upstream never land request RPM+1 in the upstream's window.
//!
//! [`RateLimiter::acquire`] admits a request of an estimated token count, or waits until it
//! fits (the time the oldest entries leave the window, plus 0–20 ms of jitter so replicas woken
//! together do not collide), or fails at once with [`RateLimited`] when it cannot fit before
//! the caller's deadline, or ever (more tokens than the TPM). [`Reservation::settle`] replaces
//! the estimate with the tokens the response reported.
//!
//! A shared limiter keeps its log in Redis (one Lua script per admission, on Redis' clock).
//! When Redis fails, each replica limits itself to `quota / replicas` in a local log, logs one
//! warning, sets `millrace_limiter_fallback{limiter}` to 1, and tries Redis again after about a
//! second. Admissions made locally are not copied to Redis when it returns, so around a
//! recovery the upstream may see up to one replica-share more than the quota in one window.
//!
//! Written by hand: no crate offers a Redis-shared sliding-window log with token counts,
//! settlement and a local fallback (governor and redis-cell are GCRA).

mod log;
mod per_key;
mod redis_log;

pub use per_key::PerKeyLimiters;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use millrace_common::sync::lock;
use millrace_common::{ConfigError, Settings};
use rand::Rng as _;
use serde::Serialize;
use tokio::time::Instant;

use self::log::{Admission, Log, never_fits};
use self::redis_log::{RedisAdmission, RedisError, RedisLog};

/// How long one Redis call may take before the limiter falls back to its local share.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a limiter in fallback waits before trying Redis again.
pub const FALLBACK_RETRY: Duration = Duration::from_secs(1);
/// The most a waiter adds to its wait, so that replicas woken together do not all collide.
const MAX_JITTER_MS: u64 = 20;

/// An upstream quota; None is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Quota {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
}

impl Quota {
    /// Reads `{prefix}RPM` and `{prefix}TPM`; unset or 0 is unlimited.
    pub fn from_settings(settings: &Settings, prefix: &str) -> Result<Self, ConfigError> {
        let limit = |name: String| -> Result<Option<u64>, ConfigError> {
            Ok(settings.get::<u64>(&name)?.filter(|value| *value > 0))
        };
        Ok(Self { rpm: limit(format!("{prefix}RPM"))?, tpm: limit(format!("{prefix}TPM"))? })
    }

    pub fn is_unlimited(&self) -> bool {
        self.rpm.is_none() && self.tpm.is_none()
    }

    /// One replica's share of the quota: divided by `replicas`, rounded down, at least 1.
    pub fn share(&self, replicas: u32) -> Self {
        let replicas = u64::from(replicas.max(1));
        let share = |limit: Option<u64>| limit.map(|limit| (limit / replicas).max(1));
        Self { rpm: share(self.rpm), tpm: share(self.tpm) }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimiterConfig {
    /// The upstream's window: 60 s for per-minute quotas.
    pub window: Duration,
    /// Admissions count for `window + margin`.
    pub margin: Duration,
    /// Replicas sharing the quota; each uses `quota / replicas` while Redis is unreachable.
    pub replicas: u32,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        Self { window: Duration::from_secs(60), margin: Duration::from_millis(500), replicas: 1 }
    }
}

impl LimiterConfig {
    /// Reads `{prefix}LIMIT_WINDOW_MS` (default 60000), `{prefix}LIMIT_MARGIN_MS` (default 500)
    /// and `{prefix}REPLICAS` (default 1).
    pub fn from_settings(settings: &Settings, prefix: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            window: Duration::from_millis(settings.positive(&format!("{prefix}LIMIT_WINDOW_MS"), 60_000u64)?),
            margin: settings.duration_ms(&format!("{prefix}LIMIT_MARGIN_MS"), 500)?,
            replicas: settings.positive(&format!("{prefix}REPLICAS"), 1u32)?,
        })
    }

    fn span(&self) -> Duration {
        self.window + self.margin
    }
}

/// A request that cannot be admitted before the caller's deadline (`wait` is how long it
/// would take), or ever (`wait` is None: more tokens than the limit).
#[derive(Debug, Clone, thiserror::Error)]
pub struct RateLimited {
    pub limiter: String,
    /// `"requests"` or `"tokens"`.
    pub limit: &'static str,
    pub wait: Option<Duration>,
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.wait {
            Some(wait) => write!(
                f,
                "rate limit {}: the {} per minute quota frees up in {wait:?}, after the deadline",
                self.limiter, self.limit
            ),
            None => {
                write!(f, "rate limit {}: the request can never fit the {} per minute quota", self.limiter, self.limit)
            }
        }
    }
}

/// What a status page shows of a limiter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LimiterSnapshot {
    pub name: String,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    /// In the window as last seen (live for a local log, at the last admission for Redis).
    pub requests_in_window: u64,
    pub tokens_in_window: u64,
    /// Callers waiting for quota now.
    pub waiting: u64,
    pub admitted_total: u64,
    /// Acquires that had to wait.
    pub waited_total: u64,
    pub wait_ms_total: u64,
    pub longest_wait_ms: u64,
    /// `"shared"`, `"local"` or `"local-fallback"`.
    pub mode: &'static str,
}

#[derive(Debug, Default)]
struct Stats {
    requests_in_window: u64,
    tokens_in_window: u64,
    admitted_total: u64,
    waited_total: u64,
    wait_ms_total: u64,
    longest_wait_ms: u64,
}

struct Fallback {
    active: bool,
    /// When to try Redis again (while active).
    retry_at: Instant,
}

struct SharedBackend {
    redis: RedisLog,
    fallback: Mutex<Fallback>,
    /// This replica's share, used while Redis is unreachable.
    local: Mutex<Log>,
}

enum Backend {
    Local(Mutex<Log>),
    Shared(SharedBackend),
}

struct Inner {
    name: String,
    quota: Quota,
    config: LimiterConfig,
    backend: Backend,
    stats: Mutex<Stats>,
    waiting: AtomicU64,
}

/// A requests/tokens-per-minute limiter; cheap to clone (clones share the log).
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter").field("name", &self.inner.name).field("quota", &self.inner.quota).finish()
    }
}

/// One step of an acquire.
enum Step {
    Admitted(Reservation),
    Wait {
        wait: Duration,
        limit: &'static str,
        /// While in fallback: when to try Redis again, which may admit sooner.
        recheck: Option<Instant>,
    },
    Never(&'static str),
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl RateLimiter {
    /// A limiter shared by every replica through the Redis keys under `key` (e.g.
    /// `"millrace:limits:upstream-a"`). Redis calls time out after [`REDIS_TIMEOUT`].
    pub fn shared(
        name: impl Into<String>,
        quota: Quota,
        config: LimiterConfig,
        conn: redis::aio::ConnectionManager,
        key: String,
    ) -> Self {
        let local = Log::new(quota.share(config.replicas), config.span());
        let backend = Backend::Shared(SharedBackend {
            redis: RedisLog::new(conn, &key, config.span(), REDIS_TIMEOUT),
            fallback: Mutex::new(Fallback { active: false, retry_at: Instant::now() }),
            local: Mutex::new(local),
        });
        Self::with_backend(name.into(), quota, config, backend)
    }

    /// A limiter of this process alone, with the same semantics.
    pub fn local(name: impl Into<String>, quota: Quota, config: LimiterConfig) -> Self {
        let backend = Backend::Local(Mutex::new(Log::new(quota, config.span())));
        Self::with_backend(name.into(), quota, config, backend)
    }

    fn with_backend(name: String, quota: Quota, config: LimiterConfig, backend: Backend) -> Self {
        if matches!(backend, Backend::Shared(_)) {
            metrics::gauge!(crate::metrics::LIMITER_FALLBACK, "limiter" => name.clone()).set(0.0);
        }
        // Every series at zero from the start, so that rates and alerts have something to read.
        metrics::counter!(crate::metrics::LIMITER_ADMITTED, "limiter" => name.clone()).increment(0);
        for limit in ["requests", "tokens"] {
            metrics::counter!(crate::metrics::LIMITER_WAITS, "limiter" => name.clone(), "limit" => limit).increment(0);
        }
        metrics::gauge!(crate::metrics::LIMITER_WAITING, "limiter" => name.clone()).increment(0.0);
        let inner = Inner { name, quota, config, backend, stats: Mutex::default(), waiting: AtomicU64::new(0) };
        Self { inner: Arc::new(inner) }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn quota(&self) -> Quota {
        self.inner.quota
    }

    pub fn config(&self) -> &LimiterConfig {
        &self.inner.config
    }

    /// Waits until one request of `tokens` (an estimate) fits, or fails at once when it
    /// cannot fit before `deadline` (the error carries the wait), or never (tokens > TPM).
    /// A waiter counts in `millrace_limiter_waits_total` once, under the limit it first
    /// waited for. An unlimited quota admits at once without asking Redis.
    pub async fn acquire(&self, tokens: u64, deadline: Instant) -> Result<Reservation, RateLimited> {
        let inner = &self.inner;
        if inner.quota.is_unlimited() {
            inner.admitted(None);
            return Ok(Reservation::untracked(tokens));
        }
        if let Some(limit) = never_fits(inner.quota, tokens) {
            return Err(inner.limited(limit, None));
        }
        let started = Instant::now();
        let mut waiter: Option<WaitGuard<'_>> = None;
        loop {
            match self.step(tokens).await {
                Step::Admitted(reservation) => {
                    inner.admitted(waiter.is_some().then(|| started.elapsed()));
                    return Ok(reservation);
                }
                Step::Never(limit) => return Err(inner.limited(limit, None)),
                Step::Wait { wait, limit, recheck } => {
                    let now = Instant::now();
                    if now + wait > deadline {
                        return Err(inner.limited(limit, Some(wait)));
                    }
                    if waiter.is_none() {
                        waiter = Some(WaitGuard::new(inner, limit));
                    }
                    let jitter = Duration::from_millis(rand::rng().random_range(0..=MAX_JITTER_MS));
                    let mut wake = (now + wait + jitter).min(deadline);
                    if let Some(recheck) = recheck {
                        wake = wake.min(recheck.max(now));
                    }
                    tokio::time::sleep_until(wake).await;
                }
            }
        }
    }

    /// One attempt: Redis when shared and reachable (or due for a retry), else the local log.
    async fn step(&self, tokens: u64) -> Step {
        let inner = &self.inner;
        let shared = match &inner.backend {
            Backend::Local(log) => return self.local_step(log, tokens, false),
            Backend::Shared(shared) => shared,
        };
        let try_redis = {
            let fallback = lock(&shared.fallback);
            !fallback.active || Instant::now() >= fallback.retry_at
        };
        if try_redis {
            match shared.redis.admit(inner.quota, tokens).await {
                Ok(admission) => {
                    self.redis_recovered(shared);
                    return match admission {
                        RedisAdmission::Admitted { member, requests, tokens: total } => {
                            inner.seen(requests, total);
                            Step::Admitted(Reservation {
                                tokens,
                                held: Held::Redis { limiter: Arc::clone(inner), member },
                            })
                        }
                        RedisAdmission::Wait { wait, limit, requests, tokens: total } => {
                            inner.seen(requests, total);
                            Step::Wait { wait, limit, recheck: None }
                        }
                        RedisAdmission::Never { limit } => Step::Never(limit),
                    };
                }
                Err(err) => self.redis_failed(shared, &err),
            }
        }
        let retry_at = lock(&shared.fallback).retry_at;
        if never_fits(lock(&shared.local).quota(), tokens).is_some() {
            // Fits the whole quota but not this replica's share: wait for Redis.
            let wait = retry_at.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            return Step::Wait { wait, limit: "tokens", recheck: Some(retry_at) };
        }
        match self.local_step(&shared.local, tokens, true) {
            Step::Wait { wait, limit, .. } => Step::Wait { wait, limit, recheck: Some(retry_at) },
            other => other,
        }
    }

    fn local_step(&self, log: &Mutex<Log>, tokens: u64, fallback: bool) -> Step {
        let inner = &self.inner;
        let admission = lock(log).admit(tokens, Instant::now());
        match admission {
            Admission::Admitted { id, requests, tokens: total } => {
                inner.seen(requests, total);
                let held = Held::Local { limiter: Arc::clone(inner), id, fallback };
                Step::Admitted(Reservation { tokens, held })
            }
            Admission::Wait { wait, limit, requests, tokens: total } => {
                inner.seen(requests, total);
                Step::Wait { wait, limit, recheck: None }
            }
        }
    }

    fn redis_failed(&self, shared: &SharedBackend, err: &RedisError) {
        let mut fallback = lock(&shared.fallback);
        fallback.retry_at = Instant::now() + FALLBACK_RETRY;
        if !fallback.active {
            fallback.active = true;
            drop(fallback);
            let name = &self.inner.name;
            metrics::gauge!(crate::metrics::LIMITER_FALLBACK, "limiter" => name.clone()).set(1.0);
            let share = lock(&shared.local).quota();
            tracing::warn!(
                limiter = %name,
                error = %err,
                rpm = ?share.rpm,
                tpm = ?share.tpm,
                "redis unreachable: limiting this replica locally to its share of the quota"
            );
        }
    }

    fn redis_recovered(&self, shared: &SharedBackend) {
        let mut fallback = lock(&shared.fallback);
        if fallback.active {
            fallback.active = false;
            drop(fallback);
            let name = &self.inner.name;
            metrics::gauge!(crate::metrics::LIMITER_FALLBACK, "limiter" => name.clone()).set(0.0);
            tracing::info!(limiter = %name, "redis reachable again: limiting through the shared log");
        }
    }

    pub fn snapshot(&self) -> LimiterSnapshot {
        let inner = &self.inner;
        let now = Instant::now();
        let (mode, live) = match &inner.backend {
            Backend::Local(log) => ("local", Some(lock(log).usage(now))),
            Backend::Shared(shared) if lock(&shared.fallback).active => {
                ("local-fallback", Some(lock(&shared.local).usage(now)))
            }
            Backend::Shared(_) => ("shared", None),
        };
        let stats = lock(&inner.stats);
        let (requests_in_window, tokens_in_window) = live.unwrap_or((stats.requests_in_window, stats.tokens_in_window));
        LimiterSnapshot {
            name: inner.name.clone(),
            rpm: inner.quota.rpm,
            tpm: inner.quota.tpm,
            requests_in_window,
            tokens_in_window,
            waiting: inner.waiting.load(Ordering::Relaxed),
            admitted_total: stats.admitted_total,
            waited_total: stats.waited_total,
            wait_ms_total: stats.wait_ms_total,
            longest_wait_ms: stats.longest_wait_ms,
            mode,
        }
    }
}

impl Inner {
    fn seen(&self, requests: u64, tokens: u64) {
        let mut stats = lock(&self.stats);
        stats.requests_in_window = requests;
        stats.tokens_in_window = tokens;
    }

    /// Counts an admission; `waited` is how long it waited, if it had to.
    fn admitted(&self, waited: Option<Duration>) {
        let mut stats = lock(&self.stats);
        stats.admitted_total += 1;
        if let Some(waited) = waited {
            let ms = millis(waited);
            stats.waited_total += 1;
            stats.wait_ms_total = stats.wait_ms_total.saturating_add(ms);
            stats.longest_wait_ms = stats.longest_wait_ms.max(ms);
        }
        drop(stats);
        metrics::counter!(crate::metrics::LIMITER_ADMITTED, "limiter" => self.name.clone()).increment(1);
        metrics::histogram!(crate::metrics::LIMITER_WAIT, "limiter" => self.name.clone())
            .record(waited.unwrap_or_default().as_secs_f64());
    }

    fn limited(&self, limit: &'static str, wait: Option<Duration>) -> RateLimited {
        tracing::debug!(limiter = %self.name, limit, wait_ms = wait.map(millis), "rate limited");
        RateLimited { limiter: self.name.clone(), limit, wait }
    }
}

/// Counts one caller as waiting (the snapshot and `millrace_limiter_waiting`) until it is
/// admitted, gives up, or is cancelled.
struct WaitGuard<'a> {
    inner: &'a Inner,
}

impl<'a> WaitGuard<'a> {
    fn new(inner: &'a Inner, limit: &'static str) -> Self {
        inner.waiting.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metrics::LIMITER_WAITS, "limiter" => inner.name.clone(), "limit" => limit)
            .increment(1);
        metrics::gauge!(crate::metrics::LIMITER_WAITING, "limiter" => inner.name.clone()).increment(1.0);
        Self { inner }
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.inner.waiting.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!(crate::metrics::LIMITER_WAITING, "limiter" => self.inner.name.clone()).decrement(1.0);
    }
}

enum Held {
    /// Unlimited: nothing recorded.
    Untracked,
    Local {
        limiter: Arc<Inner>,
        id: u64,
        fallback: bool,
    },
    Redis {
        limiter: Arc<Inner>,
        member: String,
    },
}

/// An admitted request's place in the log, holding its estimated tokens. Settle it with the
/// actual tokens once the response reports them; dropped unsettled, the estimate stays.
pub struct Reservation {
    tokens: u64,
    held: Held,
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation").field("tokens", &self.tokens).finish_non_exhaustive()
    }
}

impl Reservation {
    fn untracked(tokens: u64) -> Self {
        Self { tokens, held: Held::Untracked }
    }

    /// The tokens reserved (the estimate).
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// Replaces the estimate with `actual_tokens` (from the response's usage), freeing or
    /// using quota accordingly. Nothing happens if the entry has already left the window, or
    /// if Redis cannot be reached (the estimate stays).
    pub async fn settle(self, actual_tokens: u64) {
        if actual_tokens == self.tokens {
            return;
        }
        match self.held {
            Held::Untracked => {}
            Held::Local { limiter, id, fallback } => {
                let log = match &limiter.backend {
                    Backend::Local(log) => log,
                    Backend::Shared(shared) if fallback => &shared.local,
                    Backend::Shared(_) => return,
                };
                lock(log).settle(id, actual_tokens, Instant::now());
            }
            Held::Redis { limiter, member } => {
                let Backend::Shared(shared) = &limiter.backend else { return };
                if let Err(err) = shared.redis.settle(&member, actual_tokens).await {
                    tracing::debug!(limiter = %limiter.name, error = %err, "could not settle a reservation; the estimate stays");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
