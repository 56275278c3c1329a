//! Tokens and dollars: each answer's `usage` priced by model, added to the caller's job (when it
//! named one), to today's spend shared by every replica in Redis (in all, and per virtual key
//! when a key called), and to per-model metrics; and the daily budgets (the gateway's, a key's)
//! checked before each call.
//!
//! A key's spend is counted after its answers, so calls of one key in flight together may pass
//! its budget by what they cost: the budget stops the next call, not the running ones.
//!
//! Accounting never fails a call that the upstream answered: a Redis error is logged and
//! counted, because the tokens are spent either way.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use millrace_common::sync::lock;
use millrace_common::time::until_utc_midnight;
use millrace_pipeline::{Keys, LlmUsage};
use millrace_resilience::Coalescer;
use redis::aio::ConnectionManager;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::config::Price;
use crate::error::UpstreamError;
use crate::key_limits::VirtualKey;
use crate::metrics;
use crate::upstream::Usage;

/// How long a replica trusts its last reading of today's spend before asking Redis again.
const SPEND_FRESHNESS: Duration = Duration::from_millis(250);
/// Spend records outlive their day a little, for `/v1/limits` around midnight.
const SPEND_TTL_SECS: i64 = 3 * 24 * 3600;

/// Charges written together at most (see `millrace_resilience::coalesce`).
const MAX_CHARGES_PER_WRITE: usize = 256;

pub struct Accounting {
    conn: ConnectionManager,
    keys: Keys,
    prices: BTreeMap<String, Price>,
    budget_usd: Option<f64>,
    /// Today's spend as last read or written.
    spent: Arc<Mutex<Option<SpendSeen>>>,
    /// Charges of calls answered at about the same time, written to Redis together.
    charges: Coalescer<Charge>,
    unpriced_warned: Mutex<HashSet<String>>,
}

#[derive(Debug, Clone)]
struct SpendSeen {
    day: String,
    usd: f64,
    at: Instant,
}

/// One answered call's usage and cost, to add to the day's spend and to its job.
struct Charge {
    day: String,
    model: String,
    usage: Usage,
    cost: f64,
    job_id: String,
    /// The virtual key that called (HTTP API), or empty.
    key_id: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BudgetSnapshot {
    pub day: String,
    pub max_daily_cost_usd: Option<f64>,
    pub spent_usd: f64,
    pub exhausted: bool,
}

impl Accounting {
    pub fn new(conn: ConnectionManager, keys: Keys, prices: BTreeMap<String, Price>, budget_usd: Option<f64>) -> Self {
        let spent = Arc::new(Mutex::new(None));
        let charges = charge_writer(conn.clone(), keys.clone(), spent.clone());
        Self { conn, keys, prices, budget_usd, spent, charges, unpriced_warned: Mutex::new(HashSet::new()) }
    }

    /// Refuses the call when today's spend has reached the budget.
    pub async fn check_budget(&self) -> Result<(), UpstreamError> {
        let Some(budget_usd) = self.budget_usd else { return Ok(()) };
        let spent_usd = self.spent_today().await;
        if spent_usd >= budget_usd {
            metrics::budget_refusal();
            return Err(UpstreamError::BudgetExceeded { spent_usd, budget_usd, resets_in: until_utc_midnight() });
        }
        Ok(())
    }

    /// Refuses the call when the key's spend of the UTC day has reached its own budget. Read
    /// from Redis on every call of a key with a budget; when Redis cannot say, the check passes,
    /// as the gateway's own does.
    pub async fn check_key_budget(&self, key: &VirtualKey) -> Result<(), UpstreamError> {
        let Some(budget_usd) = key.daily_budget_usd else { return Ok(()) };
        let mut conn = self.conn.clone();
        let spent = redis::cmd("HGET")
            .arg(self.keys.llm_spend(&today()))
            .arg(key_spend_field(&key.id))
            .query_async::<Option<f64>>(&mut conn)
            .await;
        let spent_usd = match spent {
            Ok(usd) => usd.unwrap_or(0.0),
            Err(err) => {
                tracing::warn!(key_id = %key.id, error = %err, "cannot read the key's spend; its budget check passes");
                return Ok(());
            }
        };
        if spent_usd >= budget_usd {
            metrics::key_refusal("budget");
            return Err(UpstreamError::KeyBudgetExceeded {
                key_id: key.id.clone(),
                spent_usd,
                budget_usd,
                resets_in: until_utc_midnight(),
            });
        }
        Ok(())
    }

