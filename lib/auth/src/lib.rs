//! Who may do what. Ingestion and the llm-gateway authenticate every call with
//! `Authorization: Bearer <key>`; a key stands for a [`Caller`]: its tenant, its [`Scope`]s, the
//! collections it may touch and its limits. Everything a caller does is confined to its tenant.

mod caller;
mod scope;

pub use caller::{Caller, DEFAULT_COLLECTION, DEFAULT_TENANT};
pub use scope::{Scope, UnknownScope};
