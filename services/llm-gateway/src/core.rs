//! The gateway's one code path for every call, whatever door it came in by (gRPC from the other
//! services, naming their job; the OpenAI-compatible HTTP API from `llm` keys): check the
//! request, fill in the default model, refuse it if the day's budget is spent, or if the calling
//! key is over its own limits ([`KeyLimits`]), then make attempts on the upstreams of the model
//! ([`Upstreams`]) within the call's time budget, and account for what each answer cost (to
//! the job, to the key).
//!
//! Each attempt leases an upstream (breaker permit, concurrency slot, quota reserved from an
//! estimate of the tokens), and its outcome settles all three: the estimate is corrected from
//! the answer's `usage`, health failures count against the breaker, a 429's `Retry-After`
//! pauses that upstream for every call. A retryable failure moves the next attempt to another
//! upstream of the model if there is one (at once), else waits the backoff.
//!
//! What follows an answer and cannot change it (correcting the quota reservation, recording
//! the cost) runs as bookkeeping after the answer has gone back: waiting on Redis for it would
//! add two round trips to every call. Shutdown waits for it (`finish_bookkeeping`).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use millrace_pipeline::Keys;
use millrace_resilience::{CircuitBreaker, RateLimiter, RetryPolicy};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::accounting::{Accounting, BudgetSnapshot};
use crate::config::Config;
use crate::error::{StartError, UpstreamError};
use crate::key_limits::{KeyAdmission, KeyLimits, VirtualKey};
use crate::upstream::{ChatAnswer, ChatCompletion, ChatStream, EmbeddingAnswer, OpenAiUpstream, Upstream, Usage};
use crate::upstreams::{Lease, Member, Upstreams};
use crate::{metrics, spans};

/// OpenAI's limit of inputs per embeddings request; longer calls are sent in several requests.
const MAX_INPUTS_PER_REQUEST: usize = 2048;
/// Tokens OpenAI adds per chat message and per answer (role markers), for the estimate.
const TOKENS_PER_MESSAGE: u64 = 4;
const TOKENS_PER_ANSWER: u64 = 3;

pub struct Gateway {
    upstreams: Upstreams,
    accounting: Arc<Accounting>,
    key_limits: KeyLimits,
    chat_model: String,
    embed_model: String,
    timeout: Duration,
    retry: RetryPolicy,
    completion_estimate: u64,
    bookkeeping: TaskTracker,
    probe_interval: Duration,
    started: Instant,
}

/// What `GET /v1/limits` shows: every upstream's limits and live use, and the budget.
#[derive(Debug, serde::Serialize)]
pub struct Limits {
    pub upstreams: Vec<UpstreamLimits>,
    pub budget: BudgetSnapshot,
}

#[derive(Debug, serde::Serialize)]
pub struct UpstreamLimits {
    pub name: String,
    pub base_url: String,
    /// Empty: every model.
    pub models: Vec<String>,
    pub priority: u32,
    pub weight: u32,
    pub max_concurrency: usize,
    pub in_flight: usize,
    /// How long the upstream's last `Retry-After` still holds calls back.
    pub cooling_ms: Option<u64>,
    pub rate_limiter: Option<millrace_resilience::LimiterSnapshot>,
    pub breaker: millrace_resilience::BreakerSnapshot,
    /// The last background probe (`GET {base}/models`); none before the first.
    pub probe: Option<ProbeSnapshot>,
}

/// Whether the upstream answered its last probe, and how long ago.
#[derive(Debug, serde::Serialize)]
pub struct ProbeSnapshot {
    pub reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub checked_ms_ago: u64,
}

impl Gateway {
    /// Builds every upstream's client, limiter and breaker. Nothing connects yet.
    pub fn build(config: &Config) -> Result<Self, StartError> {
        let keys = Keys::new(config.service.key_prefix.clone());
        let redis = millrace_common::redis_conn::shared(&config.service.redis).map_err(StartError::Redis)?;
        let mut members = Vec::with_capacity(config.upstreams.len());
        for upstream in &config.upstreams {
            let client: Arc<dyn Upstream> = Arc::new(OpenAiUpstream::new(upstream)?);
            let limiter = (upstream.quota.rpm.is_some() || upstream.quota.tpm.is_some()).then(|| {
                if config.shared_limits {
                    RateLimiter::shared(
                        upstream.name.clone(),
                        upstream.quota,
                        config.limiter.clone(),
                        redis.clone(),
                        keys.llm_limiter(&upstream.name),
                    )
                } else {
                    RateLimiter::local(upstream.name.clone(), upstream.quota, config.limiter.clone())
                }
            });
            let breaker = CircuitBreaker::new(format!("upstream:{}", upstream.name), config.breaker.clone());
            members.push(Member::new(upstream.clone(), client, limiter, breaker));
        }
        let key_limits = KeyLimits::new(redis.clone(), keys.clone(), config.limiter.clone(), config.shared_limits);
        let accounting = Accounting::new(redis, keys, config.prices.clone(), config.max_daily_cost_usd);
        Ok(Self {
            upstreams: Upstreams::new(members),
            accounting: Arc::new(accounting),
            key_limits,
            chat_model: config.chat_model.clone(),
            embed_model: config.embed_model.clone(),
            timeout: config.timeout,
            retry: config.retry.clone(),
            completion_estimate: u64::from(config.completion_estimate),
            bookkeeping: TaskTracker::new(),
            probe_interval: config.probe_interval,
            started: Instant::now(),
        })
    }

