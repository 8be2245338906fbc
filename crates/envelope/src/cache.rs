//! A cache of opened header keys, per key holder, bounded in size and age.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rshabe::DecryptionKey;

use crate::Error;
use crate::header::{Header, HeaderId, HeaderKey};
use crate::sealing::SealingKey;

/// Opened header keys, keyed by (key holder, header). Entries expire after `ttl` and the oldest
/// are evicted past `capacity`; an evicted key is zeroized when dropped. After a holder is
/// revoked, [`HeaderCache::forget_holder`] drops everything it had opened.
///
/// It also remembers the headers a holder's key of one period could not open
/// ([`HeaderCache::insert_unopenable`]), so that an element its reader may not see is masked
/// without trying attribute-based decryption again on every read. That answer holds only for
/// the same key period: a header's structure never changes and its period only moves forward,
/// so what a key of period `p` did not open it never will; a holder whose attributes change is
/// registered under another name (another holder here).
pub struct HeaderCache {
    capacity: usize,
    ttl: Duration,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    keys: HashMap<(String, HeaderId), (Slot, Instant)>,
    order: VecDeque<(String, HeaderId)>,
}

/// What a holder got from a header.
enum Slot {
    /// Its key.
    Opened(HeaderKey),
    /// Nothing, with its key of this period.
    Unopenable { key_period: u64 },
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
        self.slot(holder, header, now, |slot| match slot {
            Slot::Opened(key) => Some(key.clone()),
            Slot::Unopenable { .. } => None,
        })
        .flatten()
    }

    /// Whether a reader `holder` with its key of `key_period` needs no attribute-based
    /// decryption for `header` at `now`: its key is cached, or that key was found unable to open
    /// it. One look, nothing cloned: for deciding whether opening is quick.
    pub fn knows(&self, holder: &str, header: HeaderId, key_period: u64, now: Instant) -> bool {
        self.slot(holder, header, now, |slot| match slot {
            Slot::Opened(_) => true,
            Slot::Unopenable { key_period: p } => *p == key_period,
        })
        .unwrap_or(false)
    }

    /// Whether `holder`'s key of `key_period` was found unable to open `header`, younger than
    /// the ttl at `now` ([`HeaderCache::insert_unopenable`]).
    pub fn is_unopenable(
        &self,
        holder: &str,
        header: HeaderId,
        key_period: u64,
        now: Instant,
    ) -> bool {
        self.slot(
            holder,
            header,
            now,
            |slot| matches!(slot, Slot::Unopenable { key_period: p } if *p == key_period),
        )
        .unwrap_or(false)
    }

    /// Caches the key `holder` opened for `header` at `now`.
    pub fn insert(&self, holder: &str, header: HeaderId, key: HeaderKey, now: Instant) {
        self.put(holder, header, Slot::Opened(key), now);
    }

    /// Remembers that `holder`'s key of `key_period` does not open `header` (its attributes do
    /// not satisfy the structure, or the header is of a later period), at `now`. A key `holder`
    /// opened for it before is replaced.
    pub fn insert_unopenable(&self, holder: &str, header: HeaderId, key_period: u64, now: Instant) {
        self.put(holder, header, Slot::Unopenable { key_period }, now);
    }

    /// Opens `header` with `holder`'s `key` ([`Header::open`]) and remembers what came of it:
    /// its key ([`HeaderCache::insert`]), or, when the key does not satisfy its structure or is
    /// of an earlier period ([`Error::Scheme`]), that this key does not open it
    /// ([`HeaderCache::insert_unopenable`]; the type docs say why that stays true). A header
    /// that does not verify is not remembered. The cache is not asked first: callers do.
    ///
    /// # Errors
    /// [`Header::open`]'s.
    pub fn open_header(
        &self,
        holder: &str,
        header: &Header,
        key: &DecryptionKey,
        sealing: &SealingKey,
        now: Instant,
    ) -> Result<HeaderKey, Error> {
        let opened = header.open(key, sealing);
        match &opened {
            Ok(header_key) => self.insert(holder, header.id(), header_key.clone(), now),
            Err(Error::Scheme(_)) => self.insert_unopenable(holder, header.id(), key.period(), now),
            Err(_) => {}
        }
        opened
    }

    /// `read` of the live slot of (`holder`, `header`), if any; an expired one is dropped.
    fn slot<T>(
        &self,
        holder: &str,
        header: HeaderId,
        now: Instant,
        read: impl FnOnce(&Slot) -> T,
    ) -> Option<T> {
        let mut inner = self.lock();
        let id = (holder.to_string(), header);
        match inner.keys.get(&id) {
            Some((slot, at)) if now.saturating_duration_since(*at) < self.ttl => Some(read(slot)),
            Some(_) => {
                inner.keys.remove(&id);
                inner.order.retain(|k| k != &id);
                None
            }
            None => None,
        }
    }

    fn put(&self, holder: &str, header: HeaderId, slot: Slot, now: Instant) {
        let mut inner = self.lock();
        let id = (holder.to_string(), header);
        if inner.keys.insert(id.clone(), (slot, now)).is_none() {
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

    /// How many entries are cached (keys, and headers found unopenable).
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
