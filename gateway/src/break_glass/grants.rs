//! How long an emergency lasts: one grant per caller identity, from its first assertion for at
//! most the policy's duration, then refused until an administrator renews it. Kept in this
//! process's memory (each replica counts apart; a restart forgets), with an injectable clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

/// Seconds since the Unix epoch, now.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The most identities whose grants are remembered at once.
pub const MAX_GRANTS: usize = 10_000;

/// One identity's grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// When it began (the first assertion), seconds since the epoch.
    pub started: i64,
    /// When it ends (ended), seconds since the epoch.
    pub ends: i64,
}

/// What an assertion finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// The grant began now.
    Began(Grant),
    /// A grant in force.
    InForce(Grant),
    /// The grant ended: refused until renewed.
    Ended(Grant),
    /// Too many grants are in force to remember one more: refused.
    Full,
}

/// Every identity's grant.
pub struct Grants {
    clock: RwLock<Clock>,
    grants: Mutex<HashMap<String, Grant>>,
}

impl std::fmt::Debug for Grants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grants")
            .field("grants", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl Default for Grants {
    fn default() -> Self {
        Self {
            clock: RwLock::new(Arc::new(fhirseal_authority::unix_now)),
            grants: Mutex::new(HashMap::new()),
        }
    }
}

impl Grants {
    /// Reads time from `clock` from now on (tests move time with it).
    pub fn set_clock(&self, clock: Clock) {
        *self.clock.write().unwrap_or_else(PoisonError::into_inner) = clock;
    }

    /// Now, by the clock.
    pub fn now(&self) -> i64 {
        (self.clock.read().unwrap_or_else(PoisonError::into_inner))()
    }

    /// The grant of `identity` at an assertion now, begun now for `max_seconds` if it has none.
    pub fn assert(&self, identity: &str, max_seconds: u64) -> Found {
        let now = self.now();
        let mut grants = self.lock();
        if let Some(grant) = grants.get(identity).copied() {
            return if now < grant.ends {
                Found::InForce(grant)
            } else {
                Found::Ended(grant)
            };
        }
        if grants.len() >= MAX_GRANTS {
            // Room is made from grants that ended long ago (twice their length): never from
            // grants in force, or from ended ones that still refuse.
            grants.retain(|_, g| now < g.ends.saturating_add(g.ends.saturating_sub(g.started)));
            if grants.len() >= MAX_GRANTS {
                return Found::Full;
            }
        }
        let grant = Grant {
            started: now,
            ends: now.saturating_add(i64::try_from(max_seconds).unwrap_or(i64::MAX)),
        };
        grants.insert(identity.to_string(), grant);
        Found::Began(grant)
    }

    /// Forgets the grant of `identity` (an administrator's renewal: its next assertion begins a
    /// new one); whether there was one.
    pub fn renew(&self, identity: &str) -> Option<Grant> {
        self.lock().remove(identity)
    }

    /// Every remembered grant, by identity.
    pub fn list(&self) -> Vec<(String, Grant)> {
        let mut list: Vec<(String, Grant)> =
            self.lock().iter().map(|(k, v)| (k.clone(), *v)).collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Grant>> {
        self.grants.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    #[test]
    fn a_grant_lasts_its_time_then_refuses_until_renewed() {
        let grants = Grants::default();
        let time = Arc::new(AtomicI64::new(1000));
        let clock = Arc::clone(&time);
        grants.set_clock(Arc::new(move || clock.load(Ordering::SeqCst)));
        let began = Grant {
            started: 1000,
            ends: 1060,
        };
        assert_eq!(grants.assert("a", 60), Found::Began(began));
        time.store(1059, Ordering::SeqCst);
        assert_eq!(grants.assert("a", 60), Found::InForce(began));
        time.store(1060, Ordering::SeqCst);
        assert_eq!(grants.assert("a", 60), Found::Ended(began));
        assert_eq!(
            grants.assert("b", 60),
            Found::Began(Grant {
                started: 1060,
                ends: 1120
            })
        );
        assert_eq!(grants.renew("a"), Some(began));
        assert!(matches!(grants.assert("a", 60), Found::Began(_)));
    }
}
