//! The job model and the hand-offs between stages, shared by every service so that the
//! meaning of a key, a stream entry or a job field is written down once.
//!
//! A job is one document's trip through the pipeline. Its record is a Redis hash; its payloads
//! (document bytes, chunk batches, stage results) are Redis keys named after the job and batch,
//! so a retried step rewrites the same key. Every step that moves a job along is one Lua
//! script, which makes each hand-off atomic and idempotent under redelivery.

pub mod content;
mod counts;
mod crawl;
pub mod dead_letters;
pub mod entry;
pub mod events;
mod job;
mod keys;
pub mod run;
pub mod runtime;
mod scripts;
mod stage;
mod store;
mod usage;

pub use counts::{Backlog, JobStatusCounts};
pub use crawl::{PageDone, PageJob, PageOutcome};
pub use entry::{BatchRef, CrawlEntry, EntryRef, HistoryEntry};
pub use job::{ChunkCounts, Job, JobError, JobOptions, JobStatus, LlmUsage, fingerprint};
pub use keys::Keys;
pub use run::{CrawlScope, CrawlSpec, LiveJob, NewRun, RunState, RunStatus};
pub use stage::Stage;
pub use store::{
    CancelOutcome, ChunkingOutcome, HalfOutcome, JobStore, JobStoreError, NewJob, StoredCounts, StoredOutcome,
};
pub use usage::add_llm_usage;
