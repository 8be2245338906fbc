//! The authority itself: issuance, delegation, revocation, periods and key updates.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use rand_core::{CryptoRng, RngCore};
use rshabe::{
    Attribute, DecryptionKey, KeyUpdate, MasterSecret, Params, PublicParams, RevocationList,
    SecretKey,
};
use zeroize::Zeroizing;

use crate::cache::KeyCache;
use crate::jobs::{Chunk, JobId, Progress};
use crate::periods::Periods;
use crate::store::{
    KEY_LAYOUT, KeyMigration, KeyReissue, Kind, MasterRecord, NewPrincipal, Principal,
    RETIRED_KEY_LAYOUT, Store,
};
use crate::{Error, Kek};

/// What `init` creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitOptions {
    /// Tree depths (default: 2^20 users, 2^10 periods). Every key holds an independent key for
    /// each of the `user_depth + 1` nodes of its path: its size and the time to issue it grow
    /// with the depth, decryption does not (`docs/authority-keys.md`).
    pub params: Params,
    /// Length of a period in seconds (default: a day).
    pub period_seconds: u64,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            params: Params::DEFAULT,
            period_seconds: 86_400,
        }
    }
}

/// Where the current period stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeriodInfo {
    /// The current period.
    pub period: u64,
    /// Unix time at which it started.
    pub starts_at: i64,
    /// Unix time at which the next one starts.
    pub ends_at: i64,
    /// The last period the time tree holds.
    pub last: u64,
    /// Length of a period in seconds.
    pub seconds: u64,
    /// When the period was last advanced by hand (unix time), if it was since this was
    /// recorded.
    pub advanced_at: Option<i64>,
}

impl PeriodInfo {
    /// How many periods are left after the current one.
    pub fn periods_left(&self) -> u64 {
        self.last.saturating_sub(self.period)
    }
}

/// The attribute authority. Cheap to share behind an `Arc`: every method takes `&self`.
pub struct Authority {
    store: Mutex<Box<dyn Store>>,
    kek: Kek,
    pp: PublicParams,
    master: MasterRecord,
    periods: Periods,
    keys: Mutex<KeyCache>,
    updates: Mutex<Option<(u64, u64, Arc<KeyUpdate>)>>,
}

/// How many decryption keys the cache holds (one per user per period; about 4 KiB each plus
/// line tables once used).
const KEY_CACHE: usize = 4096;
/// Sealed-record names (associated data).
const MASTER_RECORD: &str = "master secret";

impl Authority {
    /// Creates a new authority in `store`, sealing a fresh master secret under `kek`. Period 0
    /// starts at `now`. Refuses a store that already holds one.
    pub fn init(
        mut store: Box<dyn Store>,
        kek: Kek,
        options: InitOptions,
        now: i64,
        rng: &mut (impl CryptoRng + RngCore),
    ) -> Result<Self, Error> {
        if options.period_seconds == 0 {
            return Err(Error::Invalid(
                "the period length must be at least one second".into(),
            ));
        }
        if store.master()?.is_some() {
            return Err(Error::AlreadyInitialised {
                location: store.location().to_string(),
            });
        }
        let (pp, msk) = rshabe::setup(options.params, rng);
        let record = MasterRecord {
            user_depth: options.params.user_depth(),
            time_depth: options.params.time_depth(),
            period_seconds: options.period_seconds,
            epoch: now,
            public_params: pp.to_bytes(),
            sealed_secret: kek.seal(MASTER_RECORD, &msk.to_bytes(), rng),
        };
        store.create_master(&record)?;
        Self::open(store, kek)
    }

    /// Opens the authority in `store`; checks that `kek` opens its master secret. An authority
    /// whose keys are in the retired layout is refused with [`Error::RetiredKeyLayout`] (see
    /// [`Authority::migrate_keys`]).
    pub fn open(mut store: Box<dyn Store>, kek: Kek) -> Result<Self, Error> {
        let master = master_record(&mut *store)?;
        match store.key_layout()? {
            Some(KEY_LAYOUT) => {}
            Some(found) if found > KEY_LAYOUT => {
                return Err(Error::Corrupt {
                    what: "key layout".into(),
                    reason: format!("layout {found} is newer than this build's ({KEY_LAYOUT})"),
                });
            }
            found => {
                return Err(Error::RetiredKeyLayout {
                    location: store.location().to_string(),
                    found: found.unwrap_or(RETIRED_KEY_LAYOUT),
                });
            }
        }
        Self::load(store, master, kek)
    }

