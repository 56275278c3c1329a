//! The signature a receiver checks: HMAC-SHA256 of the raw body, keyed by the run's secret.

use hmac::{Hmac, KeyInit, Mac};
use sha2_11::Sha256;

/// `X-Millrace-Signature: sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-Millrace-Signature";

/// The header value for `body` under `secret`: `sha256=` and the lowercase hex of the MAC.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes a key of any length (a long one is hashed first), so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_rfc_4231_test_case_2() {
        // RFC 4231, test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
