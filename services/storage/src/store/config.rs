//! What the store needs to know: where the database is, the embedding dimension and the HNSW
//! index parameters (the HNSW insert is the pipeline's physical limit, so they are tunable).

use std::fmt;
use std::time::Duration;

use millrace_common::postgres::DatabaseTls;

use super::StoreError;

/// pgvector's limits for an HNSW index on `vector`.
const MAX_DIMENSIONS: usize = 2000;
const MAX_EF: u32 = 1000;

#[derive(Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// `postgres://user:password@host:port/database` (MILLRACE_DATABASE_URL); its `sslmode`
    /// says whether and how TLS is used (`millrace_common::postgres`).
    pub database_url: String,
    /// The TLS files of the connections (MILLRACE_DATABASE_CA_FILE and the client's
    /// certificate and key).
    pub database_tls: DatabaseTls,
    /// Embedding dimension (MILLRACE_EMBEDDING_DIM); fixed once the schema exists.
    pub dimensions: usize,
    /// HNSW `m`: links per node. Used when the index is created.
    pub hnsw_m: u32,
    /// HNSW `ef_construction`: candidate list size while building. Used when the index is created.
    pub hnsw_ef_construction: u32,
    /// HNSW `ef_search`: candidate list size while searching (raised to top_k when smaller).
    pub hnsw_ef_search: u32,
    /// Connections in the pool.
    pub pool_size: usize,
    /// How long a caller waits for a pooled connection (and for a new one to connect).
    pub pool_timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            database_url: "postgres://postgres@127.0.0.1:5432/postgres".to_owned(),
            database_tls: DatabaseTls::default(),
            dimensions: 384,
            hnsw_m: 16,
            hnsw_ef_construction: 64,
            hnsw_ef_search: 40,
            pool_size: 8,
            pool_timeout: Duration::from_secs(10),
        }
    }
}

impl StoreConfig {
    /// Checks the values against pgvector's limits; the error names the setting.
    pub fn validate(&self) -> Result<(), StoreError> {
        let bad = |msg: String| Err(StoreError::Config(msg));
        if self.dimensions == 0 || self.dimensions > MAX_DIMENSIONS {
            return bad(format!("MILLRACE_EMBEDDING_DIM must be 1..={MAX_DIMENSIONS}, got {}", self.dimensions));
        }
        if !(2..=100).contains(&self.hnsw_m) {
            return bad(format!("hnsw_m must be 2..=100, got {}", self.hnsw_m));
        }
        if !(4..=MAX_EF).contains(&self.hnsw_ef_construction) || self.hnsw_ef_construction < 2 * self.hnsw_m {
            return bad(format!(
                "hnsw_ef_construction must be 4..={MAX_EF} and at least 2 * hnsw_m ({}), got {}",
                2 * self.hnsw_m,
                self.hnsw_ef_construction
            ));
        }
        if !(1..=MAX_EF).contains(&self.hnsw_ef_search) {
            return bad(format!("hnsw_ef_search must be 1..={MAX_EF}, got {}", self.hnsw_ef_search));
        }
        if self.pool_size == 0 {
            return bad("pool_size must be at least 1".to_owned());
        }
        Ok(())
    }
}

/// Hides the password of the database URL.
impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("database_url", &redact_url(&self.database_url))
            .field("database_tls", &self.database_tls)
            .field("dimensions", &self.dimensions)
            .field("hnsw_m", &self.hnsw_m)
            .field("hnsw_ef_construction", &self.hnsw_ef_construction)
            .field("hnsw_ef_search", &self.hnsw_ef_search)
            .field("pool_size", &self.pool_size)
            .field("pool_timeout", &self.pool_timeout)
            .finish()
    }
}

/// `postgres://user:secret@host/db` -> `postgres://user:***@host/db`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((userinfo, host)) = rest.rsplit_once('@') else { return url.to_owned() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        StoreConfig::default().validate().unwrap();
    }

    #[test]
    fn invalid_dimension_names_the_variable() {
        let config = StoreConfig { dimensions: 0, ..StoreConfig::default() };
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("MILLRACE_EMBEDDING_DIM"), "{err}");
        assert!(!err.is_retryable());
    }

    #[test]
    fn debug_hides_the_password() {
        let config = StoreConfig { database_url: "postgres://u:hunter2@h:1/db".to_owned(), ..StoreConfig::default() };
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2") && shown.contains("u:***@h:1/db"), "{shown}");
    }
}
