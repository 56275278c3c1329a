//! A circuit breaker per downstream: once a downstream fails most calls (or several in a row),
//! stop calling it for a while instead of spending every caller's deadline on it, then let a
//! few probe calls through to see whether it is back.
//!
//! - **Closed**: calls go through; their outcomes feed a sliding window (bucketed counts) and
//!   a run of consecutive failures. At a failure, the breaker opens when the run reaches
//!   `consecutive_failures`, or when the window holds at least `min_calls` outcomes and the
//!   share of failures is at or above `failure_rate`.
//! - **Open**: every call is rejected at once with the time left. When the period ends the
//!   breaker becomes half-open, lazily, at the next call or state read ([`CircuitBreaker::ready`]
//!   sleeps until then).
//! - **Half-open**: at most `half_open_probes` calls are outstanding. `half_open_probes`
//!   successes close the breaker (and forget the window, the run and the doubled period); one
//!   failure re-opens it for twice the previous period, capped at `max_open_for`.
//!
//! A [`CallPermit`] dropped without an outcome (a cancelled call, an error that says nothing
//! about the downstream's health) is neutral: not counted, and it frees its probe slot.
//! Outcomes of permits issued before the latest transition are ignored, so a slow call from
//! before an opening cannot close or re-open the breaker.
//!
//! Written by hand: the tower ecosystem has no maintained breaker with half-open probes,
//! a doubling open period and metrics, and the state machine is small.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use millrace_common::{ConfigError, HandlerError, Settings};
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

/// The window is counted in this many buckets, so a busy breaker keeps a bounded amount of
/// state; an outcome leaves the window up to one bucket (window / 20) late.
const BUCKETS: u32 = 20;

#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// The sliding window of the failure rate.
    pub window: Duration,
    /// Outcomes in the window before the failure rate counts.
    pub min_calls: u32,
    /// Open at or above this share of failures in the window (0 < rate <= 1).
    pub failure_rate: f64,
    /// Or after this many failures in a row.
    pub consecutive_failures: u32,
    /// The first open period.
    pub open_for: Duration,
    /// The period doubles on each re-opening (a half-open probe failed) up to this.
    pub max_open_for: Duration,
    /// Calls let through at once while half-open; this many successes close the breaker.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(30),
            min_calls: 10,
            failure_rate: 0.5,
            consecutive_failures: 5,
            open_for: Duration::from_secs(5),
            max_open_for: Duration::from_secs(60),
            half_open_probes: 1,
        }
    }
}

impl BreakerConfig {
    /// Reads `{prefix}BREAKER_WINDOW_MS`, `{prefix}BREAKER_MIN_CALLS`,
    /// `{prefix}BREAKER_FAILURE_RATE`, `{prefix}BREAKER_CONSECUTIVE_FAILURES`,
    /// `{prefix}BREAKER_OPEN_MS`, `{prefix}BREAKER_MAX_OPEN_MS` and
    /// `{prefix}BREAKER_HALF_OPEN_PROBES` (all optional, defaults as [`Default`]); `prefix` is
    /// `""` or e.g. `"LLM_"`. An error names the variable.
    pub fn from_settings(settings: &Settings, prefix: &str) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let name = |suffix: &str| format!("{prefix}BREAKER_{suffix}");
        let ms = |suffix: &str, default: Duration| -> Result<Duration, ConfigError> {
            let default = u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
            Ok(Duration::from_millis(settings.positive(&name(suffix), default)?))
        };
        let failure_rate: f64 = settings.get_or(&name("FAILURE_RATE"), defaults.failure_rate)?;
        if failure_rate.is_nan() || failure_rate <= 0.0 || failure_rate > 1.0 {
            return Err(ConfigError::new(&name("FAILURE_RATE"), "must be greater than 0 and at most 1"));
        }
        let open_for = ms("OPEN_MS", defaults.open_for)?;
        let max_open_for = ms("MAX_OPEN_MS", defaults.max_open_for)?;
        if max_open_for < open_for {
            return Err(ConfigError::new(
                &name("MAX_OPEN_MS"),
                format!("must not be below MILLRACE_{}", name("OPEN_MS")),
            ));
        }
        Ok(Self {
            window: ms("WINDOW_MS", defaults.window)?,
            min_calls: settings.positive(&name("MIN_CALLS"), defaults.min_calls)?,
            failure_rate,
            consecutive_failures: settings.positive(&name("CONSECUTIVE_FAILURES"), defaults.consecutive_failures)?,
            open_for,
            max_open_for,
            half_open_probes: settings.positive(&name("HALF_OPEN_PROBES"), defaults.half_open_probes)?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The value of the `millrace_breaker_state` gauge.
    fn gauge(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::HalfOpen => 1.0,
            Self::Open => 2.0,
        }
    }

    /// The state's name as status pages and metrics show it (the same as its serde form).
    pub fn label(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::HalfOpen => "half_open",
            Self::Open => "open",
        }
    }
}

