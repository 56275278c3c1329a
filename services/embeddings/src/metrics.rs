//! The embeddings stage's own metrics, named once here (the stage worker's `millrace_stage_*`
//! and the breaker's `millrace_breaker_*` come with their crates).

use millrace_common::metrics::describe;

millrace_common::declare_metrics! {
    /// Chunks whose vector was recorded, by `embedder` (`local`, `hashing`, `gateway`) and
    /// `outcome`: `embedded` (a new vector from the embedder), `cached` (from the shared cache of
    /// vectors by model and text) or `reused` (the stored vector of an identical chunk). Summed over
    /// outcomes it is a job's `chunks.embedded`.
    CHUNKS: counter("millrace_embeddings_chunks_total", "Chunks whose vector was recorded, by embedder and outcome (embedded, cached, reused).");
    BATCHES: counter("millrace_embeddings_batches_total", "Batches whose vectors were recorded.");
    /// One forward pass of the local model (concurrent requests batched together).
    PASS_DURATION: histogram("millrace_embeddings_pass_duration_seconds", "Time one forward pass of the local model took, in seconds.");
    PASS_TEXTS: histogram("millrace_embeddings_pass_texts", "Texts embedded in one forward pass of the local model.");
}

pub const OUTCOMES: [&str; 3] = ["embedded", "cached", "reused"];

/// Describes the embeddings service's metrics (installing the recorder, so call it before anything
/// records: the embedder's breaker registers its series when it is made).
pub fn describe_all() {
    describe(METRICS);
    describe(millrace_resilience::metrics::METRICS);
}

/// Registers the service's counters at zero, labelled with the embedder chosen.
pub fn register(embedder: &'static str) {
    for outcome in OUTCOMES {
        metrics::counter!(CHUNKS, "embedder" => embedder, "outcome" => outcome).increment(0);
    }
    metrics::counter!(BATCHES).increment(0);
}

/// Counts one batch's chunks by outcome.
pub fn batch(embedder: &'static str, embedded: usize, cached: usize, reused: usize) {
    for (outcome, count) in [("embedded", embedded), ("cached", cached), ("reused", reused)] {
        metrics::counter!(CHUNKS, "embedder" => embedder, "outcome" => outcome).increment(count as u64);
    }
    metrics::counter!(BATCHES).increment(1);
}