    /// Re-issues every key of the authority in `store` under the current layout ([`KEY_LAYOUT`]:
    /// an independent key per node of the user's path, shared/crypto/RS-HABE.md §4 as corrected
    /// on 2026-12-02), then opens it. `None` with the authority when its keys are in that layout
    /// already: nothing is done, so the migration may be run again safely.
    ///
    /// In one transaction that excludes other registry writers (a crash at any point leaves the
    /// store as it was, and running it again starts over):
    ///
    /// 1. the master secret gets fresh node secrets (same `α`: the public parameters and every
    ///    stored ciphertext stay valid; [`MasterSecret::with_new_node_secrets`]), so no key issued
    ///    before combines with a key update made after;
    /// 2. every active user and sub-authority gets a new key at the same leaf with the same
    ///    attributes; the key of every revoked one is destroyed, not re-issued (a revoked
    ///    principal gets no key from then on: [`Error::KeyDestroyed`]);
    /// 3. every stored key update is deleted (they were made with the old node secrets);
    /// 4. the period advances by one, so that the ciphertext-update job moves every stored header
    ///    past any decryption key derived before;
    /// 5. the ciphertext-update job towards the new period is started with `job_chunks` as its
    ///    first chunks (the gateway passes its planning marker; with none, no job is started and
    ///    the next planner starts it);
    /// 6. the keys are marked [`KEY_LAYOUT`], and the authority opens again.
    ///
    /// Every process using the authority must be stopped first: one that still holds the old
    /// master secret in memory would go on issuing keys and key updates with it.
    pub fn migrate_keys(
        mut store: Box<dyn Store>,
        kek: Kek,
        now: i64,
        job_chunks: &[String],
        rng: &mut (impl CryptoRng + RngCore),
    ) -> Result<(Self, Option<KeyMigration>), Error> {
        let master = master_record(&mut *store)?;
        if store.key_layout()? == Some(KEY_LAYOUT) {
            return Ok((Self::open(store, kek)?, None));
        }
        let authority = Self::load(store, master, kek)?;
        let migrated = authority.reissue_keys(now, job_chunks, rng)?;
        let Self { store, kek, .. } = authority;
        let store = store.into_inner().unwrap_or_else(|e| e.into_inner());
        Ok((Self::open(store, kek)?, migrated))
    }

    /// The steps of [`Authority::migrate_keys`] on an authority loaded without its layout check.
    fn reissue_keys(
        &self,
        now: i64,
        job_chunks: &[String],
        rng: &mut (impl CryptoRng + RngCore),
    ) -> Result<Option<KeyMigration>, Error> {
        let current = self.current_period(now)?;
        if current >= self.periods.last {
            return Err(Error::PeriodsExhausted {
                period: current + 1,
                last: self.periods.last,
            });
        }
        let msk = self.master_secret()?.with_new_node_secrets(rng);
        let sealed_secret = self.kek.seal(MASTER_RECORD, &msk.to_bytes(), rng);
        let mut reissue = |p: &Principal| -> Result<Option<Vec<u8>>, Error> {
            if p.revoked_at.is_some() {
                return Ok(None);
            }
            let attributes: Vec<Attribute> =
                canonical_attributes(&p.attributes)?.into_iter().collect();
            let key = rshabe::keygen(&self.pp, &msk, p.leaf, &attributes, rng)?;
            let record = sealed_key_name(p.kind, &p.name);
            Ok(Some(self.kek.seal(&record, &key.to_bytes(), rng)))
        };
        let period_at = |offset| self.periods.at(now, offset);
        self.store().reissue_keys(KeyReissue {
            sealed_secret: &sealed_secret,
            reissue: &mut reissue,
            period_at: &period_at,
            job_chunks,
            now,
        })
    }

