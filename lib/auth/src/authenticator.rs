//! The door: turns an `Authorization` header into the [`Caller`] its key stands for, or into
//! 401 (no key, a malformed header, an unknown or revoked key) or 503 (the key store is down
//! and the key is neither cached nor the bootstrap key).

mod cache;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use millrace_common::postgres::DatabaseTls;
use millrace_common::{ApiError, ConfigError, Settings};

use self::cache::Cache;
pub use self::cache::Lookup;
use crate::Caller;
use crate::secret::{self, AdminKey};
use crate::store::KeyStore;

/// The longest a replica may remember a key check: revocation must reach every replica within
/// a second.
pub const MAX_KEY_CACHE: Duration = Duration::from_millis(1000);
/// The default stays under the limit by the time a check and a revocation take, so that a
/// revoked key is refused everywhere within the second, not just after it.
pub const DEFAULT_KEY_CACHE_MS: u64 = 900;
/// Keys remembered per replica at most.
const CACHE_CAPACITY: usize = 10_000;
/// Longer than any secret we make or any operator would choose: not worth hashing.
const MAX_SECRET_LEN: usize = 512;

/// `MILLRACE_ADMIN_KEY`, `MILLRACE_DATABASE_URL` and `MILLRACE_KEY_CACHE_MS`, shared by every
/// service that authenticates callers.
#[derive(Clone)]
pub struct AuthConfig {
    /// The bootstrap admin key (`MILLRACE_ADMIN_KEY`); unset, only keys from the store work.
    pub admin_key: Option<AdminKey>,
    /// Where keys are stored (`MILLRACE_DATABASE_URL`); unset, only the admin key works.
    pub database_url: Option<String>,
    /// The TLS of that connection (`MILLRACE_DATABASE_CA_FILE`, `MILLRACE_DATABASE_CLIENT_*_FILE`).
    pub database_tls: DatabaseTls,
    /// How long a key check is remembered (`MILLRACE_KEY_CACHE_MS`, at most 1000; 0 = never).
    pub key_cache: Duration,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password.
        f.debug_struct("AuthConfig")
            .field("admin_key", &self.admin_key)
            .field("database_url", &self.database_url.as_ref().map(|_| "<set>"))
            .field("key_cache", &self.key_cache)
            .finish()
    }
}

impl AuthConfig {
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let admin_key = settings.raw("ADMIN_KEY").map(str::trim).map(AdminKey::new);
        let database_url = match settings.get::<String>("DATABASE_URL")? {
            Some(url) if !url.starts_with("postgres://") && !url.starts_with("postgresql://") => {
                return Err(ConfigError::new("DATABASE_URL", "must be a postgres:// URL"));
            }
            url => url,
        };
        let key_cache = settings.duration_ms("KEY_CACHE_MS", DEFAULT_KEY_CACHE_MS)?;
        if key_cache > MAX_KEY_CACHE {
            return Err(ConfigError::new(
                "KEY_CACHE_MS",
                "must be at most 1000: a revoked key must be refused by every replica within a second",
            ));
        }
        let database_tls = DatabaseTls::load(settings)?;
        Ok(Self { admin_key, database_url, database_tls, key_cache })
    }

    /// The key store these settings name, if any (connects nothing yet).
    pub fn key_store(&self) -> Result<Option<KeyStore>, ConfigError> {
        self.database_url.as_deref().map(|url| KeyStore::new("DATABASE_URL", url, &self.database_tls)).transpose()
    }
}

/// Authenticates callers; cheap to clone (clones share the cache).
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    admin_key: Option<AdminKey>,
    store: Option<KeyStore>,
    cache: Cache,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("admin_key", &self.inner.admin_key)
            .field("store", &self.inner.store.is_some())
            .finish()
    }
}

impl Authenticator {
    pub fn new(admin_key: Option<AdminKey>, store: Option<KeyStore>, key_cache: Duration) -> Self {
        let key_cache = key_cache.min(MAX_KEY_CACHE);
        Self { inner: Arc::new(Inner { admin_key, store, cache: Cache::new(key_cache, CACHE_CAPACITY) }) }
    }

    pub fn from_config(config: &AuthConfig) -> Result<Self, ConfigError> {
        if config.admin_key.is_none() && config.database_url.is_none() {
            tracing::warn!("neither MILLRACE_ADMIN_KEY nor MILLRACE_DATABASE_URL is set: every call will be refused");
        }
        Ok(Self::new(config.admin_key.clone(), config.key_store()?, config.key_cache))
    }

