//! The store's one error type. Every error says whether retrying the same call may succeed, so
//! that the storage stage can leave a message for redelivery or dead-letter it.

use millrace_common::error::ErrorCode;

pub type PoolError = deadpool_postgres::PoolError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A request the store can never accept (empty ids, non-finite values, a non-object filter).
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A vector whose length differs from the configured dimension.
    #[error(
        "embedding has {got} dimensions but the store holds {expected}-dimensional vectors (MILLRACE_EMBEDDING_DIM)"
    )]
    DimensionMismatch { expected: usize, got: usize },

    /// A configuration value out of range.
    #[error("invalid storage configuration: {0}")]
    Config(String),

    /// The database schema does not match the configuration (e.g. another embedding dimension).
    #[error("{0}")]
    Schema(String),

    /// No connection could be had from the pool.
    #[error("database connection pool: {0}")]
    Pool(#[from] PoolError),

    /// The database answered with an error, or the connection failed.
    #[error("database: {}", describe(.0))]
    Database(#[from] tokio_postgres::Error),
}

/// The server's own message and SQLSTATE when it sent one: tokio-postgres shows only "db error",
/// which says nothing in a log line or a dead letter.
fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => err.to_string(),
    }
}

impl StoreError {
    /// Whether the same call may succeed later: connection, pool and serialization/deadlock
    /// failures, and a server shutting down or out of resources. Invalid data, constraint
    /// violations, dimension mismatches and schema errors are permanent.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::InvalidInput(_) | Self::DimensionMismatch { .. } | Self::Config(_) | Self::Schema(_) => false,
            Self::Pool(e) => match e {
                PoolError::Timeout(_) | PoolError::Closed => true,
                PoolError::Backend(e) => is_retryable_pg(e),
                PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => false,
            },
            Self::Database(e) => is_retryable_pg(e),
        }
    }

    /// The shared error code, for answering over HTTP or gRPC.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidInput(_) | Self::DimensionMismatch { .. } => ErrorCode::InvalidArgument,
            _ if self.is_retryable() => ErrorCode::Unavailable,
            _ => ErrorCode::Internal,
        }
    }
}

/// SQLSTATE classes and codes worth a retry.
fn is_retryable_pg(e: &tokio_postgres::Error) -> bool {
    if let Some(state) = e.code() {
        let code = state.code();
        return matches!(
            &code[..2.min(code.len())],
            "08" // connection exception
            | "40" // transaction rollback: serialization failure, deadlock
            | "53" // insufficient resources: too many connections, out of memory, disk full
            | "57" // operator intervention: shutdown, cannot connect now, query cancelled
            | "58" // system error (I/O)
        ) || code == "55P03"; // lock not available
    }
    // No SQLSTATE: the connection broke, timed out or could not be made. (Encoding and decoding
    // errors also have none; tokio-postgres does not expose its error kind, so they are told apart
    // by their message.)
    if e.is_closed() {
        return true;
    }
    if std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()) {
        return true;
    }
    let message = e.to_string();
    ["error connecting", "error communicating", "timeout", "connection closed"].iter().any(|m| message.starts_with(m))
}