    pub async fn snapshot(&self) -> BudgetSnapshot {
        let spent_usd = self.spent_today().await;
        BudgetSnapshot {
            day: today(),
            max_daily_cost_usd: self.budget_usd,
            spent_usd,
            exhausted: self.budget_usd.is_some_and(|budget| spent_usd >= budget),
        }
    }

    /// Prices `usage` of `model` and counts it in the metrics at once; the returned write adds
    /// it to the day's spend and the job in Redis, and can run after the answer has gone back.
    pub fn record(
        self: &Arc<Self>,
        model: &str,
        usage: Usage,
        job_id: &str,
        key_id: &str,
    ) -> impl Future<Output = ()> + use<> {
        metrics::tokens(model, usage.prompt_tokens, usage.completion_tokens);
        let cost = match self.price(model) {
            Some(price) => price.cost(usage.prompt_tokens, usage.completion_tokens),
            None => {
                self.warn_unpriced(model);
                0.0
            }
        };
        metrics::cost(model, cost);
        let charge = Charge {
            day: today(),
            model: model.to_owned(),
            usage,
            cost,
            job_id: job_id.to_owned(),
            key_id: key_id.to_owned(),
        };
        let accounting = self.clone();
        async move { accounting.store(charge).await }
    }

    async fn store(&self, charge: Charge) {
        let (model, job_id) = (charge.model.clone(), charge.job_id.clone());
        if let Err(err) = self.charges.write(charge).await {
            metrics::accounting_error();
            tracing::warn!(model, job_id, error = %err, "cannot record LLM usage in redis");
        }
    }

    /// The answered model may carry a dated suffix (`gpt-4o-mini-2024-07-18`): the longest
    /// priced name it starts with prices it.
    fn price(&self, model: &str) -> Option<Price> {
        self.prices.get(model).copied().or_else(|| {
            self.prices
                .iter()
                .filter(|(name, _)| model.starts_with(name.as_str()))
                .max_by_key(|(name, _)| name.len())
                .map(|(_, p)| *p)
        })
    }

    fn warn_unpriced(&self, model: &str) {
        let mut warned = lock(&self.unpriced_warned);
        if warned.insert(model.to_owned()) {
            tracing::warn!(
                model,
                "no price for this model: its calls count no cost (add it under [prices] in the upstreams file)"
            );
        }
    }

    /// Whether Redis answers a PING on the connection the limiter and accounting share.
    pub async fn ping(&self) -> Result<(), String> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<String>(&mut conn).await.map(drop).map_err(|err| err.to_string())
    }

    /// Today's spend, from memory if fresh, else from Redis; 0 if Redis cannot say (a budget
    /// is a guard against runaway cost, not a reason to stop when Redis blinks).
    async fn spent_today(&self) -> f64 {
        let day = today();
        let seen = lock(&self.spent).clone();
        if let Some(seen) = seen
            && seen.day == day
            && seen.at.elapsed() < SPEND_FRESHNESS
        {
            return seen.usd;
        }
        let read = async {
            let mut conn = self.conn.clone();
            let usd = redis::cmd("HGET")
                .arg(self.keys.llm_spend(&day))
                .arg("usd")
                .query_async::<Option<f64>>(&mut conn)
                .await?;
            Ok::<_, redis::RedisError>(usd)
        };
        match read.await {
            Ok(usd) => {
                let usd = usd.unwrap_or(0.0);
                remember(&self.spent, day, usd);
                usd
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot read today's LLM spend; the budget check passes");
                lock(&self.spent).as_ref().map_or(0.0, |seen| seen.usd)
            }
        }
    }
}

