//! PostgreSQL connection pools, built the same way by every service that keeps data there
//! (storage's chunks, the key store of ingestion and the llm-gateway). The pool connects lazily:
//! building it opens no connection.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::ConfigError;

/// A pool of at most `max_size` connections to `url`; `variable` names the setting in errors.
/// `timeout` bounds the wait for a pooled connection and the connect of a new one.
pub fn pool(variable: &str, url: &str, max_size: usize, timeout: Duration) -> Result<Pool, ConfigError> {
    let pg_config: tokio_postgres::Config =
        url.parse().map_err(|err| ConfigError::new(variable, format!("not a PostgreSQL URL: {err}")))?;
    let manager = Manager::from_config(pg_config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .build()
        .map_err(|err| ConfigError::new(variable, format!("building the connection pool: {err}")))
}
