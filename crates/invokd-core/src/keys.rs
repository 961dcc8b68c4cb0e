//! Model access keys: generated with enough entropy, shown once, stored only as a hash.

use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::ids::KeyId;

/// Every key invokd generates starts with this, so leaked keys are easy to scan for.
pub const KEY_PREFIX: &str = "invk_";

/// The SHA-256 of a key, hex encoded: what the store keeps and looks up by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyHash(pub String);

impl KeyHash {
    pub fn of(secret: &str) -> Self {
        Self(hex::encode(Sha256::digest(secret.as_bytes())))
    }
}

/// A key as stored: never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub id: KeyId,
    pub hash: KeyHash,
    /// The first characters of the key, to recognise it in listings.
    pub prefix: String,
    pub name: String,
    /// The tenant: a key sees the jobs of its project, and no others.
    pub project: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl KeyRecord {
    /// A record for `secret`, which the caller shows once and then forgets. Without a
    /// project, the key gets a project of its own.
    pub fn for_secret(
        secret: &str,
        name: impl Into<String>,
        project: Option<&str>,
        now: DateTime<Utc>,
    ) -> Self {
        let id = KeyId::generate();
        Self {
            id,
            hash: KeyHash::of(secret),
            prefix: secret.chars().take(KEY_PREFIX.len() + 4).collect(),
            name: name.into(),
            project: project.map_or_else(|| id.to_string(), str::to_owned),
            created_at: now,
            revoked_at: None,
        }
    }
}

/// A new random key: the prefix and 32 random bytes, base64url.
pub fn generate_secret() -> String {
    random_secret(KEY_PREFIX)
}

/// `prefix` and 32 random bytes, base64url: a secret of any kind invokd hands out.
pub(crate) fn random_secret(prefix: &str) -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_distinct_and_hash_stably() {
        let a = generate_secret();
        let b = generate_secret();
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX));
        assert_eq!(KeyHash::of(&a), KeyHash::of(&a));
        assert_ne!(KeyHash::of(&a), KeyHash::of(&b));
        assert!(!KeyHash::of(&a).0.contains(&a));
    }
}
