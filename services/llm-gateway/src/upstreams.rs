//! The upstreams behind the gateway, each with its own concurrency limit, rate limiter
//! (shared by every gateway replica through Redis) and circuit breaker, and the choice of which
//! one takes the next attempt of a call.
//!
//! Order of choice for a model: upstreams serving it, lowest priority first; within a priority,
//! a weighted random order (so calls spread by weight); upstreams that already failed this call
//! go last. The first that is closed (breaker), has a free slot and has quota now takes the
//! attempt. When none can go now, the call waits for the first one whose breaker lets it
//! through — for its slot, then its quota — within the call's deadline: an open or exhausted
//! upstream hands its share to the next priority, and waits happen only when every
//! upstream is busy.

use millrace_common::sync::lock;
use millrace_resilience::{BreakerOpen, BreakerState, CallPermit, CircuitBreaker, RateLimiter, Reservation};
use rand::Rng as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::UpstreamConfig;
use crate::error::UpstreamError;
use crate::upstream::Upstream;

pub struct Member {
    pub config: UpstreamConfig,
    pub client: Arc<dyn Upstream>,
    /// None when the upstream has neither an RPM nor a TPM limit.
    pub limiter: Option<RateLimiter>,
    pub breaker: CircuitBreaker,
    pub slots: Arc<Semaphore>,
    /// Until when the upstream asked (429 with `Retry-After`) not to be called.
    cooldown: Mutex<Option<Instant>>,
    /// The last background probe of the upstream (`Gateway::probe_upstreams`).
    probe: Mutex<Option<Probe>>,
}

/// What the last probe of an upstream found. Informational: shown in `/v1/limits` and the
/// `millrace_llm_gateway_upstream_up` gauge, never used for readiness or routing (the breaker
/// decides routing from real calls).
#[derive(Debug, Clone)]
pub struct Probe {
    pub at: Instant,
    pub result: Result<(), String>,
}

impl Member {
    pub fn new(
        config: UpstreamConfig,
        client: Arc<dyn Upstream>,
        limiter: Option<RateLimiter>,
        breaker: CircuitBreaker,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(config.max_concurrency));
        Self { config, client, limiter, breaker, slots, cooldown: Mutex::new(None), probe: Mutex::new(None) }
    }

    pub fn last_probe(&self) -> Option<Probe> {
        lock(&self.probe).clone()
    }

    pub fn record_probe(&self, result: Result<(), String>) {
        *lock(&self.probe) = Some(Probe { at: Instant::now(), result });
    }

    /// Honours an upstream's `Retry-After` for every later call, not just the one that got it:
    /// the longest one asked for wins.
    pub fn cool_down(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut cooldown = lock(&self.cooldown);
        if cooldown.is_none_or(|current| current < until) {
            *cooldown = Some(until);
        }
    }

    /// How long the upstream still asked not to be called.
    pub fn cooling_for(&self) -> Option<Duration> {
        let cooldown = *lock(&self.cooldown);
        cooldown.map(|until| until.saturating_duration_since(Instant::now())).filter(|left| !left.is_zero())
    }

    pub fn in_flight(&self) -> usize {
        self.config.max_concurrency.saturating_sub(self.slots.available_permits())
    }
}

/// What one attempt holds while it runs: the upstream, its breaker permit, a concurrency slot
/// and the quota reserved for it.
pub struct Lease {
    pub member: Arc<Member>,
    pub breaker: CallPermit,
    pub reservation: Option<Reservation>,
    _slot: OwnedSemaphorePermit,
}

pub struct Upstreams {
    members: Vec<Arc<Member>>,
}

impl Upstreams {
    /// Member names are unique: the config refuses duplicates.
    pub fn new(members: Vec<Member>) -> Self {
        Self { members: members.into_iter().map(Arc::new).collect() }
    }

