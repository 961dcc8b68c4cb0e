//! Verified keys kept in memory for a few seconds, so that a request costs one store read
//! (its job) instead of two. Revoking a key through this process drops it at once; the time
//! limit bounds how long a key revoked by another writer of the same store stays usable.

use std::{
    collections::HashMap,
    sync::RwLock,
    time::{Duration, Instant},
};

use crate::{KeyId, keys::KeyHash, service::Caller};

/// Keys kept at most; past it the cache starts again empty (a simple bound on memory).
const MAX_KEYS: usize = 10_000;

#[derive(Debug)]
pub struct KeyCache {
    ttl: Duration,
    entries: RwLock<HashMap<KeyHash, (Caller, Instant)>>,
}

impl KeyCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// The caller of a key verified less than `ttl` ago.
    pub fn get(&self, hash: &KeyHash) -> Option<Caller> {
        let entries = self.entries.read().ok()?;
        let (caller, at) = entries.get(hash)?;
        (at.elapsed() < self.ttl).then(|| caller.clone())
    }

    pub fn put(&self, hash: KeyHash, caller: Caller) {
        if self.ttl.is_zero() {
            return;
        }
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() >= MAX_KEYS {
                entries.clear();
            }
            entries.insert(hash, (caller, Instant::now()));
        }
    }

    /// Forgets a key (it was revoked).
    pub fn forget(&self, key_id: KeyId) {
        if let Ok(mut entries) = self.entries.write() {
            entries.retain(|_, (caller, _)| caller.key_id != key_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn caller() -> Caller {
        Caller {
            key_id: KeyId::generate(),
            project: Arc::from("p"),
        }
    }

    #[test]
    fn kept_until_the_ttl_or_forgotten() {
        let cache = KeyCache::new(Duration::from_secs(60));
        let (h1, h2) = (KeyHash("a".into()), KeyHash("b".into()));
        let (c1, c2) = (caller(), caller());
        cache.put(h1.clone(), c1.clone());
        cache.put(h2.clone(), c2.clone());
        assert_eq!(cache.get(&h1), Some(c1.clone()));
        cache.forget(c1.key_id);
        assert_eq!(cache.get(&h1), None);
        assert_eq!(cache.get(&h2), Some(c2));

        let none = KeyCache::new(Duration::ZERO);
        none.put(h1.clone(), c1);
        assert_eq!(none.get(&h1), None);
    }
}
