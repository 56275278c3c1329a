//! Key secrets: how they are made, shown and kept. A secret is 256 random bits, so one SHA-256
//! of it is a safe thing to store and look up by (as GitHub, Stripe and LiteLLM do): there is
//! nothing to brute-force, and a slow password hash would only slow down every request.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::TryRngCore as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// Every secret made here starts with this, so that scanners (and people) can tell a millrace key.
pub const SECRET_PREFIX: &str = "mr_";
/// How many leading characters of a secret are kept for display (`mr_` and 7 more).
pub const DISPLAY_PREFIX_CHARS: usize = 10;

/// The SHA-256 of a presented secret: what the key store keeps and the cache is keyed by.
pub type KeyDigest = [u8; 32];

pub fn digest(secret: &str) -> KeyDigest {
    Sha256::digest(secret.as_bytes()).into()
}

/// Lower-case hex of the digest, as stored in `api_keys.key_hash`.
pub fn digest_hex(digest: &KeyDigest) -> String {
    hex::encode(digest)
}

/// A new secret: `mr_` and 43 base64url characters of 32 bytes from the operating system's RNG.
pub fn generate() -> Result<String, rand::rand_core::OsError> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.try_fill_bytes(&mut bytes)?;
    Ok(format!("{SECRET_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// The part of a secret that may be shown again (in lists, logs and audit records).
pub fn display_prefix(secret: &str) -> String {
    secret.chars().take(DISPLAY_PREFIX_CHARS).collect()
}

/// The bootstrap admin key (`MILLRACE_ADMIN_KEY`). Only its digest is kept; `Debug` prints
/// nothing of it.
#[derive(Clone)]
pub struct AdminKey {
    digest: KeyDigest,
}

impl AdminKey {
    pub fn new(secret: &str) -> Self {
        Self { digest: digest(secret) }
    }

    /// Whether a presented secret is this key, compared in constant time (on the digests, so
    /// neither the length nor a common prefix of the secret shows in the timing).
    pub fn matches(&self, presented: &KeyDigest) -> bool {
        self.digest.ct_eq(presented).into()
    }
}

impl fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_256_bit_and_distinct() {
        let (a, b) = (generate().unwrap(), generate().unwrap());
        assert_ne!(a, b);
        assert!(a.starts_with("mr_"));
        assert_eq!(a.len(), 3 + 43);
        assert!(a[3..].chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'), "{a}");
        assert_eq!(URL_SAFE_NO_PAD.decode(&a[3..]).unwrap().len(), 32);
        assert_eq!(display_prefix(&a), a[..10]);
    }

    #[test]
    fn the_admin_key_matches_only_itself_and_never_prints() {
        let key = AdminKey::new("s3cret-admin");
        assert!(key.matches(&digest("s3cret-admin")));
        assert!(!key.matches(&digest("s3cret-admin ")));
        assert!(!format!("{key:?}").contains("s3cret"));
        assert_eq!(digest_hex(&digest("")).len(), 64);
    }
}
