//! An OpenAI-compatible upstream for tests, benchmarks and demos: it answers chat completions,
//! embeddings and model lists in OpenAI's shapes, deterministically from the input, and can add
//! latency, enforce RPM/TPM quotas with 429 + `Retry-After`, fail or hang a share of requests,
//! and report what it served on `GET /stats`.
//!
//! Every `/v1` request goes through the same steps, in the order a real upstream takes them:
//! authentication (401), validation (400; the answer is computed here, so its tokens are known),
//! the quota (429, answered at once), then the configured latency and the injected faults
//! (500, or a hang followed by 504), then the answer. A streamed chat answer (`"stream": true`)
//! takes the same steps with the same token count; only then may `--truncate-stream-rate` cut
//! it off part-way. `GET /v1/models` skips quota, latency and
//! faults so that readiness probes keep working while a test makes the API misbehave.
//!
//! The latency and fault rates can be changed while the fake runs: `POST /control` with a JSON
//! object of the fields to change (`latency_ms`, `jitter_ms`, `error_rate`, `timeout_rate`)
//! answers the faults now in force, as `GET /control` does.
//!
//! Tokens are approximated as ceil(chars / 4) of each text (see [`approx_tokens`]).

mod chat;
mod config;
mod control;
mod embeddings;
mod error;
mod quota;
mod schema;
mod stats;

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use config::{Config, MAX_EMBEDDING_DIM};
pub use control::{Faults, FaultsChange};
pub use error::{Error, OpenAiError};
/// The fake's embedding of a text (see [`word_vectors`](millrace_encoder::hashing::word_vectors)).
pub use millrace_encoder::hashing::word_vectors as embedding;
pub use stats::{EndpointStats, Stats};

use millrace_openai::{ApiError, Model, ModelList};
use quota::{Quota, Verdict};
use stats::{Endpoint, Outcome};

/// Models always listed by `GET /v1/models`, besides every model a request named.
pub const DEFAULT_MODELS: &[&str] = &["fake-chat", "fake-embed"];

/// The fake's token count for a text: ceil(chars / 4), OpenAI's own rule of thumb for English.
pub fn approx_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// What a handler computed for a valid request, before quota and faults decide its fate.
pub(crate) struct Answer {
    /// The body of the 200 answer.
    body: Body,
    model: String,
    usage: Usage,
    /// Items answered: texts embedded, or 1 for a chat completion.
    inputs: u64,
}

pub(crate) enum Body {
    /// `application/json`.
    Json(Vec<u8>),
    /// `text/event-stream`: the `data:` payload of each event, `[DONE]` last. A truncated
    /// stream sends only the first `cut` events.
    Events { events: Vec<String>, cut: usize },
}

#[derive(Clone, Copy)]
pub(crate) struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
}

/// What a drawn request suffers after admission.
enum Fault {
    None,
    Error,
    Timeout,
}

#[derive(Clone)]
struct AppState(Arc<Inner>);

struct Inner {
    config: Config,
    /// Latency and fault rates now in force (the flags' at start, then `POST /control`'s).
    faults: Mutex<Faults>,
    quota: Quota,
    stats: Mutex<Stats>,
    rng: Mutex<StdRng>,
    models: Mutex<BTreeSet<String>>,
    next_id: AtomicU64,
    log: Mutex<VecDeque<LoggedRequest>>,
}

/// Requests kept in the log of `GET /requests`, newest last.
const LOG_CAPACITY: usize = 1_000;

/// One answered request, with when it arrived and when it was answered (Unix ms), so tests can
/// check which calls overlapped in time.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoggedRequest {
    pub endpoint: &'static str,
    pub status: u16,
    pub started_ms: u64,
    pub finished_ms: u64,
}

pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data behind these locks stays consistent even if a holder panicked mid-update.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl AppState {
    fn new(config: Config) -> Self {
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let models = DEFAULT_MODELS.iter().map(|m| (*m).to_owned()).collect();
        Self(Arc::new(Inner {
            quota: Quota::new(config.rpm, config.tpm),
            faults: Mutex::new(Faults::from_config(&config)),
            config,
            stats: Mutex::new(Stats::default()),
            rng: Mutex::new(rng),
            models: Mutex::new(models),
            next_id: AtomicU64::new(1),
            log: Mutex::new(VecDeque::new()),
        }))
    }

    fn stats(&self) -> Stats {
        lock(&self.0.stats).clone()
    }

    fn reset(&self) {
        *lock(&self.0.stats) = Stats::default();
        lock(&self.0.log).clear();
    }

    fn log(&self, entry: LoggedRequest) {
        let mut log = lock(&self.0.log);
        if log.len() == LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(entry);
    }

    fn finish(&self, endpoint: Endpoint, outcome: Outcome) {
        lock(&self.0.stats).finished(endpoint, outcome);
    }

    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(key) = &self.0.config.api_key else { return Ok(()) };
        let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        match given.and_then(|v| v.strip_prefix("Bearer ")) {
            None => Err(ApiError::unauthorized(
                "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.",
            )),
            Some(given) if given == key => Ok(()),
            Some(_) => Err(ApiError::unauthorized("Incorrect API key provided.")),
        }
    }

    /// Draws latency and fault for one admitted request.
    fn draw(&self) -> (Duration, Fault) {
        let config = *lock(&self.0.faults);
        let mut rng = lock(&self.0.rng);
        let jitter = if config.jitter_ms > 0 { rng.random_range(0..=config.jitter_ms) } else { 0 };
        // One draw decides both faults, so their shares are exact and never overlap.
        let roll: f64 = rng.random();
        let fault = if roll < config.error_rate {
            Fault::Error
        } else if roll < config.error_rate + config.timeout_rate {
            Fault::Timeout
        } else {
            Fault::None
        };
        (Duration::from_millis(config.latency_ms + jitter), fault)
    }

    /// Whether this streamed answer is to be cut off part-way.
    fn draw_truncated(&self) -> bool {
        let rate = self.0.config.truncate_stream_rate;
        rate > 0.0 && lock(&self.0.rng).random::<f64>() < rate
    }

    /// Whether this request's JSON answer is to be malformed.
    fn draw_malformed(&self) -> bool {
        let rate = self.0.config.malformed_json_rate;
        rate > 0.0 && lock(&self.0.rng).random::<f64>() < rate
    }
}

/// The fake's routes: `/v1/chat/completions`, `/v1/embeddings`, `/v1/models[/{id}]`,
/// `/stats`, `/stats/reset`, `/requests` (a log of recent requests with start and end times)
/// and `/control` (the faults in force, changed by POST). Call [`Config::validate`] first (as [`spawn`] and [`serve`] do).
pub fn app(config: Config) -> Router {
    router(AppState::new(config))
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{model}", get(get_model))
        .route("/stats", get(get_stats))
        .route("/stats/reset", post(reset_stats))
        .route("/requests", get(get_requests))
        .route("/control", get(get_control).post(post_control))
        .fallback(not_found)
        .with_state(state)
}

/// Serves on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    config.validate()?;
    axum::serve(listener, app(config)).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

/// A fake running in the background of the current runtime; dropped, it stops.
pub struct FakeOpenAi {
    addr: SocketAddr,
    state: AppState,
    task: JoinHandle<()>,
}

/// Validates `config`, binds `config.addr` (port 0 picks a free one) and serves in a task.
pub async fn spawn(config: Config) -> Result<FakeOpenAi, Error> {
    config.validate()?;
    let listener = TcpListener::bind(config.addr).await.map_err(|source| Error::Bind { addr: config.addr, source })?;
    let addr = listener.local_addr()?;
    let state = AppState::new(config);
    let app = router(state.clone());
    let task = tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(error = %err, "fake-openai stopped");
        }
    });
    Ok(FakeOpenAi { addr, state, task })
}