    /// Every model some upstream names, plus the defaults when an upstream serves any model.
    pub fn models(&self) -> Vec<String> {
        let mut models: Vec<String> = Vec::new();
        for member in self.upstreams.members() {
            let named = if member.config.models.is_empty() {
                vec![self.chat_model.clone(), self.embed_model.clone()]
            } else {
                member.config.models.clone()
            };
            for model in named {
                if !models.contains(&model) {
                    models.push(model);
                }
            }
        }
        models
    }

    /// `request.model` empty means the default chat model. `job_id` is the stages' (gRPC),
    /// `key` the virtual key of an HTTP call.
    pub async fn chat(
        &self,
        request: ChatCompletion,
        job_id: &str,
        key: Option<&VirtualKey>,
    ) -> Result<ChatAnswer, UpstreamError> {
        let span = spans::gen_ai_span("chat", or_default(&request.model, &self.chat_model), job_id);
        let answer = self.chat_untraced(request, job_id, key).instrument(span.clone()).await;
        spans::record_gen_ai(&span, answer.as_ref().map(|answer| (answer.model.as_str(), answer.usage)));
        answer
    }

    async fn chat_untraced(
        &self,
        mut request: ChatCompletion,
        job_id: &str,
        key: Option<&VirtualKey>,
    ) -> Result<ChatAnswer, UpstreamError> {
        let (tokens, deadline, admission) = self.admit_chat(&mut request, key).await?;
        let answer = self
            .attempts("chat", &request.model, tokens, deadline, |client, left| {
                let request = &request;
                async move {
                    let answer = client.chat(request, left).await?;
                    let usage = answer.usage;
                    Ok((answer, usage))
                }
            })
            .await?;
        self.record(&answer.model, answer.usage, job_id, key, admission);
        Ok(answer)
    }

    /// A streamed answer: deltas of content, the last one with the finish reason and usage.
    /// Failures before the stream starts are retried like [`Gateway::chat`]; a stream cut off
    /// part-way ends with an error item (it cannot be replayed) and counts against the upstream.
    pub async fn chat_stream(
        &self,
        mut request: ChatCompletion,
        job_id: &str,
        key: Option<&VirtualKey>,
    ) -> Result<ChatStream, UpstreamError> {
        let (tokens, deadline, admission) = self.admit_chat(&mut request, key).await?;
        let (stream, lease) = self
            .attempt_leased("chat_stream", &request.model, tokens, deadline, |client, left| {
                let request = &request;
                async move { client.chat_stream(request, left).await }
            })
            .await?;
        let (accounting, bookkeeping) = (self.accounting.clone(), self.bookkeeping.clone());
        let job_id = job_id.to_owned();
        let key_id = key.map(|key| key.id.clone()).unwrap_or_default();
        // The stream ends once: the key's reservation is settled with it.
        let admission = std::sync::Mutex::new(Some(admission));
        let book = move |lease, outcome, usage: Option<Usage>, model: String| {
            let store = usage.map(|usage| accounting.record(&model, usage, &job_id, &key_id));
            let admission = millrace_common::sync::lock(&admission).take();
            // What the upstream reported, if it did (else the key's estimate stays).
            let reported = match &outcome {
                Outcome::Answered(usage) => usage.map(used_tokens),
                Outcome::Unhealthy | Outcome::Neutral => None,
            };
            bookkeeping.spawn(async move {
                settle(lease, outcome).await;
                if let Some(admission) = admission {
                    admission.settle(reported).await;
                }
                if let Some(store) = store {
                    store.await;
                }
            });
        };
        Ok(settle_stream(stream, lease, request.model, book))
    }

