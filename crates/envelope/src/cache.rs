//! A cache of opened header keys, per key holder, bounded in size and age.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::header::{HeaderId, HeaderKey};

/// Opened header keys, keyed by (key holder, header). Entries expire after `ttl` and the oldest
/// are evicted past `capacity`; an evicted key is zeroized when dropped. After a holder is
/// revoked, [`HeaderCache::forget_holder`] drops everything it had opened.
pub struct HeaderCache {
    capacity: usize,
    ttl: Duration,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    keys: HashMap<(String, HeaderId), (HeaderKey, Instant)>,
    order: VecDeque<(String, HeaderId)>,
}

impl HeaderCache {
    /// A cache of at most `capacity` keys, each kept at most `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            capacity: capacity.max(1),
            ttl,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The key `holder` opened for `header`, if cached and younger than the ttl at `now`.
    pub fn get(&self, holder: &str, header: HeaderId, now: Instant) -> Option<HeaderKey> {
        let mut inner = self.lock();
        let id = (holder.to_string(), header);
        match inner.keys.get(&id) {
            Some((key, at)) if now.saturating_duration_since(*at) < self.ttl => Some(key.clone()),
            Some(_) => {
                inner.keys.remove(&id);
                inner.order.retain(|k| k != &id);
                None
            }
            None => None,
        }
    }

    /// Caches the key `holder` opened for `header` at `now`.
    pub fn insert(&self, holder: &str, header: HeaderId, key: HeaderKey, now: Instant) {
        let mut inner = self.lock();
        let id = (holder.to_string(), header);
        if inner.keys.insert(id.clone(), (key, now)).is_none() {
            inner.order.push_back(id);
        }
        while inner.keys.len() > self.capacity {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            inner.keys.remove(&oldest);
        }
    }

    /// Drops every key `holder` opened (after its revocation or an attribute change).
    pub fn forget_holder(&self, holder: &str) {
        let mut inner = self.lock();
        inner.keys.retain(|(h, _), _| h != holder);
        inner.order.retain(|(h, _)| h != holder);
    }

    /// How many keys are cached.
    pub fn len(&self) -> usize {
        self.lock().keys.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for HeaderCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderCache")
            .field("capacity", &self.capacity)
            .field("ttl", &self.ttl)
            .field("len", &self.len())
            .finish()
    }
}