impl FakeOpenAi {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/v1`, the base URL OpenAI clients expect.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The same numbers as `GET /stats`.
    pub fn stats(&self) -> Stats {
        self.state.stats()
    }

    /// Clears the counters (not the quota window), as `POST /stats/reset` does.
    pub fn reset(&self) {
        self.state.reset();
    }
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn chat_completions(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let number = state.0.next_id.fetch_add(1, Ordering::Relaxed);
    let malformed = state.draw_malformed();
    respond(&state, Endpoint::ChatCompletions, &headers, || chat::answer(&body, number, malformed)).await
}

async fn embeddings(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    respond(&state, Endpoint::Embeddings, &headers, || embeddings::answer(&state.0.config, &body)).await
}

/// Answers a chargeable request and logs when it started and ended.
async fn respond(
    state: &AppState,
    endpoint: Endpoint,
    headers: &HeaderMap,
    compute: impl FnOnce() -> Result<Answer, ApiError>,
) -> Response {
    let started_ms = unix_ms();
    let response = answer(state, endpoint, headers, compute).await;
    state.log(LoggedRequest {
        endpoint: endpoint.key(),
        status: response.status().as_u16(),
        started_ms,
        finished_ms: unix_ms(),
    });
    response
}

/// The steps every chargeable request takes; see the crate documentation for their order.
async fn answer(
    state: &AppState,
    endpoint: Endpoint,
    headers: &HeaderMap,
    compute: impl FnOnce() -> Result<Answer, ApiError>,
) -> Response {
    lock(&state.0.stats).arrived(endpoint);
    let answer = match state.authorize(headers).and_then(|()| compute()) {
        Ok(answer) => answer,
        Err(err) => {
            state.finish(endpoint, Outcome::Invalid);
            return OpenAiError::from(err).into_response();
        }
    };
    lock(&state.0.models).insert(answer.model.clone());

    let usage = answer.usage;
    let (remaining_requests, remaining_tokens) =
        match state.0.quota.admit(usage.prompt_tokens + usage.completion_tokens, tokio::time::Instant::now()) {
            Verdict::Admitted { remaining_requests, remaining_tokens } => (remaining_requests, remaining_tokens),
            Verdict::Limited { limit, retry_after_secs, message } => {
                state.finish(endpoint, Outcome::RateLimited);
                tracing::debug!(endpoint = endpoint.key(), retry_after_secs, "rate limited");
                let mut response = OpenAiError::rate_limited(limit, message, retry_after_secs).into_response();
                rate_limit_headers(state, &mut response, Some(0).filter(|_| limit == "requests"), None);
                return response;
            }
        };

    let (latency, fault) = state.draw();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match fault {
        Fault::Error => {
            state.finish(endpoint, Outcome::Error);
            OpenAiError::server_error().into_response()
        }
        Fault::Timeout => {
            state.finish(endpoint, Outcome::Timeout);
            tokio::time::sleep(Duration::from_millis(state.0.config.hang_ms)).await;
            OpenAiError::timeout().into_response()
        }
        Fault::None => {
            let mut response = match answer.body {
                Body::Json(json) => {
                    served(state, endpoint, usage, answer.inputs);
                    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], json).into_response()
                }
                Body::Events { mut events, cut } => {
                    if state.draw_truncated() {
                        events.truncate(cut);
                        state.finish(endpoint, Outcome::Truncated);
                        tracing::debug!(endpoint = endpoint.key(), events = cut, "stream truncated");
                    } else {
                        served(state, endpoint, usage, answer.inputs);
                    }
                    let headers = [
                        (header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
                        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
                    ];
                    (headers, sse_body(events)).into_response()
                }
            };
            rate_limit_headers(state, &mut response, remaining_requests, remaining_tokens);
            response
        }
    }
}

fn served(state: &AppState, endpoint: Endpoint, usage: Usage, inputs: u64) {
    let mut stats = lock(&state.0.stats);
    stats.finished(endpoint, Outcome::Served);
    stats.tokens(usage.prompt_tokens, usage.completion_tokens);
    stats.inputs(endpoint, inputs);
}

/// One `data:` event per payload, each its own body frame, so clients see the answer arrive
/// in pieces as from a real upstream.
fn sse_body(events: Vec<String>) -> axum::body::Body {
    let frames =
        events.into_iter().map(|data| Ok::<_, std::convert::Infallible>(Bytes::from(format!("data: {data}\n\n"))));
    axum::body::Body::from_stream(futures::stream::iter(frames))
}

/// OpenAI's `x-ratelimit-*` headers, for the limits that are set.
fn rate_limit_headers(
    state: &AppState,
    response: &mut Response,
    remaining_requests: Option<u64>,
    remaining_tokens: Option<u64>,
) {
    let (rpm, tpm) = state.0.quota.limits();
    let headers = response.headers_mut();
    if rpm > 0 {
        headers.insert("x-ratelimit-limit-requests", HeaderValue::from(rpm));
        if let Some(remaining) = remaining_requests {
            headers.insert("x-ratelimit-remaining-requests", HeaderValue::from(remaining));
        }
    }
    if tpm > 0 {
        headers.insert("x-ratelimit-limit-tokens", HeaderValue::from(tpm));
        if let Some(remaining) = remaining_tokens {
            headers.insert("x-ratelimit-remaining-tokens", HeaderValue::from(remaining));
        }
    }
}

fn model(id: &str) -> Model {
    Model::new(id, "millrace-fake-openai")
}

async fn list_models(State(state): State<AppState>, headers: HeaderMap) -> Response {
    lock(&state.0.stats).arrived(Endpoint::Models);
    if let Err(err) = state.authorize(&headers) {
        state.finish(Endpoint::Models, Outcome::Invalid);
        return OpenAiError::from(err).into_response();
    }
    state.finish(Endpoint::Models, Outcome::Served);
    let data: Vec<_> = lock(&state.0.models).iter().map(|id| model(id)).collect();
    axum::Json(ModelList::new(data)).into_response()
}

/// Any model id exists: a fake answers for whatever model it is asked about.
async fn get_model(State(state): State<AppState>, headers: HeaderMap, Path(model): Path<String>) -> Response {
    lock(&state.0.stats).arrived(Endpoint::Models);
    if let Err(err) = state.authorize(&headers) {
        state.finish(Endpoint::Models, Outcome::Invalid);
        return OpenAiError::from(err).into_response();
    }
    state.finish(Endpoint::Models, Outcome::Served);
    axum::Json(self::model(&model)).into_response()
}

async fn get_requests(State(state): State<AppState>) -> axum::Json<serde_json::Value> {
    let requests: Vec<LoggedRequest> = lock(&state.0.log).iter().cloned().collect();
    axum::Json(serde_json::json!({ "requests": requests }))
}

async fn get_control(State(state): State<AppState>) -> axum::Json<Faults> {
    axum::Json(*lock(&state.0.faults))
}

async fn post_control(State(state): State<AppState>, body: Bytes) -> Response {
    let change: FaultsChange = match serde_json::from_slice(&body) {
        Ok(change) => change,
        Err(err) => return OpenAiError::from(ApiError::unparsable_json(err)).into_response(),
    };
    let mut faults = lock(&state.0.faults);
    match faults.changed(&change) {
        Ok(next) => {
            *faults = next;
            tracing::info!(?next, "faults changed");
            axum::Json(next).into_response()
        }
        Err(err) => OpenAiError::from(ApiError::invalid("control", "invalid_value", err.to_string())).into_response(),
    }
}

async fn get_stats(State(state): State<AppState>) -> axum::Json<Stats> {
    axum::Json(state.stats())
}

async fn reset_stats(State(state): State<AppState>) -> StatusCode {
    state.reset();
    StatusCode::NO_CONTENT
}

async fn not_found(method: Method, uri: Uri) -> OpenAiError {
    ApiError::not_found(format!("Invalid URL ({method} {uri})")).into()
}