    /// `model` empty means the default embedding model. Vectors come back in input order.
    pub async fn embed(
        &self,
        model: String,
        inputs: Vec<String>,
        job_id: &str,
        key: Option<&VirtualKey>,
    ) -> Result<EmbeddingAnswer, UpstreamError> {
        let span = spans::gen_ai_span("embeddings", or_default(&model, &self.embed_model), job_id);
        let answer = self.embed_untraced(model, inputs, job_id, key).instrument(span.clone()).await;
        spans::record_gen_ai(&span, answer.as_ref().map(|answer| (answer.model.as_str(), answer.usage)));
        answer
    }

    async fn embed_untraced(
        &self,
        model: String,
        inputs: Vec<String>,
        job_id: &str,
        key: Option<&VirtualKey>,
    ) -> Result<EmbeddingAnswer, UpstreamError> {
        let model = self.model_for(model, &self.embed_model)?;
        check_inputs(&inputs)?;
        if inputs.is_empty() {
            return Ok(EmbeddingAnswer { model, vectors: Vec::new(), usage: Usage::default() });
        }
        self.accounting.check_budget().await?;
        let admission = self.admit_key(key, inputs.iter().map(|input| estimate_text(input)).sum()).await?;
        let deadline = Instant::now() + self.timeout;
        let mut vectors = Vec::with_capacity(inputs.len());
        let mut usage = Usage::default();
        let mut answered_by = model.clone();
        for batch in inputs.chunks(MAX_INPUTS_PER_REQUEST) {
            let tokens = batch.iter().map(|input| estimate_text(input)).sum();
            let answer = self
                .attempts("embeddings", &model, tokens, deadline, |client, left| {
                    let model = &model;
                    async move {
                        let answer = client.embed(model, batch, left).await?;
                        let usage = answer.usage;
                        Ok((answer, usage))
                    }
                })
                .await?;
            vectors.extend(answer.vectors);
            usage.prompt_tokens = usage.prompt_tokens.saturating_add(answer.usage.prompt_tokens);
            usage.total_tokens = usage.total_tokens.saturating_add(answer.usage.total_tokens);
            answered_by = answer.model;
        }
        self.record(&answered_by, usage, job_id, key, admission);
        Ok(EmbeddingAnswer { model: answered_by, vectors, usage })
    }

    /// Ready when at least one upstream answers (the others are what fallback is for).
    /// Probes every upstream at once and records what each answered (see `upstreams::Probe`).
    /// Upstream health is information for operators (`/v1/limits`, metrics), never readiness:
    /// in Kubernetes an upstream outage would otherwise take every gateway pod out of its
    /// Service, and the breakers already keep calls away from a failing upstream.
    pub async fn probe_upstreams(&self) {
        futures::future::join_all(self.upstreams.members().iter().map(|member| async move {
            let result = member.client.health().await;
            if let Err(error) = &result {
                tracing::warn!(upstream = %member.config.name, error = %error, "upstream probe failed");
            }
            member.record_probe(result);
        }))
        .await;
    }

    /// Whether an upstream's last probe (or the start, before the first) is a probe interval
    /// ago. Not at start: a gateway that restarts should not be a burst of calls upstream.
    pub fn probe_due(&self) -> bool {
        self.upstreams
            .members()
            .iter()
            .any(|member| member.last_probe().map_or(self.started, |probe| probe.at).elapsed() >= self.probe_interval)
    }

    /// Readiness: the gateway's own dependency, Redis (the shared limiter and the accounting).
    pub async fn ping_redis(&self) -> Result<(), String> {
        self.accounting.ping().await
    }

    pub async fn limits(&self) -> Limits {
        let upstreams = self
            .upstreams
            .members()
            .iter()
            .map(|member| UpstreamLimits {
                name: member.config.name.clone(),
                base_url: member.config.base_url.clone(),
                models: member.config.models.clone(),
                priority: member.config.priority,
                weight: member.config.weight,
                max_concurrency: member.config.max_concurrency,
                in_flight: member.in_flight(),
                cooling_ms: member.cooling_for().map(|left| left.as_millis() as u64),
                rate_limiter: member.limiter.as_ref().map(RateLimiter::snapshot),
                breaker: member.breaker.snapshot(),
                probe: member.last_probe().map(|probe| ProbeSnapshot {
                    reachable: probe.result.is_ok(),
                    error: probe.result.err(),
                    checked_ms_ago: probe.at.elapsed().as_millis() as u64,
                }),
            })
            .collect();
        Limits { upstreams, budget: self.accounting.snapshot().await }
    }

