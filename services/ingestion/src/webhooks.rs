//! Webhooks: when a run ends (and, if asked, when each of its jobs ends) millrace POSTs a signed
//! JSON body to the run's URL. Deliveries go through a transactional outbox in PostgreSQL
//! ([`Outbox`]), so an event recorded once is delivered even if the replica that recorded it
//! dies; every replica runs the delivery loop ([`deliver`]), and a row is claimed by one replica
//! at a time (`FOR UPDATE SKIP LOCKED` plus a lease), retried with backoff for a day, then
//! marked failed. Targets pass the same address rules as fetched documents.

mod config;
pub mod deliver;
mod outbox;
mod sign;
mod spec;

pub use self::config::WebhookConfig;
pub use self::deliver::Deliverer;
pub use self::outbox::{Attempt, Delivery, DeliveryStatus, LogPage, LogQuery, NewDelivery, Outbox, OutboxError};
pub use self::sign::{SIGNATURE_HEADER, signature};
pub use self::spec::{WebhookEvent, WebhookSpec, check_spec};

/// The header that names the event (`run.completed`, `job.completed`, `job.failed`).
pub const EVENT_HEADER: &str = "X-Millrace-Event";
/// The header that names the delivery (the event id), the same on every attempt, so that a
/// receiver can drop a repeat.
pub const DELIVERY_HEADER: &str = "X-Millrace-Delivery";
