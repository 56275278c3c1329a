//! Who may do what. Ingestion and the llm-gateway authenticate every call with
//! `Authorization: Bearer <key>`; a key stands for a [`Caller`]: its tenant, its [`Scope`]s, the
//! collections it may touch and its limits. Everything a caller does is confined to its tenant.
//!
//! - [`KeyStore`]: keys in PostgreSQL, stored as the SHA-256 of their secret;
//! - [`Authenticator`]: a header to a caller (the bootstrap `MILLRACE_ADMIN_KEY`, else the
//!   store, through a per-replica cache of at most a second);
//! - [`door`]: the authenticator and a service's table of route scopes, as an axum middleware
//!   and a tower layer for tonic;
//! - [`AuditLog`]: who did what, in `audit_events` beside the keys.

pub mod audit;
pub mod authenticator;
mod caller;
pub mod door;
mod scope;
pub mod secret;
pub mod store;

pub use audit::{AuditEvent, AuditLog, AuditQuery};
pub use authenticator::{AuthConfig, Authenticator};
pub use caller::{Caller, DEFAULT_COLLECTION, DEFAULT_TENANT, is_valid_name};
pub use door::{Access, Door, Rules};
pub use scope::{Scope, UnknownScope};
pub use secret::AdminKey;
pub use store::{KeyRecord, KeyStore, NewKey, StoreError};