/// What a status page shows of a breaker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerSnapshot {
    pub name: String,
    pub state: BreakerState,
    pub calls_in_window: u64,
    pub failures_in_window: u64,
    pub consecutive_failures: u32,
    /// Times opened since the breaker last closed.
    pub openings: u32,
    /// While open: how long until it lets a probe through.
    pub retry_in_ms: Option<u64>,
}

/// A call refused because the breaker is open (or half-open with every probe slot taken, in
/// which case `retry_in` is zero: the probe's outcome decides, [`CircuitBreaker::ready`] says when).
#[derive(Debug, Clone, thiserror::Error)]
#[error("circuit breaker {name} is open; retry in {retry_in:?}")]
pub struct BreakerOpen {
    pub name: String,
    pub retry_in: Duration,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { in_flight: u32, successes: u32 },
}

impl Phase {
    fn state(self) -> BreakerState {
        match self {
            Self::Closed => BreakerState::Closed,
            Self::Open { .. } => BreakerState::Open,
            Self::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Success,
    Failure,
    Neutral,
}

/// Outcomes in the sliding window, counted per bucket of `width`.
#[derive(Debug)]
struct Window {
    span: Duration,
    width: Duration,
    buckets: VecDeque<Bucket>,
    calls: u64,
    failures: u64,
}

#[derive(Debug)]
struct Bucket {
    start: Instant,
    calls: u64,
    failures: u64,
}

impl Window {
    fn new(span: Duration) -> Self {
        let width = (span / BUCKETS).max(Duration::from_millis(1));
        Self { span, width, buckets: VecDeque::new(), calls: 0, failures: 0 }
    }

    /// Drops the buckets whose newest possible outcome is older than the window.
    fn evict(&mut self, now: Instant) {
        while let Some(bucket) = self.buckets.front() {
            if bucket.start + self.width + self.span > now {
                break;
            }
            self.calls -= bucket.calls;
            self.failures -= bucket.failures;
            self.buckets.pop_front();
        }
    }

    fn record(&mut self, now: Instant, failed: bool) {
        self.evict(now);
        let failures = u64::from(failed);
        match self.buckets.back_mut() {
            Some(bucket) if now < bucket.start + self.width => {
                bucket.calls += 1;
                bucket.failures += failures;
            }
            _ => self.buckets.push_back(Bucket { start: now, calls: 1, failures }),
        }
        self.calls += 1;
        self.failures += failures;
    }

    fn clear(&mut self) {
        self.buckets.clear();
        self.calls = 0;
        self.failures = 0;
    }
}

#[derive(Debug)]
struct Core {
    phase: Phase,
    /// Bumped at every transition; a permit's outcome counts only within its own epoch.
    epoch: u64,
    window: Window,
    consecutive: u32,
    openings: u32,
    /// The next (or current) open period: `open_for`, doubled at each re-opening.
    open_period: Duration,
}

struct Shared {
    name: String,
    config: BreakerConfig,
    core: Mutex<Core>,
    /// Signalled at every transition and whenever a probe slot frees up, for [`CircuitBreaker::ready`].
    changes: watch::Sender<u64>,
}

/// A circuit breaker; cheap to clone (clones share the state), safe to use from any task.
#[derive(Clone)]
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker").field("name", &self.shared.name).field("state", &self.state()).finish()
    }
}

impl CircuitBreaker {
    pub fn new(name: impl Into<String>, config: BreakerConfig) -> Self {
        let core = Core {
            phase: Phase::Closed,
            epoch: 0,
            window: Window::new(config.window),
            consecutive: 0,
            openings: 0,
            open_period: config.open_for,
        };
        let breaker = Self {
            shared: Arc::new(Shared {
                name: name.into(),
                config,
                core: Mutex::new(core),
                changes: watch::Sender::new(0),
            }),
        };
        metrics::gauge!(crate::metrics::BREAKER_STATE, "breaker" => breaker.shared.name.clone())
            .set(BreakerState::Closed.gauge());
        // Every series at zero from the start, so that rates and alerts have something to read.
        for state in [BreakerState::Closed, BreakerState::HalfOpen, BreakerState::Open] {
            metrics::counter!(crate::metrics::BREAKER_TRANSITIONS, "breaker" => breaker.shared.name.clone(), "to" => state.label())
                .increment(0);
        }
        metrics::counter!(crate::metrics::BREAKER_REJECTED, "breaker" => breaker.shared.name.clone()).increment(0);
        breaker
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.shared.config
    }

