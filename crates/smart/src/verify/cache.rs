//! Verified tokens, kept until they expire so that a token is checked once, not on every
//! request. Keyed by the token's SHA-256, never by the token itself.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use sha2::{Digest, Sha256};

use super::Verified;

/// A bounded map from token hashes to verified tokens.
#[derive(Debug)]
pub(super) struct TokenCache {
    capacity: usize,
    entries: RwLock<HashMap<[u8; 32], Entry>>,
}

#[derive(Debug)]
struct Entry {
    verified: Arc<Verified>,
    /// The token is refused from this second on (its `exp`, with the configured leeway).
    expires: i64,
    /// From this second on, the token must be checked again (introspection results).
    stale: i64,
}

/// What the cache knows about a token.
pub(super) enum Cached {
    /// Verified and still valid.
    Hit(Arc<Verified>),
    /// Verified once, and expired since.
    Expired,
    /// Not known (or due for a new check).
    Miss,
}

// === impl TokenCache ===

impl TokenCache {
    /// A cache of at most `capacity` tokens (none if zero).
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// The key for `token`.
    pub(super) fn key(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    /// What is known about the token with `key` at `now`.
    pub(super) fn get(&self, key: &[u8; 32], now: i64) -> Cached {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        match entries.get(key) {
            Some(entry) if now >= entry.expires => Cached::Expired,
            Some(entry) if now < entry.stale => Cached::Hit(Arc::clone(&entry.verified)),
            _ => Cached::Miss,
        }
    }

    /// Keeps `verified` until `expires`, or until `stale` if that is sooner. When full, expired
    /// entries go first, then arbitrary ones (an eighth of the capacity at once, so that a full
    /// cache is not swept on every insert).
    pub(super) fn insert(
        &self,
        key: [u8; 32],
        verified: Arc<Verified>,
        expires: i64,
        stale: i64,
        now: i64,
    ) {
        if self.capacity == 0 || now >= expires.min(stale) {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, entry| now < entry.expires.min(entry.stale));
            if entries.len() >= self.capacity {
                let keep = self.capacity - (self.capacity / 8).max(1);
                let surplus: Vec<[u8; 32]> = entries.keys().skip(keep).copied().collect();
                for key in surplus {
                    entries.remove(&key);
                }
            }
        }
        entries.insert(
            key,
            Entry {
                verified,
                expires,
                stale: stale.min(expires),
            },
        );
    }

    /// How many tokens are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{ClaimNames, TokenContext};

    fn verified() -> Arc<Verified> {
        let claims = json!({"sub": "a", "scope": "openid"});
        Arc::new(Verified {
            issuer: "https://as".into(),
            subject: Some("a".into()),
            expires_at: 100,
            context: TokenContext::from_claims(&claims, &ClaimNames::default()).unwrap(),
            claims,
        })
    }

    #[test]
    fn expiry_staleness_and_bounds() {
        let cache = TokenCache::new(16);
        let v = verified();
        cache.insert(TokenCache::key("t"), Arc::clone(&v), 100, i64::MAX, 10);
        assert!(
            matches!(cache.get(&TokenCache::key("t"), 99), Cached::Hit(hit) if Arc::ptr_eq(&hit, &v))
        );
        assert!(matches!(
            cache.get(&TokenCache::key("t"), 100),
            Cached::Expired
        ));
        assert!(matches!(cache.get(&TokenCache::key("u"), 10), Cached::Miss));
        cache.insert(TokenCache::key("i"), Arc::clone(&v), 100, 50, 10);
        assert!(matches!(
            cache.get(&TokenCache::key("i"), 49),
            Cached::Hit(_)
        ));
        assert!(matches!(cache.get(&TokenCache::key("i"), 50), Cached::Miss));
        for i in 0..100 {
            cache.insert(
                TokenCache::key(&i.to_string()),
                Arc::clone(&v),
                100,
                i64::MAX,
                10,
            );
            assert!(cache.len() <= 16);
        }
        // Expired entries go first.
        cache.insert(
            TokenCache::key("late"),
            Arc::clone(&v),
            1_000,
            i64::MAX,
            500,
        );
        assert_eq!(cache.len(), 1);
        // Nothing is kept without capacity.
        let none = TokenCache::new(0);
        none.insert(TokenCache::key("t"), v, 100, i64::MAX, 10);
        assert_eq!(none.len(), 0);
    }
}
