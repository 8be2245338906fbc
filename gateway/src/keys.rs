//! The gateway's keyring: the RS-HABE decryption key each caller's request is opened with,
//! enrolled on first use and re-issued when the caller's roles change (DESIGN.md, "Key life
//! cycle").
//!
//! # Identities
//!
//! A caller's keys are bound to one name in the authority's user registry ([`key_identity`]):
//!
//! 1. its `fhirUser`, as the token gives it (`Practitioner/7`, or an absolute URL);
//! 2. else, for a token that speaks for its client itself (`sub` equals `client_id`: a SMART
//!    backend service), `client:<client_id>`;
//! 3. else, a user token without `fhirUser`: `sub:<iss> <sub>`, the subject qualified by its
//!    issuer (subjects are unique per issuer only; an issuer URL holds no space). Such a token
//!    is never bound to its client id, which every user of the app shares.
//!
//! A token that yields none of these, or a name holding `#`, a control character, more than
//! [`MAX_IDENTITY_BYTES`] bytes, or a `fhirUser` starting with a reserved `client:`/`sub:`
//! prefix, gets [`KeyError::Identity`].
//!
//! # Registrations and revocation
//!
//! The authority's registry holds one leaf per name. An identity's first registration is named
//! after it (`Practitioner/7`); when its attributes change, the keyring registers the next version
//! (`Practitioner/7#2`, `Practitioner/7#3`, …) with the new attributes *first*, then revokes every
//! earlier version, so an identity's latest version is never revoked by the keyring. Hence:
//!
//! - latest version active: the identity's key (re-issued if the attributes differ);
//! - latest version revoked: an administrator revoked it ([`KeyError::Revoked`]); the keyring
//!   never re-enrols it. To re-admit the identity, an administrator registers its next version.
//!
//! An interrupted re-issue (new version registered, old one not yet revoked) is finished by the
//! next lookup, which revokes every active version but the latest.
//!
//! An identity is re-issued at most once per [`KeyringSettings::reissue_interval_seconds`]:
//! otherwise two valid tokens of one identity mapping to different attributes (an old token
//! still alive after a role change, two apps with different scopes) would re-issue on every
//! alternate request, each time spending a leaf and growing the revocation list. Within the
//! interval a token whose attributes differ from the latest registration's gets
//! [`KeyError::ReissueThrottled`] (fail closed: never the key of other attributes).
//!
//! # Caching
//!
//! Per identity the keyring remembers, for [`KeyringSettings::cache_seconds`], its registration
//! and attributes and the key of the current period; the current period is remembered as long
//! too (and never past its end). A request of a known identity with the same attributes then
//! touches no database. So an administrator's revocation made through another process (or
//! straight on the [`Authority`]) takes effect here within `cache_seconds` (the gateway's
//! `authority.registration_cache_seconds`, [`DEFAULT_CACHE_SECONDS`] by default: the revocation
//! bound across replicas); [`Keyring::forget`] makes it immediate. Authority calls are
//! synchronous database calls and run on [`tokio::task::spawn_blocking`]; concurrent first
//! requests of one identity in this process wait on one lock, and a registration lost to another
//! replica (the authority refuses a duplicate name) is re-read.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};

use fhirseal_authority::{Authority, Error as AuthorityError, Kind};
use fhirseal_fhir::Principal;
use fhirseal_policy::Policy;
use rand_core::OsRng;
use rshabe::{Attribute, DecryptionKey};

use crate::consent::log::Consents;
use crate::metrics::{Derivation, Metrics};

/// The longest identity the keyring binds keys to, in bytes (the authority allows 256 per name,
/// and a version suffix follows).
pub const MAX_IDENTITY_BYTES: usize = 240;

/// The callers' decryption keys. Cheap to clone: clones share the caches.
#[derive(Clone)]
pub struct Keyring {
    inner: Arc<Inner>,
    metrics: Metrics,
}

/// How long the keyring trusts a cached registration by default, in seconds (the gateway's
/// `authority.registration_cache_seconds`): a revocation or a period advance made through another
/// replica is honoured within it (a registration read at `t` is trusted until `t` plus this at
/// most), for about two authority reads per active identity per interval.
pub const DEFAULT_CACHE_SECONDS: u64 = 5;

