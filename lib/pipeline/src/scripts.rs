//! The Lua scripts that move a job from one stage to the next. Each runs atomically in Redis,
//! so a hand-off happens entirely or not at all, and each is guarded by a flag so that a
//! redelivered message repeats nothing. Each also appends what it did to the job's events
//! stream (`Keys::job_events`), inside the same guard, so every event is written exactly once
//! and in the order the job went through it.
//!
//! Every entry a script adds carries the job's retry generation (`gen`), and every script that
//! acts for an entry first checks that the entry's generation is the job's: a dead-letter retry
//! starts a new generation and puts back every step it needs, so an older entry still on a
//! stream (or a worker still running one) changes nothing.
//!
//! Each script is a file in `scripts/`, which starts with its KEYS, ARGV and answers. The
//! entries they add use the field names of `entry` (the script tests decode them).

use std::sync::LazyLock;

use redis::Script;

/// Stores every batch of a chunked document and enqueues each on the metadata and embeddings
/// streams, once per job.
pub(crate) static COMMIT_CHUNKS: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/commit_chunks.lua")));

/// Records one half of a batch; the half that completes the pair enqueues storage, once.
pub(crate) static COMPLETE_HALF: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/complete_half.lua")));

/// Counts a stored batch once; the last one marks the job `committing`.
pub(crate) static RECORD_STORED: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/record_stored.lua")));

/// Moves a job to a final status, once (and settles its run, if it has one).
pub(crate) static FINISH: LazyLock<Script> = LazyLock::new(|| with_settle_run(include_str!("scripts/finish.lua")));

/// Adds to a run's count of work still to submit, and settles the run.
pub(crate) static RUN_PROGRESS: LazyLock<Script> =
    LazyLock::new(|| with_settle_run(include_str!("scripts/run_progress.lua")));

/// Ends the crawler's work on one page: new links join the frontier, a skipped page is
/// recorded, the page leaves `pending`, once per page; and settles the run.
pub(crate) static CRAWL_PAGE: LazyLock<Script> =
    LazyLock::new(|| with_settle_run(include_str!("scripts/crawl_page.lua")));

/// A script that may finish a run: Redis scripts share no functions, so `settle_run` is
/// prepended to each.
fn with_settle_run(body: &str) -> Script {
    Script::new(&format!("{}\n{body}", include_str!("scripts/settle_run.lua")))
}

/// Retries the job of a dead-lettered entry (see `dead_letters`).
pub(crate) static RETRY_JOB: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("scripts/retry_job.lua")));

/// Adds the llm-gateway's charges to a job's record, if the record exists.
pub(crate) static ADD_LLM_USAGE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/add_llm_usage.lua")));
