//! What the server remembers between requests: pending authorizations, codes, refresh tokens,
//! client-assertion `jti`s seen and revoked grants. In memory, each map bounded and each entry
//! with an expiry; a replica does not see another's state.
//!
//! Codes, refresh tokens, login-request tokens and browser cookies are kept as their SHA-256,
//! never as the values handed out, and looked up by that hash.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fhirseal_smart::scope::Scopes;
use rand_core::{OsRng, RngCore};
use sha2::{Digest as _, Sha256};

/// A SHA-256 digest: the key of every map here.
pub(super) type Digest = [u8; 32];

/// What a user (or a client) was granted, shared by the code, the refresh tokens and the access
/// tokens issued from one authorization.
#[derive(Clone, Debug)]
pub(super) struct Grant {
    /// Random id; access tokens carry it as the first part of their `jti`.
    pub(super) id: String,
    pub(super) client_id: String,
    /// The user's name (`None` for a backend service).
    pub(super) username: Option<String>,
    pub(super) scopes: Scopes,
    /// The patient in context (a Patient id).
    pub(super) patient: Option<String>,
}

/// An authorization request waiting for the user to sign in.
#[derive(Clone, Debug)]
pub(super) struct Pending {
    pub(super) client_id: String,
    pub(super) redirect_uri: String,
    pub(super) state: String,
    pub(super) code_challenge: String,
    pub(super) scopes: Scopes,
    pub(super) nonce: Option<String>,
    /// Whether a patient must be put in context (`launch/patient` or a `patient/` scope).
    pub(super) needs_patient: bool,
    /// SHA-256 of the browser cookie set with the login page.
    pub(super) cookie: Digest,
    /// Failed sign-in attempts so far.
    pub(super) failures: u8,
}

/// An authorization code.
#[derive(Clone, Debug)]
pub(super) struct Code {
    pub(super) grant: Grant,
    pub(super) redirect_uri: String,
    pub(super) code_challenge: String,
    pub(super) nonce: Option<String>,
    /// Set on first use; the entry stays to recognise a replay until it expires.
    pub(super) used: bool,
}

/// A refresh token.
#[derive(Clone, Debug)]
pub(super) struct Refresh {
    pub(super) grant: Grant,
    /// Set when rotated; the entry stays to recognise a replay until it expires.
    pub(super) used: bool,
}

/// A map of entries that expire, holding at most `cap` of them.
#[derive(Debug)]
pub(super) struct Bounded<T> {
    map: HashMap<Digest, (u64, T)>,
    cap: usize,
}

/// The map is full of live entries.
#[derive(Debug)]
pub(super) struct Full;

/// Everything the server remembers.
#[derive(Debug)]
pub(super) struct State {
    pub(super) pending: Bounded<Pending>,
    pub(super) codes: Bounded<Code>,
    pub(super) refresh: Bounded<Refresh>,
    /// Client-assertion `jti`s seen, keyed by SHA-256 of `client_id`, NUL, `jti`, until their `exp`.
    pub(super) jtis: Bounded<()>,
    /// Grants revoked after a code or refresh-token replay, until their access tokens expire.
    pub(super) revoked: Bounded<()>,
}

impl State {
    pub(super) fn new() -> Self {
        Self {
            pending: Bounded::new(10_000),
            codes: Bounded::new(10_000),
            refresh: Bounded::new(100_000),
            jtis: Bounded::new(100_000),
            revoked: Bounded::new(100_000),
        }
    }

    /// Revokes a grant: its refresh tokens go, and its access tokens read as inactive at
    /// introspection until `until`. If the revocation list is full of live entries the oldest
    /// entry to expire is dropped rather than this one (the refresh tokens are gone anyway).
    pub(super) fn revoke(&mut self, grant_id: &str, until: u64, now: u64) {
        self.refresh.map.retain(|_, (_, r)| r.grant.id != grant_id);
        let key = digest(grant_id.as_bytes());
        if self.revoked.insert(key, until, (), now).is_err() {
            let soonest = self
                .revoked
                .map
                .iter()
                .min_by_key(|(_, (exp, ()))| *exp)
                .map(|(k, _)| *k);
            if let Some(soonest) = soonest {
                self.revoked.map.remove(&soonest);
            }
            let _ = self.revoked.insert(key, until, (), now);
        }
    }

    pub(super) fn is_revoked(&self, grant_id: &str, now: u64) -> bool {
        self.revoked
            .get(&digest(grant_id.as_bytes()), now)
            .is_some()
    }
}

impl<T> Bounded<T> {
    fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            cap,
        }
    }

    /// Inserts (or replaces) an entry alive until `expires` (unix seconds). When the map is full,
    /// expired entries are dropped first; if it is still full, the insertion is refused.
    pub(super) fn insert(
        &mut self,
        key: Digest,
        expires: u64,
        value: T,
        now: u64,
    ) -> Result<(), Full> {
        if self.map.len() >= self.cap && !self.map.contains_key(&key) {
            self.map.retain(|_, (exp, _)| *exp > now);
            if self.map.len() >= self.cap {
                return Err(Full);
            }
        }
        self.map.insert(key, (expires, value));
        Ok(())
    }

    /// The live entry under `key`.
    pub(super) fn get(&self, key: &Digest, now: u64) -> Option<&T> {
        self.map
            .get(key)
            .filter(|(exp, _)| *exp > now)
            .map(|(_, value)| value)
    }

    /// The live entry under `key`, to change.
    pub(super) fn get_mut(&mut self, key: &Digest, now: u64) -> Option<&mut T> {
        self.map
            .get_mut(key)
            .filter(|(exp, _)| *exp > now)
            .map(|(_, value)| value)
    }

    /// Removes the entry under `key`, live or not; the value if it was live.
    pub(super) fn remove(&mut self, key: &Digest, now: u64) -> Option<T> {
        self.map
            .remove(key)
            .filter(|(exp, _)| *exp > now)
            .map(|(_, value)| value)
    }
}

/// SHA-256.
pub(super) fn digest(bytes: &[u8]) -> Digest {
    Sha256::digest(bytes).into()
}

/// 256 random bits from the OS, base64url: codes, refresh tokens, login-request tokens, cookies.
pub(super) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// 128 random bits from the OS, base64url: grant ids and the random part of `jti`s.
pub(super) fn random_id() -> String {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Unix time in seconds (0 if the clock is before 1970).
pub(super) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