    /// The current state; an open breaker whose period has ended reports (and becomes) half-open.
    pub fn state(&self) -> BreakerState {
        let mut core = self.lock();
        self.refresh(&mut core, Instant::now());
        core.phase.state()
    }

    /// A permit to make one call, or the refusal when the breaker is open (or half-open with
    /// every probe slot taken). Resolve the permit with the call's outcome.
    pub fn try_call(&self) -> Result<CallPermit, BreakerOpen> {
        let now = Instant::now();
        let mut core = self.lock();
        self.refresh(&mut core, now);
        let epoch = core.epoch;
        let retry_in = match core.phase {
            Phase::Closed => return Ok(CallPermit::new(self.clone(), epoch)),
            Phase::HalfOpen { in_flight, successes } if in_flight < self.shared.config.half_open_probes => {
                core.phase = Phase::HalfOpen { in_flight: in_flight + 1, successes };
                return Ok(CallPermit::new(self.clone(), epoch));
            }
            Phase::HalfOpen { .. } => Duration::ZERO,
            Phase::Open { until } => until.saturating_duration_since(now),
        };
        drop(core);
        metrics::counter!(crate::metrics::BREAKER_REJECTED, "breaker" => self.shared.name.clone()).increment(1);
        Err(BreakerOpen { name: self.shared.name.clone(), retry_in })
    }

