//! The chunking stage's own metrics, named once here (the stage worker's `millrace_stage_*`
//! and the fetcher's `millrace_fetch_*` come with their crates).

use millrace_common::metrics::describe;

millrace_common::declare_metrics! {
    /// Documents parsed, split and handed on (once per job, not per delivery).
    DOCUMENTS: counter("millrace_chunking_documents_total", "Documents parsed, split and handed on to metadata and embeddings.");
    CHUNKS: counter("millrace_chunking_chunks_total", "Chunks made from documents and handed on (a job's chunks.total).");
    /// Chunks identical to one of the document's visible version (their stored results ride along).
    CHUNKS_UNCHANGED: counter("millrace_chunking_chunks_unchanged_total", "Chunks identical to one of the document's visible version, whose stored results were attached.");
    BATCHES: counter("millrace_chunking_batches_total", "Batches of chunks stored and enqueued on the metadata and embeddings streams.");
    PARSE_DURATION: histogram("millrace_chunking_parse_duration_seconds", "Time one document's parse and split took, in seconds.");
    /// Crawl pages handled, by `outcome` (`taken`, `skipped`).
    CRAWL_PAGES: counter("millrace_crawl_pages_total", "Crawl pages handled by the crawler, by outcome (taken: became a job; skipped).");
    /// Crawl pages not taken, by `reason` (the skip reason's code: robots, status, content_type, ...).
    CRAWL_SKIPPED: counter("millrace_crawl_pages_skipped_total", "Crawl pages not taken, by reason (robots, max_pages, status, too_large, timeout, too_many_redirects, content_type, canonical, duplicate, out_of_scope, ...).");
    CRAWL_REQUESTS: counter("millrace_crawl_requests_total", "Fetches made by the crawler, by kind (page, robots, sitemap); redirect hops are not counted apart.");
    CRAWL_ROBOTS: counter("millrace_crawl_robots_lookups_total", "robots.txt rules looked up, by source (memory, redis: cached for the run; fetched).");
    CRAWL_LIMIT_WAIT: histogram("millrace_crawl_limit_wait_seconds", "Time a crawler request waited for its host's requests-per-minute limit, in seconds.");
    PARSES_RUNNING: gauge("millrace_chunking_parses_running", "Parse child processes running now (at most MILLRACE_MAX_CONCURRENT_PARSES).");
}

/// Describes every metric the chunking service exports and registers its counters at zero.
pub fn register() {
    describe(METRICS);
    describe(millrace_fetch::METRICS);
    for counter in [DOCUMENTS, CHUNKS, CHUNKS_UNCHANGED, BATCHES, CRAWL_REQUESTS] {
        metrics::counter!(counter).increment(0);
    }
    metrics::gauge!(PARSES_RUNNING).set(0.0);
}

/// Counts one parse child as running until dropped (with the parse's permit, once the child
/// has exited or been killed).
pub struct ParseRunning(());

impl ParseRunning {
    pub fn start() -> Self {
        metrics::gauge!(PARSES_RUNNING).increment(1.0);
        Self(())
    }
}

impl Drop for ParseRunning {
    fn drop(&mut self) {
        metrics::gauge!(PARSES_RUNNING).decrement(1.0);
    }
}
