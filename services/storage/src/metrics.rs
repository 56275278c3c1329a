//! The storage stage's own metrics, named once here (the stage worker's `millrace_stage_*` come
//! with its crate).

use millrace_common::metrics::{Metric, describe};

/// Chunks written to PostgreSQL (a job's `chunks.stored`).
pub const CHUNKS: &str = "millrace_storage_chunks_total";
/// Batches written (a job's `batches_stored`).
pub const BATCHES: &str = "millrace_storage_batches_total";
pub const UPSERT_DURATION: &str = "millrace_storage_upsert_duration_seconds";
/// Jobs completed: their document's new version made visible.
pub const DOCUMENTS_COMMITTED: &str = "millrace_storage_documents_committed_total";

pub const METRICS: &[Metric] = &[
    Metric::counter(CHUNKS, "Chunks written to PostgreSQL."),
    Metric::counter(BATCHES, "Batches of chunks written to PostgreSQL."),
    Metric::histogram(UPSERT_DURATION, "Time writing one batch to PostgreSQL took, in seconds."),
    Metric::counter(DOCUMENTS_COMMITTED, "Document versions made visible (their jobs completed)."),
];

/// Describes the storage service's metrics and registers its counters at zero.
pub fn register() {
    describe(METRICS);
    for counter in [CHUNKS, BATCHES, DOCUMENTS_COMMITTED] {
        metrics::counter!(counter).increment(0);
    }
}
