//! The stream worker that every pipeline stage runs, so that a stage is only a handler.
//!
//! Redis Streams with consumer groups give at-least-once delivery; this crate adds the rules
//! that make it safe (see ARCHITECTURE.md, "Delivery invariants"):
//! - an entry is acknowledged only after its handler returned, i.e. after its effects are durable;
//! - a starting consumer first finishes its own pending entries;
//! - entries idle past the visibility timeout are reclaimed by live consumers, while entries
//!   still being worked on are kept fresh by a heartbeat so they are not taken from a live worker;
//! - after `max_deliveries` an entry is copied to the dead-letter stream and acknowledged;
//! - reads ask only for as many entries as there are free concurrency permits (backpressure);
//! - trimming never removes an entry that is still pending.
//!
//! A stage whose downstream can be unavailable (an LLM API, another service) has two more tools,
//! so that an outage makes work wait instead of poisoning it:
//! - a [`Gate`] (its circuit breaker) stops the worker pulling entries while the downstream is
//!   down, and bounds how many are in flight while it is being probed;
//! - [`HandlerError::Deferred`] puts an entry that did not get a fair try back at the end of the
//!   stream without using up a delivery, so it is never dead-lettered for an outage.

mod config;
mod gate;
mod message;
pub mod metrics;
mod stats;
mod worker;

pub use config::WorkerConfig;
pub use gate::Gate;
pub use message::Message;
pub use millrace_common::HandlerError;
pub use stats::queue_stats;
pub use worker::{Handler, StreamError, StreamWorker, WorkerHandle, ensure_group};