    /// Opens an authority from its master record, whatever the layout of its keys.
    fn load(store: Box<dyn Store>, master: MasterRecord, kek: Kek) -> Result<Self, Error> {
        let pp = PublicParams::from_bytes(&master.public_params).map_err(|e| Error::Corrupt {
            what: "public parameters".into(),
            reason: e.to_string(),
        })?;
        let params = Params::new(master.user_depth, master.time_depth)?;
        if pp.params() != params {
            return Err(Error::Corrupt {
                what: "master record".into(),
                reason: "tree depths disagree with the public parameters".into(),
            });
        }
        let authority = Self {
            store: Mutex::new(store),
            kek,
            periods: Periods {
                epoch: master.epoch,
                seconds: master.period_seconds,
                last: params.periods() - 1,
            },
            pp,
            master,
            keys: Mutex::new(KeyCache::new(KEY_CACHE)),
            updates: Mutex::new(None),
        };
        let msk = authority.master_secret()?;
        if msk.params() != params {
            return Err(Error::Corrupt {
                what: "master secret".into(),
                reason: "tree depths disagree with the public parameters".into(),
            });
        }
        Ok(authority)
    }

    /// The public parameters.
    pub fn public_params(&self) -> &PublicParams {
        &self.pp
    }

    /// The tree parameters.
    pub fn params(&self) -> Params {
        self.pp.params()
    }

    /// Where the state lives (a path, or a URL without password).
    pub fn location(&self) -> String {
        self.store().location().to_string()
    }

    // === periods ===

    /// The period at unix time `now`.
    pub fn current_period(&self, now: i64) -> Result<u64, Error> {
        let offset = self.store().counters()?.period_offset;
        self.periods.at(now, offset)
    }