/// How long the keyring trusts what it cached, and how often it re-issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyringSettings {
    /// How long an identity's registration state and the current period are trusted without
    /// asking the authority again (default [`DEFAULT_CACHE_SECONDS`]; 0: never cached).
    pub cache_seconds: u64,
    /// The least time between two issues of one identity's key (default 300 s).
    pub reissue_interval_seconds: u64,
    /// How many identities are cached (default 10 000).
    pub capacity: usize,
}

impl Default for KeyringSettings {
    fn default() -> Self {
        Self {
            cache_seconds: DEFAULT_CACHE_SECONDS,
            reissue_interval_seconds: 300,
            capacity: 10_000,
        }
    }
}

/// A caller's key, with what the keyring did to get it (for the audit line).
#[derive(Clone)]
pub struct KeyGrant {
    /// The decryption key of the current period.
    pub key: Arc<DecryptionKey>,
    /// The identity it is bound to ([`key_identity`]).
    pub identity: String,
    /// The registration in the authority (the identity, or a later version of it).
    pub registration: String,
    /// The key's period.
    pub period: u64,
    /// What this call changed in the registry, if anything.
    pub change: Option<KeyChange>,
}

/// A change the keyring made in the authority's registry.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyChange {
    /// The identity was enrolled on first use.
    Enrolled {
        /// The attributes its key holds.
        attributes: Vec<String>,
    },
    /// The identity's roles changed: a new registration was made and the old one revoked.
    Reissued {
        /// The revoked registration.
        previous: String,
        /// Attributes the new key holds and the old did not.
        added: Vec<String>,
        /// Attributes the old key held and the new does not.
        removed: Vec<String>,
    },
}