    /// Waits (up to `deadline`) for the bookkeeping of answered calls to reach Redis.
    pub async fn finish_bookkeeping(&self, deadline: Duration) {
        self.bookkeeping.close();
        if tokio::time::timeout(deadline, self.bookkeeping.wait()).await.is_err() {
            tracing::warn!(pending = self.bookkeeping.len(), "shutdown deadline passed with usage not yet recorded");
        }
    }

    /// Counts an answer's usage and cost, and stores them (and settles the key's token
    /// reservation) as bookkeeping.
    fn record(&self, model: &str, usage: Usage, job_id: &str, key: Option<&VirtualKey>, admission: KeyAdmission) {
        let key_id = key.map_or("", |key| key.id.as_str());
        let store = self.accounting.record(model, usage, job_id, key_id);
        self.bookkeeping.spawn(async move {
            admission.settle(Some(used_tokens(usage))).await;
            store.await;
        });
    }

    /// The calling key's own limits: its budget, then its RPM and TPM (for `tokens`, an
    /// estimate). Nothing for the stages' calls.
    async fn admit_key(&self, key: Option<&VirtualKey>, tokens: u64) -> Result<KeyAdmission, UpstreamError> {
        let Some(key) = key else { return Ok(KeyAdmission::default()) };
        self.accounting.check_key_budget(key).await?;
        self.key_limits.admit(key, tokens).await
    }

    /// The model asked for, or the default; refused if no upstream serves it.
    fn model_for(&self, model: String, default: &str) -> Result<String, UpstreamError> {
        if self.upstreams.is_empty() {
            return Err(UpstreamError::NotConfigured);
        }
        let model = or_default(&model, default).to_owned();
        if self.upstreams.serves(&model) { Ok(model) } else { Err(UpstreamError::UnknownModel(model)) }
    }

    /// What every chat call goes through before its attempts: the model filled in and known,
    /// the request checked, the budgets not spent, the key within its limits. Returns the tokens
    /// to reserve, the call's deadline and the key's admission.
    async fn admit_chat(
        &self,
        request: &mut ChatCompletion,
        key: Option<&VirtualKey>,
    ) -> Result<(u64, Instant, KeyAdmission), UpstreamError> {
        request.model = self.model_for(std::mem::take(&mut request.model), &self.chat_model)?;
        check_chat(request)?;
        self.accounting.check_budget().await?;
        let tokens = self.chat_tokens(request);
        let admission = self.admit_key(key, tokens).await?;
        Ok((tokens, Instant::now() + self.timeout, admission))
    }

    /// Tokens to reserve for a chat call: the prompt estimated from its length, plus
    /// `max_tokens` (or the configured estimate) for the answer.
    fn chat_tokens(&self, request: &ChatCompletion) -> u64 {
        let prompt: u64 = request.messages.iter().map(|m| estimate_text(&m.content) + TOKENS_PER_MESSAGE).sum::<u64>()
            + TOKENS_PER_ANSWER;
        prompt + request.max_tokens.map_or(self.completion_estimate, u64::from)
    }

    /// Attempts until one answers, settling each attempt's lease; see the module doc.
    async fn attempts<T, F, Fut>(
        &self,
        endpoint: &'static str,
        model: &str,
        tokens: u64,
        deadline: Instant,
        call: F,
    ) -> Result<T, UpstreamError>
    where
        F: FnMut(Arc<dyn Upstream>, Duration) -> Fut,
        Fut: Future<Output = Result<(T, Usage), UpstreamError>>,
    {
        let ((answer, usage), lease) = self.attempt_leased(endpoint, model, tokens, deadline, call).await?;
        self.bookkeeping.spawn(settle(lease, Outcome::Answered(Some(usage))));
        Ok(answer)
    }

    /// Like [`Gateway::attempts`], but hands back the lease of the attempt that succeeded,
    /// unsettled (a stream settles it when it ends).
    async fn attempt_leased<T, F, Fut>(
        &self,
        endpoint: &'static str,
        model: &str,
        tokens: u64,
        deadline: Instant,
        mut call: F,
    ) -> Result<(T, Lease), UpstreamError>
    where
        F: FnMut(Arc<dyn Upstream>, Duration) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        let mut failed: Vec<String> = Vec::new();
        let mut retries = 0;
        loop {
            let lease = self.upstreams.lease(model, tokens, deadline, &failed).await?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(UpstreamError::Timeout(self.timeout));
            }
            let member = lease.member.clone();
            let result = call(member.client.clone(), member.config.timeout.min(left)).await;
            let err = match result {
                Ok(answer) => return Ok((answer, lease)),
                Err(err) => err,
            };
            if let Some(wait) = err.retry_after().filter(|_| matches!(err, UpstreamError::RateLimited { .. })) {
                member.cool_down(wait);
            }
            settle(lease, Outcome::failed(&err)).await;
            if !err.is_retryable() || retries >= self.retry.max_retries {
                return Err(err);
            }
            retries += 1;
            if !failed.contains(&member.config.name) {
                failed.push(member.config.name.clone());
            }
            // Another upstream of the model takes the next attempt at once; only a lone
            // upstream is waited for.
            if !self.upstreams.has_alternative(model, &failed) {
                let Some(pause) = self.retry.pause(retries - 1, err.retry_after()) else { return Err(err) };
                if Instant::now() + pause >= deadline {
                    return Err(err);
                }
                tokio::time::sleep(pause).await;
            }
            metrics::retry(endpoint, err.kind());
            tracing::debug!(endpoint, upstream = %member.config.name, retry = retries, error = %err, "retrying");
        }
    }
}

