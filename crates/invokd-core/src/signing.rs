//! Signed, expiring file URLs: an HMAC-SHA256 over the blob key and the expiry time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Signs and checks `(blob key, expires)` pairs with a secret kept in the data directory.
#[derive(Clone)]
pub struct UrlSigner {
    secret: Vec<u8>,
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UrlSigner(..)")
    }
}

impl UrlSigner {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self {
            secret: secret.into(),
        }
    }

    fn mac(&self, key: &str, expires: i64) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = match HmacSha256::new_from_slice(&self.secret) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(key.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac
    }

    /// The hex signature for `key` valid until `expires` (unix seconds).
    pub fn sign(&self, key: &str, expires: i64) -> String {
        hex::encode(self.mac(key, expires).finalize().into_bytes())
    }

    /// Whether `signature` is valid for `key` and `expires` and `now` is not past `expires`.
    /// The comparison is constant-time.
    pub fn verify(&self, key: &str, expires: i64, signature: &str, now: i64) -> bool {
        if now > expires {
            return false;
        }
        let Ok(sig) = hex::decode(signature) else {
            return false;
        };
        self.mac(key, expires).verify_slice(&sig).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_binds_key_and_expiry() {
        let s = UrlSigner::new(b"secret".to_vec());
        let sig = s.sign("a/b.png", 100);
        assert!(s.verify("a/b.png", 100, &sig, 99));
        assert!(s.verify("a/b.png", 100, &sig, 100));
        assert!(!s.verify("a/b.png", 100, &sig, 101), "expired");
        assert!(!s.verify("a/c.png", 100, &sig, 99), "other key");
        assert!(!s.verify("a/b.png", 101, &sig, 99), "other expiry");
        assert!(!s.verify("a/b.png", 100, "zz", 99), "not hex");
        assert!(!UrlSigner::new(b"other".to_vec()).verify("a/b.png", 100, &sig, 99));
    }
}