fn remember(spent: &Mutex<Option<SpendSeen>>, day: String, usd: f64) {
    *lock(spent) = Some(SpendSeen { day, usd, at: Instant::now() });
}

/// Writes a batch of charges in one round trip: summed per day and model into the day's
/// spend, and per job into the job's record (if it exists).
fn charge_writer(conn: ConnectionManager, keys: Keys, spent: Arc<Mutex<Option<SpendSeen>>>) -> Coalescer<Charge> {
    Coalescer::new(MAX_CHARGES_PER_WRITE, move |charges: Vec<Charge>| {
        let (conn, keys, spent) = (conn.clone(), keys.clone(), spent.clone());
        async move { write_charges(conn, &keys, &spent, charges).await.map_err(|err| err.to_string()) }
    })
}

async fn write_charges(
    mut conn: ConnectionManager,
    keys: &Keys,
    spent: &Mutex<Option<SpendSeen>>,
    charges: Vec<Charge>,
) -> redis::RedisResult<()> {
    let mut by_model: BTreeMap<(&str, &str), (f64, u64, u64)> = BTreeMap::new();
    let mut by_day: BTreeMap<&str, f64> = BTreeMap::new();
    let mut by_job: BTreeMap<&str, LlmUsage> = BTreeMap::new();
    let mut by_key: BTreeMap<(&str, &str), f64> = BTreeMap::new();
    for charge in &charges {
        let (prompt, completion) = (u64::from(charge.usage.prompt_tokens), u64::from(charge.usage.completion_tokens));
        let model = by_model.entry((&charge.day, &charge.model)).or_default();
        *model = (model.0 + charge.cost, model.1 + prompt, model.2 + completion);
        *by_day.entry(&charge.day).or_default() += charge.cost;
        if !charge.key_id.is_empty() {
            *by_key.entry((&charge.day, &charge.key_id)).or_default() += charge.cost;
        }
        if !charge.job_id.is_empty() {
            let job = by_job.entry(&charge.job_id).or_default();
            job.prompt_tokens += prompt;
            job.completion_tokens += completion;
            job.cost_usd += charge.cost;
        }
    }
    let mut pipe = redis::pipe();
    for ((day, model), (cost, prompt, completion)) in &by_model {
        let key = keys.llm_spend(day);
        pipe.cmd("HINCRBYFLOAT").arg(&key).arg(format!("usd:{model}")).arg(cost).ignore();
        pipe.cmd("HINCRBY").arg(&key).arg(format!("prompt_tokens:{model}")).arg(prompt).ignore();
        pipe.cmd("HINCRBY").arg(&key).arg(format!("completion_tokens:{model}")).arg(completion).ignore();
    }
    // Each key's spend of the day beside the day's totals (one hash, one expiry).
    for ((day, key_id), cost) in &by_key {
        pipe.cmd("HINCRBYFLOAT").arg(keys.llm_spend(day)).arg(key_spend_field(key_id)).arg(cost).ignore();
    }
    // The day's new totals are the only answers kept, in the order of `by_day`.
    for (day, cost) in &by_day {
        let key = keys.llm_spend(day);
        pipe.cmd("HINCRBYFLOAT").arg(&key).arg("usd").arg(cost);
        pipe.cmd("EXPIRE").arg(&key).arg(SPEND_TTL_SECS).ignore();
    }
    millrace_pipeline::add_llm_usage(&mut pipe, keys, by_job);
    let totals: Vec<f64> = pipe.query_async(&mut conn).await?;
    if let Some((day, usd)) = by_day.keys().zip(totals).next_back() {
        remember(spent, (*day).to_owned(), usd);
    }
    Ok(())
}

/// The field of a key's spend in the day's spend hash (beside `usd` and `usd:{model}`).
fn key_spend_field(key_id: &str) -> String {
    format!("key_usd:{key_id}")
}

fn today() -> String {
    let date = OffsetDateTime::now_utc().date();
    format!("{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day())
}
