//! The daily LLM budget at the front door: once the gateway's `MILLRACE_MAX_DAILY_COST_USD` is
//! spent, a new job that would call the LLM is refused with 429 and a message naming the budget,
//! instead of being queued to fail (or wait) in the metadata or embeddings stage.
//!
//! The gateway owns the budget and today's spend; the stages know whether they call it. Both are
//! read from their `Admin.Stats` (the gateway's limits document, each stage's breaker toward the
//! gateway) and the verdict is kept for a second, so a burst of submissions costs one look.
//! A gateway that does not answer refuses nothing: the budget is enforced again at every call.

use std::sync::Mutex;
use std::time::Duration;

use millrace_common::sync::lock;
use millrace_common::time::{retry_after_secs, until_utc_midnight};
use millrace_common::{ApiError, ErrorCode};
use millrace_pipeline::runtime::GATEWAY_BREAKER;
use serde::Deserialize;
use tokio::time::Instant;

use crate::stats::{Peers, ServiceStats};

/// How long a verdict is trusted.
const VERDICT_FRESHNESS: Duration = Duration::from_secs(1);
/// How long each service may take to answer; submissions wait on it at most once a second.
const LOOK_TIMEOUT: Duration = Duration::from_millis(500);

/// The gateway's budget, as its limits document shows it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Budget {
    pub max_daily_cost_usd: Option<f64>,
    pub spent_usd: f64,
    pub exhausted: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    Open,
    /// Spent, and these stages call the gateway.
    Spent {
        budget: Budget,
        stages: Vec<String>,
    },
}

pub struct BudgetGuard {
    peers: Peers,
    verdict: Mutex<Option<(Instant, Verdict)>>,
}

impl BudgetGuard {
    pub fn new(peers: Peers) -> Self {
        Self { peers, verdict: Mutex::new(None) }
    }

    /// Refuses a job that would need the LLM once today's budget is spent.
    pub async fn check(&self) -> Result<(), ApiError> {
        let cached = lock(&self.verdict).clone();
        let verdict = match cached {
            Some((at, verdict)) if at.elapsed() < VERDICT_FRESHNESS => verdict,
            _ => {
                let verdict = self.look().await;
                *lock(&self.verdict) = Some((Instant::now(), verdict.clone()));
                verdict
            }
        };
        match verdict {
            Verdict::Open => Ok(()),
            Verdict::Spent { budget, stages } => Err(refusal(&budget, &stages, retry_after_secs(until_utc_midnight()))),
        }
    }

    async fn look(&self) -> Verdict {
        let gateway = self.peers.service_stats("llm-gateway", LOOK_TIMEOUT).await;
        let Some(budget) = budget_of(&gateway).filter(|budget| budget.exhausted) else { return Verdict::Open };
        let (metadata, embeddings) = tokio::join!(
            self.peers.service_stats("metadata", LOOK_TIMEOUT),
            self.peers.service_stats("embeddings", LOOK_TIMEOUT),
        );
        let stages: Vec<String> =
            [metadata, embeddings].into_iter().filter(calls_gateway).map(|stage| stage.service).collect();
        if stages.is_empty() { Verdict::Open } else { Verdict::Spent { budget, stages } }
    }
}

fn budget_of(gateway: &ServiceStats) -> Option<Budget> {
    let limits = gateway.stats.as_ref()?.limits.as_ref()?;
    serde_json::from_value(limits.get("budget")?.clone()).ok()
}

/// Whether a stage calls the gateway: it has a breaker toward it. A stage that did not answer
/// is counted as calling it, since a spent budget is the likelier reason its jobs would stall.
fn calls_gateway(stage: &ServiceStats) -> bool {
    match &stage.stats {
        Some(snapshot) => snapshot.breakers.iter().any(|breaker| breaker.name == GATEWAY_BREAKER),
        None => true,
    }
}

fn refusal(budget: &Budget, stages: &[String], retry_after_secs: u64) -> ApiError {
    let limit = budget.max_daily_cost_usd.map_or_else(String::new, |usd| format!(" of ${usd:.2}"));
    ApiError::new(
        ErrorCode::RateLimited,
        format!(
            "the daily LLM budget is spent (${:.4}{limit}, MILLRACE_MAX_DAILY_COST_USD) and this job needs the LLM \
             (the {} stage calls it); it resets at 00:00 UTC",
            budget.spent_usd,
            stages.join(" and "),
        ),
    )
    .with_retry_after(retry_after_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Breaker, Concurrency, Snapshot};

    fn answered(service: &str, breakers: &[&str], limits: Option<serde_json::Value>) -> ServiceStats {
        ServiceStats {
            service: service.into(),
            reachable: true,
            error: None,
            stats: Some(Snapshot {
                concurrency: Concurrency { limit: 1, in_use: 0 },
                queues: Vec::new(),
                breakers: breakers
                    .iter()
                    .map(|name| Breaker { name: (*name).into(), state: "closed".into() })
                    .collect(),
                limits,
            }),
        }
    }

    #[test]
    fn the_budget_is_read_from_the_gateways_limits() {
        let gateway = answered(
            "llm-gateway",
            &["upstream:a"],
            Some(serde_json::json!({
                "upstreams": [],
                "budget": {"day": "2026-11-24", "max_daily_cost_usd": 1.0, "spent_usd": 1.25, "exhausted": true},
            })),
        );
        assert_eq!(
            budget_of(&gateway),
            Some(Budget { max_daily_cost_usd: Some(1.0), spent_usd: 1.25, exhausted: true })
        );
        assert_eq!(budget_of(&answered("llm-gateway", &[], None)), None);
        let silent = ServiceStats { service: "llm-gateway".into(), reachable: false, error: None, stats: None };
        assert_eq!(budget_of(&silent), None);
    }

    #[test]
    fn a_stage_calls_the_gateway_when_it_has_a_breaker_toward_it() {
        assert!(calls_gateway(&answered("metadata", &[GATEWAY_BREAKER], None)));
        assert!(!calls_gateway(&answered("embeddings", &[], None)));
        let silent = ServiceStats { service: "metadata".into(), reachable: false, error: None, stats: None };
        assert!(calls_gateway(&silent));
    }

    #[test]
    fn the_refusal_is_a_429_naming_the_budget_and_when_it_resets() {
        let budget = Budget { max_daily_cost_usd: Some(2.0), spent_usd: 2.0001, exhausted: true };
        let err = refusal(&budget, &["metadata".into(), "embeddings".into()], 3600);
        assert_eq!(err.code, ErrorCode::RateLimited);
        assert_eq!(err.retry_after_secs, Some(3600));
        assert!(err.message.contains("MILLRACE_MAX_DAILY_COST_USD"), "{}", err.message);
        assert!(err.message.contains("$2.0001 of $2.00"), "{}", err.message);
        assert!(err.message.contains("metadata and embeddings"), "{}", err.message);
        let secs = retry_after_secs(until_utc_midnight());
        assert!((1..=86_400).contains(&secs), "{secs}");
    }
}