    pub fn store(&self) -> Option<&KeyStore> {
        self.inner.store.as_ref()
    }

    /// The caller of a request with this `Authorization` header value.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, ApiError> {
        let secret = bearer(authorization)?;
        let digest = secret::digest(secret);
        if self.inner.admin_key.as_ref().is_some_and(|admin| admin.matches(&digest)) {
            return Ok(Caller::bootstrap_admin());
        }
        let lookup = match self.inner.cache.get(&digest) {
            Some(lookup) => lookup,
            None => {
                let Some(store) = &self.inner.store else {
                    return Err(unknown());
                };
                let sent = Instant::now();
                let lookup = match store.find(&digest).await {
                    Ok(Some(record)) if record.is_revoked() => Lookup::Revoked,
                    Ok(Some(record)) => Lookup::Found(record.caller()),
                    Ok(None) => Lookup::Unknown,
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot check a key: the key store is unavailable");
                        return Err(err.into());
                    }
                };
                self.inner.cache.put(digest, sent, lookup.clone());
                lookup
            }
        };
        match lookup {
            Lookup::Found(caller) => Ok(caller),
            Lookup::Revoked => Err(ApiError::unauthenticated("this API key has been revoked")),
            Lookup::Unknown => Err(unknown()),
        }
    }
}

fn unknown() -> ApiError {
    ApiError::unauthenticated("unknown API key")
}

/// The secret of an `Authorization: Bearer <key>` header value.
fn bearer(authorization: Option<&str>) -> Result<&str, ApiError> {
    let Some(value) = authorization else {
        return Err(ApiError::unauthenticated("missing API key: send `Authorization: Bearer <key>`"));
    };
    let malformed = || ApiError::unauthenticated("malformed Authorization header: expected `Bearer <key>`");
    let (scheme, secret) = value.trim().split_once(' ').ok_or_else(malformed)?;
    let secret = secret.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || secret.is_empty() || secret.contains(char::is_whitespace) {
        return Err(malformed());
    }
    if secret.len() > MAX_SECRET_LEN {
        return Err(ApiError::unauthenticated("unknown API key"));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use millrace_common::ErrorCode;

    use super::*;

    fn admin_only() -> Authenticator {
        Authenticator::new(Some(AdminKey::new("the-admin-key")), None, MAX_KEY_CACHE)
    }

    async fn refused(auth: &Authenticator, header: Option<&str>) -> String {
        let err = auth.authenticate(header).await.err().unwrap_or_else(|| panic!("{header:?} was accepted"));
        assert_eq!(err.code, ErrorCode::Unauthenticated, "{header:?}");
        assert!(!err.message.contains("wrong-key"), "the secret is echoed: {}", err.message);
        err.message
    }

    #[tokio::test]
    async fn the_bootstrap_key_is_admin_and_everything_else_is_401() {
        let auth = admin_only();
        assert_eq!(auth.authenticate(Some("Bearer the-admin-key")).await.unwrap(), Caller::bootstrap_admin());
        assert_eq!(auth.authenticate(Some("bearer  the-admin-key ")).await.unwrap(), Caller::bootstrap_admin());
        assert!(refused(&auth, None).await.contains("missing"));
        assert!(refused(&auth, Some("the-admin-key")).await.contains("malformed"));
        assert!(refused(&auth, Some("Basic the-admin-key")).await.contains("malformed"));
        assert!(refused(&auth, Some("Bearer ")).await.contains("malformed"));
        assert!(refused(&auth, Some("Bearer wrong-key")).await.contains("unknown"));
        assert!(refused(&auth, Some(&format!("Bearer {}", "x".repeat(10_000)))).await.contains("unknown"));
    }

    #[test]
    fn the_cache_ttl_is_at_most_a_second() {
        let err = AuthConfig::from_settings(&Settings::from_pairs([("KEY_CACHE_MS", "1001")])).unwrap_err();
        assert_eq!(err.variable, "MILLRACE_KEY_CACHE_MS");
        let err = AuthConfig::from_settings(&Settings::from_pairs([("DATABASE_URL", "mysql://x")])).unwrap_err();
        assert_eq!(err.variable, "MILLRACE_DATABASE_URL");
        let config = AuthConfig::from_settings(&Settings::from_pairs([
            ("ADMIN_KEY", "hunter2-secret"),
            ("DATABASE_URL", "postgres://u:pw-secret@h/db"),
        ]))
        .unwrap();
        assert_eq!(config.key_cache, Duration::from_millis(DEFAULT_KEY_CACHE_MS));
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2") && !printed.contains("pw-secret"), "{printed}");
    }
}
