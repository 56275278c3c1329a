//! The storage stage's own metrics, named once here (the stage worker's `millrace_stage_*` come
//! with its crate).

use millrace_common::metrics::describe;

millrace_common::declare_metrics! {
    /// Chunks written to PostgreSQL (a job's `chunks.stored`).
    CHUNKS: counter("millrace_storage_chunks_total", "Chunks written to PostgreSQL.");
    /// Batches written (a job's `batches_stored`).
    BATCHES: counter("millrace_storage_batches_total", "Batches of chunks written to PostgreSQL.");
    UPSERT_DURATION: histogram("millrace_storage_upsert_duration_seconds", "Time writing one batch to PostgreSQL took, in seconds.");
    /// Jobs completed: their document's new version made visible.
    DOCUMENTS_COMMITTED: counter("millrace_storage_documents_committed_total", "Document versions made visible (their jobs completed).");
}

/// Describes the storage service's metrics and registers its counters at zero.
pub fn register() {
    describe(METRICS);
    for counter in [CHUNKS, BATCHES, DOCUMENTS_COMMITTED] {
        metrics::counter!(counter).increment(0);
    }
}