    /// [`Authority::current_period`] when it cannot wait, for callers on an async thread: the
    /// store answers reads without waiting ([`Store::reads_without_waiting`]) and no other call
    /// holds it now. `None` otherwise: then ask [`Authority::current_period`] off the async
    /// threads. Like it, this reads the period offset from the store each time and never from a
    /// copy: a revocation may have moved it a moment ago, and whatever is sealed after that must
    /// be sealed for the new period.
    pub fn try_current_period(&self, now: i64) -> Option<Result<u64, Error>> {
        let mut store = match self.store.try_lock() {
            Ok(store) => store,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        if !store.reads_without_waiting() {
            return None;
        }
        let offset = match store.counters() {
            Ok(counters) => counters.period_offset,
            Err(e) => return Some(Err(e)),
        };
        Some(self.periods.at(now, offset))
    }

    /// The current period, when it started and ends, and the last period there is.
    pub fn period_info(&self, now: i64) -> Result<PeriodInfo, Error> {
        let counters = self.store().counters()?;
        let offset = counters.period_offset;
        let period = self.periods.at(now, offset)?;
        let starts_at = self.periods.start(period, offset).max(self.master.epoch);
        Ok(PeriodInfo {
            period,
            starts_at,
            ends_at: self.periods.start(period + 1, offset),
            last: self.periods.last,
            seconds: self.periods.seconds,
            advanced_at: counters.period_advanced_at,
        })
    }

    /// Moves to the next period now (for instance right after a revocation, so that it takes
    /// full effect without waiting for the clock). Returns the new current period.
    pub fn advance_period(&self, now: i64) -> Result<u64, Error> {
        self.advance(now, None)
    }

    /// Like [`Authority::advance_period`], unless the period was advanced by hand less than a
    /// period length before `now`: then [`Error::AdvancedRecently`] and nothing changes. The
    /// check and the advance are one transaction, so of several processes sharing the store
    /// one advances. Advances paced so leave the time tree at least half its length in time.
    pub fn advance_period_unless_recent(&self, now: i64) -> Result<u64, Error> {
        let seconds = i64::try_from(self.periods.seconds).unwrap_or(i64::MAX);
        self.advance(now, Some(now.saturating_sub(seconds)))
    }

    fn advance(&self, now: i64, not_after: Option<i64>) -> Result<u64, Error> {
        let current = self.current_period(now)?;
        if current >= self.periods.last {
            return Err(Error::PeriodsExhausted {
                period: current + 1,
                last: self.periods.last,
            });
        }
        let offset = self.store().advance_period(now, not_after)?;
        self.periods.at(now, offset)
    }

    // === registry ===

    /// Registers a user and issues its key: a fresh leaf and `attributes`, within those of
    /// `authority` when given (a sub-authority), or any attributes under the root authority.
    pub fn add_user(
        &self,
        identity: &str,
        attributes: &[String],
        authority: Option<&str>,
        now: i64,
        rng: &mut (impl CryptoRng + RngCore),
    ) -> Result<Principal, Error> {
        self.register(Kind::User, identity, attributes, authority, now, rng)
    }

    /// Registers a sub-authority under `parent` (the root when `None`) holding `attributes`,
    /// which must lie within the parent's. Users issued under it get keys within those
    /// attributes only; revoking it revokes everything below it.
    ///
    /// Each sub-authority and each user gets a leaf of its own and a key from the master secret.
    /// RS-HABE's `Delegate` would make the delegatee share the delegator's leaf, so a delegatee
    /// could not be revoked alone (shared/crypto/RS-HABE.md, Delegate); the sub-authority's key
    /// ([`Authority::secret_key`]) can still delegate further with [`rshabe::delegate`] offline.
    pub fn delegate(
        &self,
        name: &str,
        parent: Option<&str>,
        attributes: &[String],
        now: i64,
        rng: &mut (impl CryptoRng + RngCore),
    ) -> Result<Principal, Error> {
        self.register(Kind::Authority, name, attributes, parent, now, rng)
    }

    fn register(
        &self,
        kind: Kind,
        name: &str,
        attributes: &[String],
        issuer: Option<&str>,
        now: i64,
        rng: &mut (impl CryptoRng + RngCore),
    ) -> Result<Principal, Error> {
        let name = checked_name(name)?;
        let attributes: Vec<Attribute> = canonical_attributes(attributes)?.into_iter().collect();
        let names: Vec<String> = attributes.iter().map(|a| a.as_str().to_string()).collect();
        let msk = self.master_secret()?;
        let record = sealed_key_name(kind, name);
        let mut store = self.store();
        store.insert_principal(
            kind,
            name,
            issuer,
            self.params().users(),
            &mut |leaf, parent| {
                // The issuer as it is inside the registry transaction, not as it was before it.
                if let Some(parent) = parent {
                    check_issuer(parent, &names)?;
                }
                let key = rshabe::keygen(&self.pp, &msk, leaf, &attributes, rng)?;
                Ok(NewPrincipal {
                    attributes: names.clone(),
                    parent: parent.map(|p| p.name.clone()),
                    sealed_key: self.kek.seal(&record, &key.to_bytes(), rng),
                    created_at: now,
                })
            },
        )
    }

    /// One registered principal.
    pub fn principal(&self, kind: Kind, name: &str) -> Result<Principal, Error> {
        self.store()
            .principal(kind, name)?
            .ok_or_else(|| Error::UnknownPrincipal {
                kind: kind.as_str(),
                name: name.to_string(),
            })
    }

    /// Every registered principal of a kind, by leaf.
    pub fn principals(&self, kind: Kind) -> Result<Vec<Principal>, Error> {
        self.store().principals(kind)
    }

    /// A principal's long-term secret key, unsealed; [`Error::KeyDestroyed`] for one revoked when
    /// the keys were re-issued.
    pub fn secret_key(&self, kind: Kind, name: &str) -> Result<SecretKey, Error> {
        let p = self.principal(kind, name)?;
        if p.sealed_key.is_empty() {
            return Err(Error::KeyDestroyed {
                kind: kind.as_str(),
                name: name.to_string(),
            });
        }
        let bytes = self.kek.open(&sealed_key_name(kind, name), &p.sealed_key)?;
        Ok(SecretKey::from_bytes(&bytes)?)
    }

    /// Revokes a user or a sub-authority from the current period on; a sub-authority's whole
    /// subtree (its users and sub-authorities, recursively) is revoked with it. Returns what was
    /// revoked. A revocation takes effect in every key update from now on; a decryption key
    /// already derived for the current period stays usable until the period ends (advance the
    /// period for immediate effect).
    pub fn revoke(&self, kind: Kind, name: &str, now: i64) -> Result<Vec<(Kind, String)>, Error> {
        let period = self.current_period(now)?;
        let targets = self.store().revoke_subtree(kind, name, period)?;
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        for (_, n) in &targets {
            keys.forget(n);
        }
        Ok(targets)
    }

    // === keys ===

    /// The key update of `period` for the current revocation list: reused when stored for the
    /// same list, otherwise made and stored.
    pub fn key_update(
        &self,
        period: u64,
        rng: &mut (impl CryptoRng + RngCore),
    ) -> Result<Arc<KeyUpdate>, Error> {
        let version = self.store().counters()?.revocation_version;
        {
            let cached = self.updates.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((p, v, ku)) = cached.as_ref()
                && *p == period
                && *v == version
            {
                return Ok(ku.clone());
            }
        }
        let stored = self.store().key_update(period)?;
        let ku = match stored {
            Some((v, bytes)) if v == version => {
                KeyUpdate::from_bytes(&bytes).map_err(|e| Error::Corrupt {
                    what: format!("key update of period {period}"),
                    reason: e.to_string(),
                })?
            }
            _ => {
                let mut rl = RevocationList::new();
                for (leaf, since) in self.store().revoked_leaves()? {
                    rl.revoke(self.params(), leaf, since)?;
                }
                let msk = self.master_secret()?;
                let ku = rshabe::key_update(&self.pp, &msk, period, &rl, rng)?;
                self.store()
                    .put_key_update(period, version, &ku.to_bytes())?;
                ku
            }
        };
        let ku = Arc::new(ku);
        *self.updates.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((period, version, ku.clone()));
        Ok(ku)
    }

    /// The decryption key of user `identity` for `period`, derived on first use and cached
    /// (bounded; an evicted key is zeroized once no request holds it).
    pub fn decryption_key(
        &self,
        identity: &str,
        period: u64,
        rng: &mut (impl CryptoRng + RngCore),
    ) -> Result<Arc<DecryptionKey>, Error> {
        if let Some(dk) = self
            .keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(identity, period)
        {
            return Ok(dk);
        }
        let user = self.principal(Kind::User, identity)?;
        if let Some(since) = user.revoked_at.filter(|&since| since <= period) {
            return Err(Error::Revoked {
                name: identity.to_string(),
                period,
                since,
            });
        }
        let key = self.secret_key(Kind::User, identity)?;
        let ku = self.key_update(period, rng)?;
        let dk = match rshabe::decrypt_key(&self.pp, &key, &ku, rng) {
            Err(rshabe::Error::Revoked) => {
                return Err(Error::Revoked {
                    name: identity.to_string(),
                    period,
                    since: user.revoked_at.unwrap_or(period),
                });
            }
            other => Arc::new(other?),
        };
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(identity, period, dk.clone());
        Ok(dk)
    }

    // === named secrets ===

    /// The named secret `name` (for instance `smart/signing-key/rs256`), unsealed: the stored one
    /// if there is one, otherwise the value `create` makes, sealed under the key-encryption key
    /// and stored. When several processes sharing the database create it at once, the first
    /// stored value wins and every caller gets that one (the others' values are dropped).
    ///
    /// Each secret is sealed as the record `secret <name>`, so one secret cannot be passed off as
    /// another, as the master secret or as a user key. A stored secret that does not open with
    /// this key-encryption key is [`Error::Unseal`], never replaced.
    pub fn secret_or_create(
        &self,
        name: &str,
        create: impl FnOnce() -> Result<Zeroizing<Vec<u8>>, Error>,
        rng: &mut (impl CryptoRng + RngCore),
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        let name = checked_secret_name(name)?;
        let record = sealed_secret_name(name);
        // The store lock is not held while `create` runs (it may generate a key for a while).
        let stored = self.store().secret(name)?;
        if let Some(sealed) = stored {
            return self.kek.open(&record, &sealed);
        }
        let value = create()?;
        let sealed = self.kek.seal(&record, &value, rng);
        let stored = self.store().insert_secret_if_absent(name, &sealed)?;
        if stored == sealed {
            return Ok(value);
        }
        // Another process stored its value first: use that one.
        self.kek.open(&record, &stored)
    }

    /// The named secret `name`, unsealed, if one is stored; never made. A stored secret that
    /// does not open with this key-encryption key is [`Error::Unseal`].
    pub fn secret(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
        let name = checked_secret_name(name)?;
        let stored = self.store().secret(name)?;
        stored
            .map(|sealed| self.kek.open(&sealed_secret_name(name), &sealed))
            .transpose()
    }

    /// The ciphertext-update job moving headers to `target_period`: the existing one, or a new
    /// one started at `now` (see [`Store::start_update_job`]). [`Error::PeriodsExhausted`] for a
    /// period past the time tree.
    pub fn start_update_job(&self, target_period: u64, now: i64) -> Result<JobId, Error> {
        if target_period > self.periods.last {
            return Err(Error::PeriodsExhausted {
                period: target_period,
                last: self.periods.last,
            });
        }
        self.store().start_update_job(target_period, now)
    }

    /// Adds chunks to a job; how many were new (see [`Store::add_chunks`]).
    pub fn add_update_chunks(&self, job: JobId, keys: &[String]) -> Result<u64, Error> {
        self.store().add_chunks(job, keys)
    }

    /// Claims one chunk of a job for `worker` under a lease (see [`Store::claim_chunk`]).
    pub fn claim_update_chunk(
        &self,
        job: JobId,
        worker: &str,
        now: i64,
        lease_seconds: u64,
    ) -> Result<Option<Chunk>, Error> {
        self.store().claim_chunk(job, worker, now, lease_seconds)
    }

    /// Records a chunk `worker` holds as done, with the headers it moved (see
    /// [`Store::complete_chunk`]); [`Error::LeaseLost`] if it no longer holds it.
    pub fn complete_update_chunk(
        &self,
        job: JobId,
        key: &str,
        worker: &str,
        moved: u64,
    ) -> Result<(), Error> {
        self.store().complete_chunk(job, key, worker, moved)
    }

    /// Puts a chunk `worker` holds back to pending after a failure (see
    /// [`Store::release_chunk`]).
    pub fn release_update_chunk(&self, job: JobId, key: &str, worker: &str) -> Result<(), Error> {
        self.store().release_chunk(job, key, worker)
    }

    /// Extends the lease `worker` holds on a chunk (see [`Store::renew_lease`]).
    pub fn renew_update_lease(
        &self,
        job: JobId,
        key: &str,
        worker: &str,
        now: i64,
        lease_seconds: u64,
    ) -> Result<(), Error> {
        self.store()
            .renew_lease(job, key, worker, now, lease_seconds)
    }

    /// Where a job stands (see [`Store::job_progress`]).
    pub fn update_job_progress(&self, job: JobId) -> Result<Progress, Error> {
        self.store().job_progress(job)
    }

    /// Marks a job finished if all its chunks are done; whether it is finished (see
    /// [`Store::finish_job_if_done`]).
    pub fn finish_update_job_if_done(&self, job: JobId, now: i64) -> Result<bool, Error> {
        self.store().finish_job_if_done(job, now)
    }

    /// The most recently started ciphertext-update job and where it stands, for the admin API.
    pub fn latest_update_job(&self) -> Result<Option<(JobId, Progress)>, Error> {
        self.store().latest_update_job()
    }

    /// Takes the lease `key` for `holder` for `lease_seconds` from `now`; whether `holder` has it
    /// (see [`Store::take_lease`] and [`crate::leases`]).
    pub fn take_lease(
        &self,
        key: &str,
        holder: &str,
        now: i64,
        lease_seconds: u64,
    ) -> Result<bool, Error> {
        self.store().take_lease(key, holder, now, lease_seconds)
    }

    /// Lets the lease `key` go if `holder` has it (see [`Store::release_lease`]).
    pub fn release_lease(&self, key: &str, holder: &str, now: i64) -> Result<(), Error> {
        self.store().release_lease(key, holder, now)
    }

    /// How many decryption keys are cached.
    pub fn cached_keys(&self) -> usize {
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn master_secret(&self) -> Result<MasterSecret, Error> {
        let bytes = self.kek.open(MASTER_RECORD, &self.master.sealed_secret)?;
        MasterSecret::from_bytes(&bytes).map_err(|e| Error::Corrupt {
            what: "master secret".into(),
            reason: e.to_string(),
        })
    }

    fn store(&self) -> MutexGuard<'_, Box<dyn Store>> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("params", &self.pp.params())
            .finish_non_exhaustive()
    }
}

/// The master record of `store`, or [`Error::NotInitialised`].
fn master_record(store: &mut dyn Store) -> Result<MasterRecord, Error> {
    store.master()?.ok_or_else(|| Error::NotInitialised {
        location: store.location().to_string(),
    })
}

fn sealed_secret_name(name: &str) -> String {
    format!("secret {name}")
}

fn checked_secret_name(name: &str) -> Result<&str, Error> {
    if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(Error::Invalid(format!(
            "{name:?} is not a valid secret name: 1 to 256 bytes, no control characters"
        )));
    }
    Ok(name)
}

