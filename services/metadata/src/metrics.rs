//! The metadata stage's own metrics, named once here (the stage worker's `millrace_stage_*` and
//! the breaker's `millrace_breaker_*` come with their crates).

use millrace_common::metrics::describe;

millrace_common::declare_metrics! {
    /// Chunks whose metadata was recorded, by `extractor` (`llm`, `extractive`) and `outcome`:
    /// `extracted` (new metadata), `reused` (stored metadata of an identical chunk kept) or
    /// `failed` (LLM metadata invalid after a repair; extractive metadata instead). Summed over
    /// outcomes it is a job's `chunks.metadata_done`; `failed` is its `chunks.metadata_failed`.
    CHUNKS: counter("millrace_metadata_chunks_total", "Chunks whose metadata was recorded, by extractor and outcome (extracted, reused, failed).");
    BATCHES: counter("millrace_metadata_batches_total", "Batches whose metadata was recorded.");
    REPAIRS: counter("millrace_metadata_repairs_total", "LLM answers that did not fit the schema and were asked for again.");
}

pub const OUTCOMES: [&str; 3] = ["extracted", "reused", "failed"];

/// Describes the metadata service's metrics (installing the recorder, so call it before anything
/// records: the extractor's breaker registers its series when it is made).
pub fn describe_all() {
    describe(METRICS);
    describe(millrace_resilience::metrics::METRICS);
}

/// Registers the service's counters at zero, labelled with the extractor chosen.
pub fn register(extractor: &'static str) {
    for outcome in OUTCOMES {
        metrics::counter!(CHUNKS, "extractor" => extractor, "outcome" => outcome).increment(0);
    }
    metrics::counter!(BATCHES).increment(0);
    metrics::counter!(REPAIRS).increment(0);
}

/// Counts one batch's chunks by outcome.
pub fn batch(extractor: &'static str, chunks: usize, reused: usize, failed: usize) {
    let extracted = chunks.saturating_sub(reused).saturating_sub(failed);
    for (outcome, count) in [("extracted", extracted), ("reused", reused), ("failed", failed)] {
        metrics::counter!(CHUNKS, "extractor" => extractor, "outcome" => outcome).increment(count as u64);
    }
    metrics::counter!(BATCHES).increment(1);
}
