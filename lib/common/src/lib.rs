//! Shared foundations of the millrace services, so that each service's `main.rs` stays short
//! and every service answers health, readiness, metrics and shutdown the same way.

pub mod bounds;
pub mod config;
pub mod error;
pub mod failure;
pub mod grpc_client;
pub mod host;
pub mod metrics;
pub mod postgres;
pub mod redis_conn;
pub mod server;
pub mod shutdown;
pub mod sync;
pub mod telemetry;
pub mod time;
pub mod tls;

pub use config::{ConfigError, ServerLimits, ServiceConfig, Settings, llm_configured};
pub use error::{ApiError, ErrorCode, RETRY_AFTER_METADATA};
pub use failure::HandlerError;
pub use host::Host;
