//! What the fake has served, so tests and benchmarks can check what their client really sent
//! (how many retries, how many 429s) without parsing logs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The /v1 endpoints, as keys of `by_endpoint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Embeddings,
    Models,
}

impl Endpoint {
    pub fn key(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat_completions",
            Self::Embeddings => "embeddings",
            Self::Models => "models",
        }
    }
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Served,
    RateLimited,
    Error,
    Timeout,
    /// A streamed answer cut off part-way (`--truncate-stream-rate`).
    Truncated,
    /// 400 or 401: the request was refused before any quota or fault applied.
    Invalid,
}

/// Counters for one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointStats {
    pub requests: u64,
    pub served: u64,
    pub rate_limited: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub invalid: u64,
    /// Streamed answers cut off part-way.
    #[serde(default)]
    pub truncated: u64,
    /// Items of served requests: texts embedded, or one per chat completion.
    #[serde(default)]
    pub inputs: u64,
}

impl EndpointStats {
    fn count(&mut self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Served => &mut self.served,
            Outcome::RateLimited => &mut self.rate_limited,
            Outcome::Error => &mut self.errors,
            Outcome::Timeout => &mut self.timeouts,
            Outcome::Invalid => &mut self.invalid,
            Outcome::Truncated => &mut self.truncated,
        };
        *counter += 1;
    }
}

/// The body of `GET /stats`. `requests` counts arrivals; the outcome counters are filled as
/// answers go out (a request still hanging towards its 504 already counts as a timeout).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub requests: u64,
    /// 200 answers.
    pub served: u64,
    /// 429 answers.
    pub rate_limited: u64,
    /// Injected 500 answers.
    pub errors: u64,
    /// Injected hangs (answered 504 unless the client gave up first).
    pub timeouts: u64,
    /// 400 and 401 answers.
    pub invalid: u64,
    /// Streamed answers cut off part-way by `--truncate-stream-rate` (status 200, not counted
    /// as served, their tokens not counted).
    #[serde(default)]
    pub truncated: u64,
    /// Tokens of served requests only.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub by_endpoint: BTreeMap<String, EndpointStats>,
}

impl Stats {
    pub(crate) fn arrived(&mut self, endpoint: Endpoint) {
        self.requests += 1;
        self.by_endpoint.entry(endpoint.key().to_owned()).or_default().requests += 1;
    }

    pub(crate) fn finished(&mut self, endpoint: Endpoint, outcome: Outcome) {
        let mut total = EndpointStats::default();
        total.count(outcome);
        self.served += total.served;
        self.rate_limited += total.rate_limited;
        self.errors += total.errors;
        self.timeouts += total.timeouts;
        self.invalid += total.invalid;
        self.truncated += total.truncated;
        self.by_endpoint.entry(endpoint.key().to_owned()).or_default().count(outcome);
    }

    pub(crate) fn inputs(&mut self, endpoint: Endpoint, inputs: u64) {
        self.by_endpoint.entry(endpoint.key().to_owned()).or_default().inputs += inputs;
    }

    pub(crate) fn tokens(&mut self, prompt: u64, completion: u64) {
        self.prompt_tokens += prompt;
        self.completion_tokens += completion;
    }
}