/// How an attempt ended, as its lease needs to know.
enum Outcome {
    /// The upstream answered, with the usage it reported (if it did).
    Answered(Option<Usage>),
    /// The upstream looked unhealthy: counts against its breaker.
    Unhealthy,
    /// Neither (the caller's bad request, a quota answer): counts for nothing.
    Neutral,
}

impl Outcome {
    fn failed(err: &UpstreamError) -> Self {
        if err.counts_against_upstream() { Self::Unhealthy } else { Self::Neutral }
    }
}

/// The model asked for, or `default` when none is.
fn or_default<'a>(model: &'a str, default: &'a str) -> &'a str {
    if model.trim().is_empty() { default } else { model }
}

/// Ends an attempt: the breaker hears how it went, and the quota reservation is corrected to
/// the tokens really used (kept at the estimate when the upstream did not say).
async fn settle(lease: Lease, outcome: Outcome) {
    let Lease { breaker, reservation, .. } = lease;
    match outcome {
        Outcome::Answered(usage) => {
            breaker.success();
            if let (Some(reservation), Some(usage)) = (reservation, usage) {
                reservation.settle(used_tokens(usage)).await;
            }
        }
        Outcome::Unhealthy => breaker.failure(),
        Outcome::Neutral => drop(breaker),
    }
}

/// The tokens an answer counts against a TPM quota.
fn used_tokens(usage: Usage) -> u64 {
    u64::from(usage.total_tokens.max(usage.prompt_tokens.saturating_add(usage.completion_tokens)))
}

/// Passes a stream through, and when it ends hands its lease, how it ended and (if it
/// finished) its usage and answering model to `book`.
fn settle_stream(
    stream: ChatStream,
    lease: Lease,
    model: String,
    book: impl Fn(Lease, Outcome, Option<Usage>, String) + Send + 'static,
) -> ChatStream {
    struct State<B> {
        stream: ChatStream,
        lease: Option<Lease>,
        usage: Option<Usage>,
        answered_by: String,
        book: B,
    }
    let state = State { stream, lease: Some(lease), usage: None, answered_by: model, book };
    futures::stream::unfold(state, |mut state| async move {
        let item = state.stream.next().await;
        match &item {
            Some(Ok(delta)) => {
                if delta.usage.is_some() {
                    state.usage = delta.usage;
                }
                if !delta.model.is_empty() {
                    state.answered_by.clone_from(&delta.model);
                }
            }
            Some(Err(err)) => {
                if let Some(lease) = state.lease.take() {
                    (state.book)(lease, Outcome::failed(err), None, String::new());
                }
            }
            None => {
                if let Some(lease) = state.lease.take() {
                    let usage = state.usage;
                    (state.book)(
                        lease,
                        Outcome::Answered(usage),
                        Some(usage.unwrap_or_default()),
                        state.answered_by.clone(),
                    );
                }
            }
        }
        item.map(|item| (item, state))
    })
    .boxed()
}

/// Tokens of a text, estimated from above (about 3 bytes a token; English runs nearer 4) so
/// that a reservation rarely falls short of what the upstream counts.
fn estimate_text(text: &str) -> u64 {
    (text.len() as u64).div_ceil(3)
}

fn check_chat(request: &ChatCompletion) -> Result<(), UpstreamError> {
    if request.messages.is_empty() {
        return Err(UpstreamError::InvalidRequest("messages must not be empty".to_owned()));
    }
    Ok(())
}

fn check_inputs(inputs: &[String]) -> Result<(), UpstreamError> {
    if let Some(i) = inputs.iter().position(String::is_empty) {
        return Err(UpstreamError::InvalidRequest(format!(
            "inputs[{i}] is empty; embedding APIs refuse empty strings"
        )));
    }
    Ok(())
}