fn sealed_key_name(kind: Kind, name: &str) -> String {
    format!("{} key {name}", kind.as_str())
}

/// A sub-authority may issue only while active, and only attributes it holds.
fn check_issuer(issuer: &Principal, attributes: &[String]) -> Result<(), Error> {
    if issuer.revoked_at.is_some() {
        return Err(Error::AuthorityRevoked(issuer.name.clone()));
    }
    if let Some(outside) = attributes.iter().find(|a| !issuer.attributes.contains(a)) {
        return Err(Error::OutsideDelegation {
            authority: issuer.name.clone(),
            attribute: outside.clone(),
            held: issuer.attributes.join(", "),
        });
    }
    Ok(())
}

fn checked_name(name: &str) -> Result<&str, Error> {
    if name.trim().is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(Error::Invalid(format!(
            "{name:?} is not a valid identity: 1 to 256 bytes, no control characters"
        )));
    }
    Ok(name)
}

fn canonical_attributes(attributes: &[String]) -> Result<BTreeSet<Attribute>, Error> {
    let set = attributes
        .iter()
        .map(|a| {
            Attribute::new(a).map_err(|e| Error::Invalid(format!("attribute {a:?}: {}", e.kind)))
        })
        .collect::<Result<BTreeSet<_>, _>>()?;
    if set.is_empty() || set.len() > rshabe::MAX_KEY_ATTRIBUTES {
        return Err(Error::Invalid(format!(
            "a key holds 1 to {} attributes, not {}",
            rshabe::MAX_KEY_ATTRIBUTES,
            set.len()
        )));
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use rand_core::OsRng;
    use rshabe::Params;

    use super::*;

    const NOW: i64 = 1_800_000_000;

    /// An authority in a SQLite file of `dir`, with small trees.
    fn authority(dir: &tempfile::TempDir) -> Authority {
        let url = format!("sqlite:{}", dir.path().join("authority.sqlite3").display());
        let options = InitOptions {
            params: Params::new(4, 4).unwrap(),
            period_seconds: 86_400,
        };
        let kek = Kek::from_hex(&"01".repeat(32), "test").unwrap();
        Authority::init(
            crate::store::open(&url).unwrap(),
            kek,
            options,
            NOW,
            &mut OsRng,
        )
        .unwrap()
    }

    #[test]
    fn the_period_is_not_read_without_waiting_while_another_call_holds_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let a = authority(&dir);
        let p0 = a.current_period(NOW).unwrap();
        assert_eq!(a.try_current_period(NOW).unwrap().unwrap(), p0);
        let held = a.store();
        assert!(a.try_current_period(NOW).is_none());
        drop(held);
        assert_eq!(a.try_current_period(NOW).unwrap().unwrap(), p0);
    }
}