/// Why the keyring gives a caller no key. The messages are the client's (`error.rs` gives each
/// its status once: 403, 409, 503 or 500); what the authority said is the
/// [`source`](std::error::Error::source), for the log, never for the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The token names no identity a decryption key can be bound to (no `fhirUser`, not a
    /// backend service, no issuer to qualify its subject with), or one the keyring cannot hold:
    /// a `#`, a reserved `client:`/`sub:` prefix on a `fhirUser`, a control character, too long.
    #[error("this token names no identity that decryption keys can be bound to")]
    Identity,
    /// An administrator revoked this identity's keys; the keyring does not re-enrol it.
    #[error("this identity's decryption keys are revoked")]
    Revoked,
    /// The identity's key was issued or re-issued moments ago for other attributes than this
    /// token's roles give; the keyring re-issues an identity's key at most once per interval.
    #[error("this identity's key was re-issued moments ago for other roles; retry later")]
    ReissueThrottled,
    /// The policy gives an attribute the authority cannot issue (a policy and an authority
    /// that do not fit: the operator's to fix).
    #[error("the key authority could not provide a key")]
    PolicyAttribute(#[source] UnissuableAttribute),
    /// The attribute authority failed: its store is unreachable, or anything else.
    #[error("the key authority could not provide a key")]
    Authority(#[source] AuthorityError),
    /// A key task did not complete: it panicked (`panicked`) or the runtime is shutting down.
    /// (Not the task's own error: a panic's message is not for the log.)
    #[error("the key authority could not provide a key")]
    Task {
        /// Whether it panicked (else it was cancelled).
        panicked: bool,
    },
}

/// An attribute the policy gives that the authority cannot issue, and why.
#[derive(Debug, thiserror::Error)]
#[error("the policy's attribute {attribute:?} is not one the key authority can issue")]
pub struct UnissuableAttribute {
    /// The attribute, as the policy names it.
    pub attribute: String,
    /// Why the authority cannot hold it.
    #[source]
    pub source: rshabe::PolicyError,
}

/// The name the keys of the caller are bound to (see the module documentation).
///
/// # Errors
///
/// [`KeyError::Identity`] when the token names none the keyring can hold.
pub fn key_identity(principal: &Principal) -> Result<String, KeyError> {
    let identity = if let Some(user) = &principal.fhir_user {
        if RESERVED_PREFIXES.iter().any(|p| user.starts_with(p)) {
            return Err(KeyError::Identity);
        }
        user.clone()
    } else if let Some(client) = principal
        .client_id
        .as_ref()
        .filter(|c| **c == principal.subject)
    {
        format!("client:{client}")
    } else {
        let issuer = principal.claims.get("iss").and_then(|v| v.as_str());
        let Some(issuer) = issuer.filter(|i| !i.is_empty() && !i.contains(' ')) else {
            return Err(KeyError::Identity);
        };
        format!("sub:{issuer} {}", principal.subject)
    };
    let usable = !identity.trim().is_empty()
        && identity.len() <= MAX_IDENTITY_BYTES
        && !identity.contains('#')
        && !identity.chars().any(char::is_control);
    if usable {
        Ok(identity)
    } else {
        Err(KeyError::Identity)
    }
}

impl Keyring {
    /// A keyring issuing from `authority` the attributes `policy` gives, with default settings.
    pub fn new(authority: Arc<Authority>, policy: Arc<Policy>) -> Self {
        Self::with_settings(authority, policy, KeyringSettings::default())
    }

    /// A keyring with explicit settings.
    pub fn with_settings(
        authority: Arc<Authority>,
        policy: Arc<Policy>,
        settings: KeyringSettings,
    ) -> Self {
        Self {
            inner: Arc::new(Inner::new(authority, policy, settings, Arc::default())),
            metrics: Metrics::default(),
        }
    }

    /// This keyring, giving keys under the consents in force in `consents`: a practitioner some
    /// patient's consent denies gets no `consent:unrestricted` ([`Policy::attributes_in`]). The
    /// caches start empty (a key cached under other consents is never given).
    #[must_use]
    pub fn with_consents(self, consents: Arc<Consents>) -> Self {
        let inner = Inner::new(
            Arc::clone(&self.inner.authority),
            Arc::clone(&self.inner.policy),
            self.inner.settings,
            consents,
        );
        Self {
            inner: Arc::new(inner),
            metrics: self.metrics,
        }
    }

    /// This keyring, counting its cache's hits and misses and its key derivations in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The caller's decryption key for the period current at `now` (seconds since the Unix
    /// epoch); `None` when its roles give it no attribute (it sees every sealed element masked
    /// and is not enrolled). See [`Keyring::grant_for`].
    ///
    /// # Errors
    ///
    /// As [`Keyring::grant_for`].
    pub async fn key_for(
        &self,
        principal: &Principal,
        now: i64,
    ) -> Result<Option<Arc<DecryptionKey>>, KeyError> {
        Ok(self.grant_for(principal, now).await?.map(|grant| grant.key))
    }

    /// The caller's key with the identity, registration and period it belongs to and what was
    /// changed to get it: enrolment on first use, re-issue on an attribute change.
    ///
    /// # Errors
    ///
    /// [`KeyError::Identity`] (no usable identity), [`KeyError::Revoked`] (an administrator
    /// revoked it), [`KeyError::ReissueThrottled`] (re-issued too recently for other
    /// attributes), [`KeyError::PolicyAttribute`], [`KeyError::Authority`] and
    /// [`KeyError::Task`] (the authority failed).
    pub async fn grant_for(
        &self,
        principal: &Principal,
        now: i64,
    ) -> Result<Option<KeyGrant>, KeyError> {
        let view = self.inner.consents.view(None, now);
        let attributes = canonical(self.inner.policy.attributes_in(principal, &view).names())?;
        if attributes.is_empty() {
            return Ok(None);
        }
        let identity = key_identity(principal)?;
        self.grant(identity, attributes, now).await.map(Some)
    }

    /// The key of one of the gateway's own service identities ([`REINDEX_IDENTITY`]: a
    /// `service:` name, which no token maps to) holding exactly `attributes`: registered on first
    /// use and re-issued when they change, as [`Keyring::grant_for`] does for a caller, and
    /// revocable like any registration.
    ///
    /// # Errors
    ///
    /// [`KeyError::Identity`] for a name outside `service:`, and as [`Keyring::grant_for`].
    pub async fn grant_for_service(
        &self,
        identity: &str,
        attributes: &[String],
        now: i64,
    ) -> Result<KeyGrant, KeyError> {
        if !identity.starts_with(SERVICE_PREFIX) || identity.len() > MAX_IDENTITY_BYTES {
            return Err(KeyError::Identity);
        }
        let attributes = canonical(attributes.iter().map(String::as_str))?;
        self.grant(identity.to_string(), attributes, now).await
    }

    /// [`Keyring::grant_for`] once the identity and its attributes are known.
    async fn grant(
        &self,
        identity: String,
        attributes: BTreeSet<String>,
        now: i64,
    ) -> Result<KeyGrant, KeyError> {
        let period = self.period(now).await?;
        if let Some(grant) = self.cached(&identity, &attributes, period, now).await? {
            return Ok(grant);
        }
        // One lookup per identity at a time in this process: concurrent first requests wait
        // here and then find the registration the first one made.
        let _turn = self.inner.lock_for(&identity).lock().await;
        if let Some(grant) = self.cached(&identity, &attributes, period, now).await? {
            return Ok(grant);
        }
        let inner = self.inner.clone();
        let (id, attrs) = (identity.clone(), attributes.clone());
        self.metrics.key_cache(false);
        let (registration, change) =
            blocking(move || resolve(&inner.authority, &id, &attrs, &inner.settings, now)).await?;
        let key = self.derive(&identity, &registration, period).await?;
        self.inner.remember(
            &identity,
            Entry {
                registration: registration.clone(),
                attributes,
                checked_at: now,
                key: Some((period, key.clone())),
            },
        );
        Ok(KeyGrant {
            key,
            identity,
            registration,
            period,
            change,
        })
    }

    /// Re-issues now, without `consent:unrestricted`, the key of every identity whose latest
    /// registration holds `actor:<practitioner>` and that attribute (a practitioner a consent
    /// has just denied), revoking the former registration, rather than at its next request: a
    /// copy of the former key is then revoked from the next period on, whether or not the
    /// practitioner calls again. Returns the registrations revoked.
    ///
    /// # Errors
    ///
    /// [`KeyError::Authority`] and [`KeyError::Task`] (the authority failed).
    pub async fn restrict(&self, practitioner: &str, now: i64) -> Result<Vec<String>, KeyError> {
        use fhirseal_policy::consent::{ACTOR, UNRESTRICTED};
        let actor = format!("{ACTOR}{practitioner}");
        let inner = self.inner.clone();
        let revoked = blocking(move || {
            let mut revoked = Vec::new();
            let users = inner
                .authority
                .principals(Kind::User)
                .map_err(KeyError::Authority)?;
            let identities: BTreeSet<String> = users
                .iter()
                .filter(|p| p.revoked_at.is_none())
                .filter(|p| {
                    p.attributes.contains(&actor) && p.attributes.iter().any(|a| a == UNRESTRICTED)
                })
                .map(|p| identity_of(&p.name).to_string())
                .collect();
            for identity in identities {
                let versions = registrations(&inner.authority, &identity)?;
                let Some(latest) = versions.last() else {
                    continue;
                };
                let mut wanted: BTreeSet<String> = latest.attributes.iter().cloned().collect();
                if latest.revoked_at.is_some() || !wanted.remove(UNRESTRICTED) {
                    continue;
                }
                let (_, change) =
                    resolve(&inner.authority, &identity, &wanted, &inner.settings, now)?;
                if let Some(KeyChange::Reissued { previous, .. }) = change {
                    revoked.push(previous);
                }
            }
            Ok(revoked)
        })
        .await?;
        for registration in &revoked {
            self.forget(identity_of(registration));
        }
        Ok(revoked)
    }

    /// Derives, ahead of its next request, the key of `identity` for the period at `now`, with the
    /// attributes its latest registration holds: how its next request finds it when its roles
    /// have not changed (that request still checks them, and re-issues if they did). Used to
    /// warm up after a start ([`crate::warm`]). Read-only in the registry: never enrols,
    /// re-issues or revokes, so `None` (nothing cached) for an identity never enrolled, revoked,
    /// with an unfinished re-issue (its next request finishes it), or a service identity.
    ///
    /// # Errors
    ///
    /// [`KeyError::Authority`] and [`KeyError::Task`] (the authority failed).
    pub async fn warm(&self, identity: &str, now: i64) -> Result<Option<KeyGrant>, KeyError> {
        if identity.starts_with(SERVICE_PREFIX) {
            return Ok(None);
        }
        let period = self.period(now).await?;
        let _turn = self.inner.lock_for(identity).lock().await;
        let inner = self.inner.clone();
        let id = identity.to_string();
        let versions = blocking(move || registrations(&inner.authority, &id)).await?;
        let Some((latest, earlier)) = versions.split_last() else {
            return Ok(None);
        };
        if latest.revoked_at.is_some() || earlier.iter().any(|v| v.revoked_at.is_none()) {
            return Ok(None);
        }
        let attributes: BTreeSet<String> = latest.attributes.iter().cloned().collect();
        if let Some(grant) = self.cached(identity, &attributes, period, now).await? {
            return Ok(Some(grant));
        }
        let key = match self.derive(identity, &latest.name, period).await {
            Err(KeyError::Revoked) => return Ok(None),
            other => other?,
        };
        self.inner.remember(
            identity,
            Entry {
                registration: latest.name.clone(),
                attributes,
                checked_at: now,
                key: Some((period, key.clone())),
            },
        );
        Ok(Some(KeyGrant {
            key,
            identity: identity.to_string(),
            registration: latest.name.clone(),
            period,
            change: None,
        }))
    }

    /// Drops what the keyring cached about `identity` (say, right after an administrator revoked
    /// it through the authority), so that its next request asks the authority.
    pub fn forget(&self, identity: &str) {
        self.inner.entries().remove(identity);
    }

    /// Drops the cached current period (say, right after an administrator advanced it), so that
    /// the next request asks the authority.
    pub fn forget_period(&self) {
        *self.inner.period.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The cached registration for `identity` when it is fresh and holds `attributes`, with its
    /// key for `period` (derived now if it was not cached).
    async fn cached(
        &self,
        identity: &str,
        attributes: &BTreeSet<String>,
        period: u64,
        now: i64,
    ) -> Result<Option<KeyGrant>, KeyError> {
        let ttl = seconds(self.inner.settings.cache_seconds);
        let (registration, key) = {
            let entries = self.inner.entries();
            let Some(entry) = entries.get(identity) else {
                return Ok(None);
            };
            let fresh = (0..ttl).contains(&now.saturating_sub(entry.checked_at));
            if !fresh || entry.attributes != *attributes {
                return Ok(None);
            }
            let key = entry
                .key
                .as_ref()
                .filter(|(p, _)| *p == period)
                .map(|(_, k)| k.clone());
            (entry.registration.clone(), key)
        };
        self.metrics.key_cache(key.is_some());
        let key = match key {
            Some(key) => key,
            None => {
                let key = self.derive(identity, &registration, period).await?;
                if let Some(entry) = self.inner.entries().get_mut(identity)
                    && entry.registration == registration
                {
                    entry.key = Some((period, key.clone()));
                }
                key
            }
        };
        Ok(Some(KeyGrant {
            key,
            identity: identity.to_string(),
            registration,
            period,
            change: None,
        }))
    }

    /// The decryption key of `registration` for `period`; a revocation forgets the identity.
    async fn derive(
        &self,
        identity: &str,
        registration: &str,
        period: u64,
    ) -> Result<Arc<DecryptionKey>, KeyError> {
        let inner = self.inner.clone();
        let name = registration.to_string();
        let result = blocking(move || {
            inner
                .authority
                .decryption_key(&name, period, &mut OsRng)
                .map_err(|e| match e {
                    // A revoked registration's key, or one destroyed because it was revoked.
                    AuthorityError::Revoked { .. } | AuthorityError::KeyDestroyed { .. } => {
                        KeyError::Revoked
                    }
                    other => KeyError::Authority(other),
                })
        })
        .await;
        self.metrics.key_derivation(match &result {
            Ok(_) => Derivation::Derived,
            Err(KeyError::Revoked) => Derivation::Revoked,
            Err(_) => Derivation::Failed,
        });
        if result.is_err() {
            self.forget(identity);
        }
        result
    }

    /// The period at `now`, from the cache while it is fresh and the period has not ended.
    async fn period(&self, now: i64) -> Result<u64, KeyError> {
        let ttl = seconds(self.inner.settings.cache_seconds);
        if let Some(cached) = *self.inner.period.lock().unwrap_or_else(|e| e.into_inner())
            && (0..ttl).contains(&now.saturating_sub(cached.checked_at))
            && (cached.starts_at..cached.ends_at).contains(&now)
        {
            return Ok(cached.period);
        }
        let inner = self.inner.clone();
        let info = blocking(move || {
            inner
                .authority
                .period_info(now)
                .map_err(KeyError::Authority)
        })
        .await?;
        *self.inner.period.lock().unwrap_or_else(|e| e.into_inner()) = Some(PeriodEntry {
            period: info.period,
            starts_at: info.starts_at,
            ends_at: info.ends_at,
            checked_at: now,
        });
        Ok(info.period)
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("settings", &self.inner.settings)
            .field("cached_identities", &self.inner.entries().len())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for KeyGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyGrant")
            .field("identity", &self.identity)
            .field("registration", &self.registration)
            .field("period", &self.period)
            .field("change", &self.change)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for KeyChange {
    /// The sentence the audit line carries: attribute names are role and organisation names,
    /// never patient data.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Enrolled { attributes } => {
                write!(f, "enrolled on first use with {}", attributes.join(", "))
            }
            Self::Reissued {
                previous,
                added,
                removed,
            } => {
                let list = |l: &[String]| {
                    if l.is_empty() {
                        "none".to_string()
                    } else {
                        l.join(", ")
                    }
                };
                write!(
                    f,
                    "key re-issued because the roles' attributes changed (added: {}; removed: {}); \
                     registration {previous} revoked",
                    list(added),
                    list(removed)
                )
            }
        }
    }
}

// === private ===

struct Inner {
    authority: Arc<Authority>,
    policy: Arc<Policy>,
    settings: KeyringSettings,
    entries: Mutex<HashMap<String, Entry>>,
    period: Mutex<Option<PeriodEntry>>,
    locks: Vec<tokio::sync::Mutex<()>>,
    hasher: RandomState,
    /// The consents keys are given under ([`Keyring::with_consents`]; none by default).
    consents: Arc<Consents>,
}

/// What the keyring knows about one identity.
struct Entry {
    registration: String,
    attributes: BTreeSet<String>,
    checked_at: i64,
    key: Option<(u64, Arc<DecryptionKey>)>,
}

#[derive(Clone, Copy)]
struct PeriodEntry {
    period: u64,
    starts_at: i64,
    ends_at: i64,
    checked_at: i64,
}

impl Inner {
    fn new(
        authority: Arc<Authority>,
        policy: Arc<Policy>,
        settings: KeyringSettings,
        consents: Arc<Consents>,
    ) -> Self {
        Self {
            authority,
            policy,
            settings,
            entries: Mutex::new(HashMap::new()),
            period: Mutex::new(None),
            locks: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            hasher: RandomState::new(),
            consents,
        }
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_for(&self, identity: &str) -> &tokio::sync::Mutex<()> {
        // `locks` has LOCK_STRIPES > 0 elements, so the index is in range.
        let stripe = self.hasher.hash_one(identity) % LOCK_STRIPES as u64;
        &self.locks[usize::try_from(stripe).unwrap_or(0)]
    }

    /// Caches `entry`; when full, the least recently checked identity makes room.
    fn remember(&self, identity: &str, entry: Entry) {
        let mut entries = self.entries();
        if !entries.contains_key(identity) && entries.len() >= self.settings.capacity.max(1) {
            let oldest = entries
                .iter()
                .min_by_key(|(_, e)| e.checked_at)
                .map(|(name, _)| name.clone());
            if let Some(oldest) = oldest {
                entries.remove(&oldest);
            }
        }
        entries.insert(identity.to_string(), entry);
    }
}

/// Finds, makes or re-issues the registration of `identity` holding `wanted`: its name and the
/// change made. Runs on a blocking thread.
fn resolve(
    authority: &Authority,
    identity: &str,
    wanted: &BTreeSet<String>,
    settings: &KeyringSettings,
    now: i64,
) -> Result<(String, Option<KeyChange>), KeyError> {
    for _ in 0..RACE_RETRIES {
        let versions = registrations(authority, identity)?;
        let Some(latest) = versions.last() else {
            if !register(authority, identity, wanted, now)? {
                continue;
            }
            let attributes = wanted.iter().cloned().collect();
            return Ok((
                identity.to_string(),
                Some(KeyChange::Enrolled { attributes }),
            ));
        };
        if latest.revoked_at.is_some() {
            return Err(KeyError::Revoked);
        }
        let held: BTreeSet<String> = latest.attributes.iter().cloned().collect();
        let earlier = &versions[..versions.len() - 1];
        if held == *wanted {
            retire(authority, earlier, now)?;
            return Ok((latest.name.clone(), None));
        }
        // A change of `consent:unrestricted` alone follows the consents, not the caller's token
        // (it cannot alternate between two tokens): it is never throttled.
        let consent_only = held
            .symmetric_difference(wanted)
            .all(|a| a == fhirseal_policy::consent::UNRESTRICTED);
        if !consent_only
            && now.saturating_sub(latest.created_at) < seconds(settings.reissue_interval_seconds)
        {
            return Err(KeyError::ReissueThrottled);
        }
        let name = versioned(identity, versions.len() + 1);
        if !register(authority, &name, wanted, now)? {
            continue;
        }
        retire(authority, &versions, now)?;
        return Ok((
            name,
            Some(KeyChange::Reissued {
                previous: latest.name.clone(),
                added: wanted.difference(&held).cloned().collect(),
                removed: held.difference(wanted).cloned().collect(),
            }),
        ));
    }
    // Other replicas kept registering versions of this identity under our feet.
    Err(KeyError::ReissueThrottled)
}

/// Every version of `identity`'s registration, oldest first.
fn registrations(
    authority: &Authority,
    identity: &str,
) -> Result<Vec<fhirseal_authority::Principal>, KeyError> {
    registered_versions(authority, identity).map_err(KeyError::Authority)
}

/// Every version of `identity`'s registration in `authority` (`identity`, `identity#2`, …),
/// oldest first; empty when it was never enrolled. Runs synchronous database calls.
///
/// # Errors
///
/// The authority's, when its store fails.
pub fn registered_versions(
    authority: &Authority,
    identity: &str,
) -> Result<Vec<fhirseal_authority::Principal>, AuthorityError> {
    let mut versions = Vec::new();
    loop {
        let name = versioned(identity, versions.len() + 1);
        match authority.principal(Kind::User, &name) {
            Ok(p) => versions.push(p),
            Err(AuthorityError::UnknownPrincipal { .. }) => return Ok(versions),
            Err(e) => return Err(e),
        }
    }
}

/// The identity a registration name belongs to: the name without its `#n` version suffix.
pub fn identity_of(registration: &str) -> &str {
    registration
        .split_once('#')
        .map_or(registration, |(identity, _)| identity)
}

/// Registers `name` holding `attributes`; `false` when another process registered it first.
fn register(
    authority: &Authority,
    name: &str,
    attributes: &BTreeSet<String>,
    now: i64,
) -> Result<bool, KeyError> {
    let attributes: Vec<String> = attributes.iter().cloned().collect();
    match authority.add_user(name, &attributes, None, now, &mut OsRng) {
        Ok(_) => Ok(true),
        Err(AuthorityError::AlreadyRegistered { .. }) => Ok(false),
        Err(e) => Err(KeyError::Authority(e)),
    }
}

/// Revokes every still-active registration of `versions` (superseded ones).
fn retire(
    authority: &Authority,
    versions: &[fhirseal_authority::Principal],
    now: i64,
) -> Result<(), KeyError> {
    for old in versions.iter().filter(|v| v.revoked_at.is_none()) {
        match authority.revoke(Kind::User, &old.name, now) {
            Ok(_) | Err(AuthorityError::AlreadyRevoked { .. }) => {}
            Err(e) => return Err(KeyError::Authority(e)),
        }
    }
    Ok(())
}

/// The name of version `n` (from 1) of `identity`'s registration.
fn versioned(identity: &str, n: usize) -> String {
    if n <= 1 {
        identity.to_string()
    } else {
        format!("{identity}#{n}")
    }
}

/// The attribute names as the authority stores them (NFC).
fn canonical<'a>(names: impl Iterator<Item = &'a str>) -> Result<BTreeSet<String>, KeyError> {
    names
        .map(|name| {
            Attribute::new(name)
                .map(|a| a.as_str().to_string())
                .map_err(|source| {
                    KeyError::PolicyAttribute(UnissuableAttribute {
                        attribute: name.to_string(),
                        source,
                    })
                })
        })
        .collect()
}

/// Runs an authority call on a blocking thread.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, KeyError> + Send + 'static,
) -> Result<T, KeyError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| KeyError::Task {
            panicked: e.is_panic(),
        })?
}

fn seconds(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX)
}

/// `fhirUser` prefixes reserved for the other kinds of identity.
const RESERVED_PREFIXES: [&str; 3] = ["client:", "sub:", SERVICE_PREFIX];
/// The prefix of the gateway's own service identities.
const SERVICE_PREFIX: &str = "service:";
/// The identity the re-index job's key is registered under ([`crate::reindex`]).
pub const REINDEX_IDENTITY: &str = "service:reindex";
/// How many times a registration lost to another process is re-read.
const RACE_RETRIES: usize = 4;
/// How many locks serialise lookups per identity.
const LOCK_STRIPES: usize = 64;