    pub fn members(&self) -> &[Arc<Member>] {
        &self.members
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn serves(&self, model: &str) -> bool {
        self.members.iter().any(|m| m.config.serves(model))
    }

    /// Whether an upstream of `model` that has not failed this call (`failed`) and is not open
    /// could take the next attempt.
    pub fn has_alternative(&self, model: &str, failed: &[String]) -> bool {
        self.members.iter().any(|m| {
            m.config.serves(model) && !failed.contains(&m.config.name) && m.breaker.state() != BreakerState::Open
        })
    }

    /// The upstreams serving `model` in the order they should be tried (see the module doc).
    fn order(&self, model: &str, failed: &[String]) -> Vec<Arc<Member>> {
        let mut rng = rand::rng();
        let mut ranked: Vec<(bool, u32, f64, Arc<Member>)> = self
            .members
            .iter()
            .filter(|m| m.config.serves(model))
            .map(|m| {
                // Efraimidis–Spirakis: sorting by u^(1/w) descending is a weighted random order.
                let key = rng.random::<f64>().powf(1.0 / f64::from(m.config.weight.max(1)));
                (failed.contains(&m.config.name), m.config.priority, -key, m.clone())
            })
            .collect();
        ranked.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)).then(a.2.total_cmp(&b.2)));
        ranked.into_iter().map(|(_, _, _, member)| member).collect()
    }

    /// An upstream for one attempt at `model` needing about `tokens` of quota; waits (until
    /// `deadline`) only when none can take it now. `failed` names upstreams that already failed
    /// this call.
    pub async fn lease(
        &self,
        model: &str,
        tokens: u64,
        deadline: Instant,
        failed: &[String],
    ) -> Result<Lease, UpstreamError> {
        let order = self.order(model, failed);
        if order.is_empty() {
            return Err(UpstreamError::UnknownModel(model.to_owned()));
        }
        let mut shortest_open: Option<BreakerOpen> = None;
        let mut first_closed: Option<Arc<Member>> = None;
        for member in &order {
            let permit = match member.breaker.try_call() {
                Ok(permit) => permit,
                Err(open) => {
                    if shortest_open.as_ref().is_none_or(|o| open.retry_in < o.retry_in) {
                        shortest_open = Some(open);
                    }
                    continue;
                }
            };
            if member.cooling_for().is_some() {
                first_closed.get_or_insert_with(|| member.clone());
                continue;
            }
            let Ok(slot) = member.slots.clone().try_acquire_owned() else {
                first_closed.get_or_insert_with(|| member.clone());
                continue;
            };
            let reservation = match &member.limiter {
                None => None,
                Some(limiter) => match limiter.acquire(tokens, Instant::now()).await {
                    Ok(reservation) => Some(reservation),
                    Err(limited) if limited.wait.is_none() => return Err(too_large(&limited)),
                    Err(_) => {
                        first_closed.get_or_insert_with(|| member.clone());
                        continue;
                    }
                },
            };
            return Ok(Lease { member: member.clone(), breaker: permit, reservation, _slot: slot });
        }

        // Nothing can go now: wait for a slot and quota on the first upstream that is not open,
        // holding no breaker permit meanwhile (a half-open breaker's probe must not sit idle).
        let Some(member) = first_closed else {
            let retry_in = shortest_open.map(|o| o.retry_in).unwrap_or_default();
            return Err(UpstreamError::AllOpen { model: model.to_owned(), retry_in });
        };
        let busy = || UpstreamError::Busy { upstream: member.config.name.clone() };
        if let Some(wait) = member.cooling_for() {
            if Instant::now() + wait > deadline {
                return Err(UpstreamError::RateLimited {
                    message: format!(
                        "upstream {} asked to wait {wait:?}, past this call's deadline",
                        member.config.name
                    ),
                    retry_after: Some(wait),
                    retryable: false,
                });
            }
            tokio::time::sleep(wait).await;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let slot = tokio::time::timeout(left, member.slots.clone().acquire_owned())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        let reservation = match &member.limiter {
            None => None,
            Some(limiter) => Some(limiter.acquire(tokens, deadline).await.map_err(|limited| match limited.wait {
                None => too_large(&limited),
                Some(wait) => UpstreamError::RateLimited {
                    message: format!("{limited}, past this call's deadline"),
                    retry_after: Some(wait),
                    retryable: false,
                },
            })?),
        };
        let permit = member
            .breaker
            .try_call()
            .map_err(|open| UpstreamError::AllOpen { model: model.to_owned(), retry_in: open.retry_in })?;
        Ok(Lease { member, breaker: permit, reservation, _slot: slot })
    }
}

fn too_large(limited: &millrace_resilience::RateLimited) -> UpstreamError {
    UpstreamError::InvalidRequest(format!("the request can never fit the upstream's quota: {limited}"))
}
