//! A bounded cache of per-user, per-period decryption keys. An evicted key is zeroized when the
//! last holder of it drops it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use rshabe::DecryptionKey;

pub(crate) struct KeyCache {
    capacity: usize,
    keys: HashMap<(String, u64), Arc<DecryptionKey>>,
    order: VecDeque<(String, u64)>,
}

impl KeyCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            keys: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub(crate) fn get(&self, name: &str, period: u64) -> Option<Arc<DecryptionKey>> {
        self.keys.get(&(name.to_string(), period)).cloned()
    }

    pub(crate) fn insert(&mut self, name: &str, period: u64, key: Arc<DecryptionKey>) {
        let id = (name.to_string(), period);
        if self.keys.insert(id.clone(), key).is_none() {
            self.order.push_back(id);
        }
        while self.keys.len() > self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.keys.remove(&old);
                }
                None => break,
            }
        }
    }

    /// Drops every key of `name` (after a revocation).
    pub(crate) fn forget(&mut self, name: &str) {
        self.keys.retain(|(n, _), _| n != name);
        self.order.retain(|(n, _)| n != name);
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("len", &self.keys.len())
            .finish_non_exhaustive()
    }
}