    /// Resolves when calls may be tried: `usize::MAX` when closed, the free probe slots (at
    /// least 1) when half-open. While open, or half-open with every slot taken, it waits for
    /// the period to end or the state to change, and checks again. Several waiters may be told
    /// the same free slot; [`try_call`](Self::try_call) decides who gets it.
    pub async fn ready(&self) -> usize {
        let mut changes = self.shared.changes.subscribe();
        loop {
            // Marked seen before the check: any change after it wakes the wait below.
            changes.borrow_and_update();
            let open_until = {
                let mut core = self.lock();
                self.refresh(&mut core, Instant::now());
                match core.phase {
                    Phase::Closed => return usize::MAX,
                    Phase::HalfOpen { in_flight, .. } if in_flight < self.shared.config.half_open_probes => {
                        return (self.shared.config.half_open_probes - in_flight) as usize;
                    }
                    Phase::HalfOpen { .. } => None,
                    Phase::Open { until } => Some(until),
                }
            };
            match open_until {
                Some(until) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => {}
                        _ = changes.changed() => {}
                    }
                }
                // The sender lives as long as `self`, so this cannot fail.
                None => {
                    let _ = changes.changed().await;
                }
            }
        }
    }

    pub fn snapshot(&self) -> BreakerSnapshot {
        let now = Instant::now();
        let mut core = self.lock();
        self.refresh(&mut core, now);
        core.window.evict(now);
        BreakerSnapshot {
            name: self.shared.name.clone(),
            state: core.phase.state(),
            calls_in_window: core.window.calls,
            failures_in_window: core.window.failures,
            consecutive_failures: core.consecutive,
            openings: core.openings,
            retry_in_ms: match core.phase {
                Phase::Open { until } => {
                    Some(u64::try_from(until.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX))
                }
                _ => None,
            },
        }
    }

    /// Makes one step's call to the downstream through the breaker: refused at once while
    /// open (deferred, like the outage it stands for). A deferred failure (the downstream is
    /// unavailable) counts against the breaker, a success for it; any other failure (a quota,
    /// a bad request) says nothing about its health and counts for neither, nor does a call
    /// cancelled before it finishes.
    pub async fn call<T>(&self, call: impl Future<Output = Result<T, HandlerError>>) -> Result<T, HandlerError> {
        let permit = self.try_call().map_err(|open| HandlerError::Deferred(open.to_string()))?;
        let result = call.await;
        match &result {
            Ok(_) => permit.success(),
            Err(HandlerError::Deferred(_)) => permit.failure(),
            Err(HandlerError::Retry(_) | HandlerError::Fatal(_)) => drop(permit),
        }
        result
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        // The state stays consistent at every step, so a panic elsewhere leaves it usable.
        self.shared.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Open → half-open once the period has ended.
    fn refresh(&self, core: &mut Core, now: Instant) {
        if let Phase::Open { until } = core.phase
            && now >= until
        {
            self.transition(core, Phase::HalfOpen { in_flight: 0, successes: 0 });
        }
    }

    fn record(&self, epoch: u64, outcome: Outcome) {
        let now = Instant::now();
        let mut core = self.lock();
        if core.epoch != epoch {
            return;
        }
        let config = &self.shared.config;
        match core.phase {
            Phase::Closed => match outcome {
                Outcome::Success => {
                    core.window.record(now, false);
                    core.consecutive = 0;
                }
                Outcome::Failure => {
                    core.window.record(now, true);
                    core.consecutive = core.consecutive.saturating_add(1);
                    let window = &core.window;
                    let rate_reached = window.calls >= u64::from(config.min_calls)
                        && window.failures as f64 >= config.failure_rate * window.calls as f64;
                    if core.consecutive >= config.consecutive_failures || rate_reached {
                        core.open_period = config.open_for;
                        self.open(&mut core, now);
                    }
                }
                Outcome::Neutral => {}
            },
            Phase::HalfOpen { in_flight, successes } => {
                let in_flight = in_flight.saturating_sub(1);
                match outcome {
                    Outcome::Success if successes + 1 >= config.half_open_probes => {
                        core.window.clear();
                        core.consecutive = 0;
                        core.openings = 0;
                        core.open_period = config.open_for;
                        self.transition(&mut core, Phase::Closed);
                    }
                    Outcome::Success => {
                        core.phase = Phase::HalfOpen { in_flight, successes: successes + 1 };
                        self.shared.changes.send_modify(|_| {});
                    }
                    Outcome::Failure => {
                        core.open_period = core.open_period.saturating_mul(2).min(config.max_open_for);
                        self.open(&mut core, now);
                    }
                    Outcome::Neutral => {
                        core.phase = Phase::HalfOpen { in_flight, successes };
                        self.shared.changes.send_modify(|_| {});
                    }
                }
            }
            // No permit is handed out while open, so none can carry this epoch.
            Phase::Open { .. } => {}
        }
    }

    fn open(&self, core: &mut Core, now: Instant) {
        core.openings = core.openings.saturating_add(1);
        let period = core.open_period;
        self.transition(core, Phase::Open { until: now + period });
    }

    fn transition(&self, core: &mut Core, to: Phase) {
        let from = core.phase.state();
        core.phase = to;
        core.epoch += 1;
        let to = to.state();
        let name = &self.shared.name;
        metrics::gauge!(crate::metrics::BREAKER_STATE, "breaker" => name.clone()).set(to.gauge());
        metrics::counter!(crate::metrics::BREAKER_TRANSITIONS, "breaker" => name.clone(), "to" => to.label())
            .increment(1);
        let period_ms = u64::try_from(core.open_period.as_millis()).unwrap_or(u64::MAX);
        match to {
            BreakerState::Open => tracing::warn!(
                breaker = %name,
                from = from.label(),
                open_ms = period_ms,
                calls_in_window = core.window.calls,
                failures_in_window = core.window.failures,
                consecutive_failures = core.consecutive,
                openings = core.openings,
                "circuit breaker opened"
            ),
            BreakerState::Closed => tracing::info!(breaker = %name, "circuit breaker closed"),
            BreakerState::HalfOpen => {
                tracing::info!(breaker = %name, probes = self.shared.config.half_open_probes, "circuit breaker half-open")
            }
        }
        let epoch = core.epoch;
        self.shared.changes.send_replace(epoch);
    }
}

/// Leave to make one call through a [`CircuitBreaker`]. Resolve it with
/// [`success`](Self::success) or [`failure`](Self::failure); dropping it unresolved is neutral
/// (not counted, and a half-open probe slot is freed).
#[must_use = "a permit records nothing unless resolved with success() or failure()"]
pub struct CallPermit {
    breaker: Option<CircuitBreaker>,
    epoch: u64,
}

impl fmt::Debug for CallPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallPermit").field("epoch", &self.epoch).finish_non_exhaustive()
    }
}

impl CallPermit {
    fn new(breaker: CircuitBreaker, epoch: u64) -> Self {
        Self { breaker: Some(breaker), epoch }
    }

    pub fn success(mut self) {
        self.resolve(Outcome::Success);
    }

    pub fn failure(mut self) {
        self.resolve(Outcome::Failure);
    }

    fn resolve(&mut self, outcome: Outcome) {
        if let Some(breaker) = self.breaker.take() {
            breaker.record(self.epoch, outcome);
        }
    }
}

impl Drop for CallPermit {
    fn drop(&mut self) {
        self.resolve(Outcome::Neutral);
    }
}

#[cfg(test)]
mod tests;
