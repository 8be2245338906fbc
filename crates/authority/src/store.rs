//! Where the authority keeps its state: one trait, two real backends with migrations.
//!
//! - [`SqliteStore`]: one file, the embedded default.
//! - [`PostgresStore`]: for several gateway replicas sharing one authority.
//!
//! Both keep the same eight tables: `fhirseal_meta` (schema version and counters), `master` (the
//! public parameters and the sealed master secret), `principals` (users and sub-authorities,
//! each with its leaf, attributes, issuer, status and sealed key), `key_updates` (the
//! published update per period, tagged with the revocation-list version it was made for) and
//! `secrets` (named secrets of other components, such as the embedded authorization server's
//! signing key, each sealed under the key-encryption key; schema version 2), and the
//! ciphertext-update job's work queue, `update_jobs` and `update_chunks` (schema version 3; see
//! [`crate::jobs`]), and `leases`, short named leases shared by the processes on one store (the
//! gateway's create guard; schema version 5; see [`crate::leases`]), and the tamper-evident audit
//! trail, `audit_chain` and `audit_checkpoints` (schema version 6; see [`crate::audit`]): an
//! append-only hash chain of audit lines and its signed checkpoints, appended under the same
//! write lock as the registry's writers take (SQLite `BEGIN IMMEDIATE`, PostgreSQL an advisory
//! lock of its own), with its search index `audit_index` (schema version 7; see
//! [`crate::audit::index`]), written behind the chain since schema version 8: a record's
//! transaction holds the record alone, and the index catches up in transactions of its own
//! ([`Store::index_audit`]), before every search and whenever the chain's writer is free.
//!
//! Schema version 4 records the layout of the stored keys, `key_layout` in `fhirseal_meta`
//! ([`KEY_LAYOUT`]): an authority created by this build is in layout 2 from `init`; upgrading an
//! existing authority to version 4 marks it layout 1 (the retired layout), which
//! [`Authority::open`](crate::Authority::open) refuses until
//! [`Authority::migrate_keys`](crate::Authority::migrate_keys) has re-issued its keys.
//! Leaves are allocated from a counter in the same transaction that inserts the principal, under
//! a write lock (SQLite `BEGIN IMMEDIATE`, PostgreSQL `SELECT … FOR UPDATE`), with a `UNIQUE`
//! constraint behind it: concurrent issuers never lose or duplicate a leaf.

use crate::Error;
use crate::audit::index::AuditQuery;
use crate::audit::link::{AuditEntry, ChainTail};
use crate::jobs::{Chunk, JobId, Progress};

mod postgres;
mod sqlite;

pub use self::postgres::PostgresStore;
pub use self::sqlite::SqliteStore;

/// The schema version this build writes; a database with a newer one is refused.
pub const SCHEMA_VERSION: i64 = 8;

/// The layout of the long-term keys this build issues: 2, an independent RW13 key for every node
/// of the user's path (shared/crypto/RS-HABE.md §4, "Correction (2026-12-02)").
///
/// Layout 1, one randomiser shared by every node of a key, is retired: a revoked user's key
/// combined with two elements of any current key decrypts data sealed after the revocation. A
/// store in layout 1 is refused by [`Authority::open`](crate::Authority::open) with
/// [`Error::RetiredKeyLayout`].
pub const KEY_LAYOUT: u64 = 2;

/// The layout an authority made before schema version 4 is in (see [`KEY_LAYOUT`]).
pub const RETIRED_KEY_LAYOUT: u64 = 1;

/// The authority's public record and sealed master secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterRecord {
    /// Depth `L` of the user tree.
    pub user_depth: u8,
    /// Depth `ℓ` of the time tree.
    pub time_depth: u8,
    /// Length of one period, in seconds.
    pub period_seconds: u64,
    /// Unix time at which period 0 began.
    pub epoch: i64,
    /// `rshabe::PublicParams::to_bytes`.
    pub public_params: Vec<u8>,
    /// The master secret sealed under the key-encryption key.
    pub sealed_secret: Vec<u8>,
}

/// What a principal is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A medical worker or a backend-service client.
    User,
    /// A sub-authority (hospital, department).
    Authority,
}

impl Kind {
    /// `user` or `authority`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Authority => "authority",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(Self::User),
            "authority" => Some(Self::Authority),
            _ => None,
        }
    }
}

/// A registered user or sub-authority.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// User or sub-authority.
    pub kind: Kind,
    /// Its identity: a `fhirUser` reference, a client id, or an authority's name.
    pub name: String,
    /// Its leaf in the user tree.
    pub leaf: u64,
    /// Its attributes, canonical and sorted.
    pub attributes: Vec<String>,
    /// The sub-authority that issued it; `None` for the root authority.
    pub parent: Option<String>,
    /// The period from which it is revoked, if it is.
    pub revoked_at: Option<u64>,
    /// Its `rshabe::SecretKey`, sealed under the key-encryption key; empty once destroyed (the
    /// key of a principal revoked when the keys were re-issued, see
    /// [`Authority::migrate_keys`](crate::Authority::migrate_keys)).
    pub sealed_key: Vec<u8>,
    /// Unix time of registration.
    pub created_at: i64,
}

/// What [`Store::insert_principal`]'s callback returns for the leaf it was given.
#[derive(Debug)]
pub struct NewPrincipal {
    /// Attributes, canonical and sorted.
    pub attributes: Vec<String>,
    /// The issuing sub-authority.
    pub parent: Option<String>,
    /// The sealed secret key made for the leaf.
    pub sealed_key: Vec<u8>,
    /// Unix time of registration.
    pub created_at: i64,
}

impl NewPrincipal {
    /// The registered principal this becomes at `leaf`.
    fn into_principal(self, kind: Kind, name: &str, leaf: u64) -> Principal {
        Principal {
            kind,
            name: name.to_string(),
            leaf,
            attributes: self.attributes,
            parent: self.parent,
            revoked_at: None,
            sealed_key: self.sealed_key,
            created_at: self.created_at,
        }
    }
}

/// The callback of [`Store::insert_principal`]: given the allocated leaf and the issuing
/// sub-authority as it stands inside the transaction, the record to insert (or why not).
pub type MakePrincipal<'a> = dyn FnMut(u64, Option<&Principal>) -> Result<NewPrincipal, Error> + 'a;

/// The callback of [`Store::reissue_keys`]: given a principal as stored, its new sealed key, or
/// `None` to destroy its key.
pub type ReissueKey<'a> = dyn FnMut(&Principal) -> Result<Option<Vec<u8>>, Error> + 'a;

/// What [`Store::reissue_keys`] writes, all in one transaction.
pub struct KeyReissue<'a> {
    /// The master secret with fresh node secrets, sealed: it replaces the stored one.
    pub sealed_secret: &'a [u8],
    /// Each principal's new sealed key (or `None`: its key is destroyed).
    pub reissue: &'a mut ReissueKey<'a>,
    /// The current period for a period offset (the offset is advanced by one in the transaction).
    pub period_at: &'a dyn Fn(u64) -> Result<u64, Error>,
    /// The chunks the ciphertext-update job towards the new period starts with; none: no job is
    /// started (the next planner starts it).
    pub job_chunks: &'a [String],
    /// Unix time, for the job's start.
    pub now: i64,
}

impl std::fmt::Debug for KeyReissue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyReissue")
            .field("job_chunks", &self.job_chunks)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

/// What the key migration did (see [`Authority::migrate_keys`](crate::Authority::migrate_keys)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyMigration {
    /// Active users whose keys were re-issued.
    pub users: u64,
    /// Active sub-authorities whose keys were re-issued.
    pub authorities: u64,
    /// Revoked users and sub-authorities whose keys were destroyed.
    pub destroyed: u64,
    /// Stored key updates deleted.
    pub key_updates_deleted: u64,
    /// The current period after the migration: one past the one before.
    pub period: u64,
    /// The ciphertext-update job towards `period`, if one was started.
    pub job: Option<JobId>,
}

impl KeyMigration {
    /// Counts one principal's outcome: re-issued (`true`) or destroyed.
    pub(crate) fn count(&mut self, kind: Kind, reissued: bool) {
        match (reissued, kind) {
            (false, _) => self.destroyed += 1,
            (true, Kind::User) => self.users += 1,
            (true, Kind::Authority) => self.authorities += 1,
        }
    }

    pub(crate) fn empty() -> Self {
        Self {
            users: 0,
            authorities: 0,
            destroyed: 0,
            key_updates_deleted: 0,
            period: 0,
            job: None,
        }
    }
}

/// Counters kept beside the records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counters {
    /// How many times the period was advanced by hand.
    pub period_offset: u64,
    /// Incremented by every revocation; key updates are tagged with it.
    pub revocation_version: u64,
    /// The next free leaf.
    pub next_leaf: u64,
    /// When the period was last advanced by hand (unix time); `None` if it never was (or only
    /// by a release that did not record it).
    pub period_advanced_at: Option<i64>,
}

/// The storage the authority needs. Every method is one transaction.
pub trait Store: Send {
    /// A name for the database in messages (a path, or a URL without password).
    fn location(&self) -> &str;
    /// Whether a short read of this store may run on an async thread: it is answered in this
    /// process from a file no writer locks, in microseconds, never after a wait on the network
    /// or on another connection. SQLite in WAL mode: yes (a reader works from the last commit
    /// and never waits for a writer). PostgreSQL: no (every read is a round trip to the server).
    fn reads_without_waiting(&self) -> bool;
    /// Whether a commit of this store may run on an async thread: it is made in this process
    /// on the calling thread (a file written and, when durable, synced), with no round trip to
    /// a server, though it may wait for another connection's write lock. SQLite: yes.
    /// PostgreSQL: no (a round trip; and its synchronous client runs a runtime of its own, which
    /// cannot be entered from a runtime thread). For the audit chain's writer, whose lone
    /// requests commit their own lines where they can.
    fn commits_in_process(&self) -> bool;
    /// From now on, this connection's commits return once the database has written them, not
    /// once they are on disk: SQLite's `synchronous = NORMAL` in WAL mode (no fsync per commit;
    /// an operating-system crash or power loss may roll back the last commits, never corrupt
    /// the file), PostgreSQL's `synchronous_commit = off` (a server crash may lose the last
    /// commits of roughly three `wal_writer_delay`s, 600 ms by default). Read back, so that a
    /// setting the database ignored is an error. For the audit chain's writer, when its
    /// operator chooses speed over the last records (`server.audit_commit = "fast"`).
    fn relax_commits(&mut self) -> Result<(), Error>;
    /// Creates or upgrades the schema; refuses a newer one with [`Error::SchemaTooNew`].
    fn migrate(&mut self) -> Result<(), Error>;
    /// The master record, if the authority was initialised.
    fn master(&mut self) -> Result<Option<MasterRecord>, Error>;
    /// Stores the master record and marks the keys [`KEY_LAYOUT`], in one transaction;
    /// [`Error::AlreadyInitialised`] if there is one.
    fn create_master(&mut self, record: &MasterRecord) -> Result<(), Error>;
    /// The layout of the stored keys (see [`KEY_LAYOUT`]); `None` when nothing records it (a
    /// store without an authority).
    fn key_layout(&mut self) -> Result<Option<u64>, Error>;
    /// The key migration, in one transaction that excludes registry writers: unless the keys are
    /// in [`KEY_LAYOUT`] already (then `None`, nothing written), replaces the sealed master
    /// secret, gives every principal the key `reissue` makes for it (or destroys it), deletes
    /// every stored key update, advances the period offset by one, starts the ciphertext-update
    /// job towards the new period with its first chunks (a finished job is left as it is), and
    /// marks the keys [`KEY_LAYOUT`]. [`Error::NotInitialised`] without an authority.
    fn reissue_keys(&mut self, plan: KeyReissue<'_>) -> Result<Option<KeyMigration>, Error>;
    /// One principal.
    fn principal(&mut self, kind: Kind, name: &str) -> Result<Option<Principal>, Error>;
    /// Every principal of a kind, by leaf.
    fn principals(&mut self, kind: Kind) -> Result<Vec<Principal>, Error>;
    /// Allocates the next leaf below `max_leaves`, reads the issuing sub-authority (if any), calls
    /// `make` with both and inserts the result, all in one transaction that excludes other
    /// registry writers, so `make` checks the issuer against its current state;
    /// [`Error::AlreadyRegistered`] if the name is taken, [`Error::UnknownPrincipal`] if the
    /// issuer is.
    fn insert_principal(
        &mut self,
        kind: Kind,
        name: &str,
        issuer: Option<&str>,
        max_leaves: u64,
        make: &mut MakePrincipal<'_>,
    ) -> Result<Principal, Error>;
    /// Revokes a principal from `period` on, with everything registered below it if it is a
    /// sub-authority (its [`subtree`]), and bumps the revocation version, in one transaction that
    /// excludes other registry writers. Returns what was revoked; [`Error::AlreadyRevoked`] if
    /// the principal was, [`Error::UnknownPrincipal`] if it does not exist.
    fn revoke_subtree(
        &mut self,
        kind: Kind,
        name: &str,
        period: u64,
    ) -> Result<Vec<(Kind, String)>, Error>;
    /// Every revoked leaf with its period.
    fn revoked_leaves(&mut self) -> Result<Vec<(u64, u64)>, Error>;
    /// The counters.
    fn counters(&mut self) -> Result<Counters, Error>;
    /// Adds one to the period offset, records `now` as the time of this advance by hand and
    /// returns the new offset, in one transaction that excludes other advances. With
    /// `not_after: Some(t)`, only if the last advance by hand was recorded at or before `t` (or
    /// never): otherwise nothing is written and the error is [`Error::AdvancedRecently`], so of
    /// two guarded advances racing (two replicas) one wins.
    fn advance_period(&mut self, now: i64, not_after: Option<i64>) -> Result<u64, Error>;
    /// The stored key update of a period and the revocation version it was made for.
    fn key_update(&mut self, period: u64) -> Result<Option<(u64, Vec<u8>)>, Error>;
    /// Stores (or replaces) the key update of a period.
    fn put_key_update(&mut self, period: u64, version: u64, bytes: &[u8]) -> Result<(), Error>;
    /// The stored (sealed) bytes of the named secret, if there is one.
    fn secret(&mut self, name: &str) -> Result<Option<Vec<u8>>, Error>;
    /// Stores `bytes` as the named secret unless one is already stored, and returns what is
    /// stored: the first writer wins, so replicas sharing a database agree on one value.
    fn insert_secret_if_absent(&mut self, name: &str, bytes: &[u8]) -> Result<Vec<u8>, Error>;
    /// The ciphertext-update job that moves headers to `target_period`: the existing one if there
    /// is one (whether finished or not), else a new one started at `now`.
    fn start_update_job(&mut self, target_period: u64, now: i64) -> Result<JobId, Error>;
    /// Adds the chunks `keys` to `job` and returns how many were new: a key already there is
    /// left as it is (not reset), a key repeated in `keys` is added once.
    /// [`Error::UnknownJob`] if the job does not exist, [`Error::JobFinished`] if it is finished
    /// and a key is new, [`Error::Invalid`] for an empty or overlong key (nothing is added then).
    fn add_chunks(&mut self, job: JobId, keys: &[String]) -> Result<u64, Error>;
    /// Claims for `worker`, until `now + lease_seconds`, one chunk of `job` that is pending or
    /// whose lease ended at or before `now`: of those, one claimed the fewest times, then the
    /// first added. `None` when there is none. Concurrent claimers never get the same chunk.
    /// [`Error::UnknownJob`] if the job does not exist.
    fn claim_chunk(
        &mut self,
        job: JobId,
        worker: &str,
        now: i64,
        lease_seconds: u64,
    ) -> Result<Option<Chunk>, Error>;
    /// Marks the chunk done with the number of headers `worker` moved, if `worker` holds it (a
    /// lease that has expired but was not claimed by another still counts: no one else was
    /// given the chunk). Completing again a chunk this same worker completed is a no-op.
    /// [`Error::LeaseLost`] if another worker holds it or it is not claimed,
    /// [`Error::UnknownChunk`] if the job has no such chunk.
    fn complete_chunk(
        &mut self,
        job: JobId,
        key: &str,
        worker: &str,
        moved: u64,
    ) -> Result<(), Error>;
    /// Puts the chunk `worker` holds back to pending after a failure; its attempts are kept.
    /// [`Error::LeaseLost`] if `worker` does not hold it, [`Error::UnknownChunk`] if the job has
    /// no such chunk.
    fn release_chunk(&mut self, job: JobId, key: &str, worker: &str) -> Result<(), Error>;
    /// Extends the lease `worker` holds on the chunk to `now + lease_seconds`, for long chunks.
    /// [`Error::LeaseLost`] if `worker` does not hold it, [`Error::UnknownChunk`] if the job has
    /// no such chunk.
    fn renew_lease(
        &mut self,
        job: JobId,
        key: &str,
        worker: &str,
        now: i64,
        lease_seconds: u64,
    ) -> Result<(), Error>;
    /// Where `job` stands; [`Error::UnknownJob`] if it does not exist.
    fn job_progress(&mut self, job: JobId) -> Result<Progress, Error>;
    /// Marks `job` finished at `now` if it has chunks and every one is done, and says whether it
    /// is finished (now or earlier; an earlier finish keeps its time). A job without chunks is
    /// not finished: its planner has not started. [`Error::UnknownJob`] if it does not exist.
    fn finish_job_if_done(&mut self, job: JobId, now: i64) -> Result<bool, Error>;
    /// The most recently started ciphertext-update job and where it stands, if there is one.
    fn latest_update_job(&mut self) -> Result<Option<(JobId, Progress)>, Error>;
    /// Takes the lease `key` for `holder` until `now + lease_seconds` unless another holder has
    /// it past `now`, and says whether `holder` has it now (taking again one's own lease extends
    /// it). Concurrent takers never both get a live lease ([`crate::leases`]).
    /// [`Error::Invalid`] for an empty or overlong key or holder, or a lease out of bounds.
    fn take_lease(
        &mut self,
        key: &str,
        holder: &str,
        now: i64,
        lease_seconds: u64,
    ) -> Result<bool, Error>;
    /// Lets the lease `key` go if `holder` has it (nothing otherwise), and deletes every lease
    /// that ended at or before `now`.
    fn release_lease(&mut self, key: &str, holder: &str, now: i64) -> Result<(), Error>;
    /// Appends `entries` to the audit chain after its tail, in order, in one transaction that
    /// excludes every other appender (in this process or another), and then calls `checkpoint`
    /// with the new tail and the last stored checkpoint: a signature it returns is stored as a
    /// checkpoint at the tail, in the same transaction. Returns the tail (sequence number 0 for
    /// an empty chain). See [`crate::audit`].
    fn append_audit(
        &mut self,
        entries: &[AuditEntry<'_>],
        checkpoint: &mut SignCheckpoint<'_>,
    ) -> Result<ChainTail, Error>;
    /// Indexes, in one transaction, up to `limit` of the audit chain's records that its index
    /// does not cover yet, the oldest first; how many (fewer than `limit`: the index covers the
    /// whole chain). The index covers the chain up to its mark (`audit_indexed` in
    /// `fhirseal_meta`, set to the tail by the upgrade to schema version 8), which each call
    /// moves past the records it indexed, in their transaction. The commit does not wait for
    /// the disk (SQLite `synchronous = NORMAL` for it alone, PostgreSQL `synchronous_commit =
    /// off`): a crash may roll the rows back with their mark, never one without the other, and
    /// the next indexer writes them again. Indexers take turns; appenders do not wait for them
    /// on PostgreSQL. See [`crate::audit::index`].
    fn index_audit(&mut self, limit: u32) -> Result<u32, Error>;
    /// Up to `limit` records of the audit chain with a sequence number above `after`, in order,
    /// as stored.
    fn audit_records(&mut self, after: u64, limit: u32) -> Result<Vec<RawAuditRecord>, Error>;
    /// Every checkpoint of the audit chain, by sequence number, as stored.
    fn audit_checkpoints(&mut self) -> Result<Vec<RawCheckpoint>, Error>;
    /// The records of the audit chain that `query` finds in its index ([`crate::audit::index`]),
    /// newest first, as stored: only those the index covers ([`crate::audit::search`] brings it
    /// up to the tail first).
    fn audit_search(&mut self, query: &AuditQuery) -> Result<Vec<RawAuditRecord>, Error>;
}

/// The callback of [`Store::append_audit`]: given the new tail and the last checkpoint (if any),
/// the signature of a checkpoint at the tail, or `None` when none is due.
pub type SignCheckpoint<'a> =
    dyn FnMut(&ChainTail, Option<&ChainTail>) -> Result<Option<Vec<u8>>, Error> + 'a;

/// A record of the audit chain as stored, before its fields are checked
/// ([`crate::audit::verify`] says which is malformed, by sequence number).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawAuditRecord {
    /// Sequence number.
    pub seq: i64,
    /// Unix time in milliseconds.
    pub time: i64,
    /// The audit line's bytes (UTF-8 JSON when intact).
    pub record: Vec<u8>,
    /// The previous record's hash (32 bytes when intact).
    pub prev: Vec<u8>,
    /// This record's hash (32 bytes when intact).
    pub hash: Vec<u8>,
}

/// A checkpoint of the audit chain as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawCheckpoint {
    /// The sequence number of the record it signs.
    pub seq: i64,
    /// That record's hash (32 bytes when intact).
    pub hash: Vec<u8>,
    /// Unix time in milliseconds.
    pub time: i64,
    /// The Ed25519 signature of [`crate::audit::checkpoint_message`].
    pub signature: Vec<u8>,
}

/// The principal `kind`/`name` and, for a sub-authority, every principal issued below it,
/// recursively, among `all`; `Err` if it is unknown or already revoked.
pub fn subtree(kind: Kind, name: &str, all: &[Principal]) -> Result<Vec<(Kind, String)>, Error> {
    let target = all
        .iter()
        .find(|p| p.kind == kind && p.name == name)
        .ok_or_else(|| Error::UnknownPrincipal {
            kind: kind.as_str(),
            name: name.to_string(),
        })?;
    if let Some(period) = target.revoked_at {
        return Err(Error::AlreadyRevoked {
            kind: kind.as_str(),
            name: name.to_string(),
            period,
        });
    }
    let mut targets = vec![(kind, name.to_string())];
    let mut frontier = if kind == Kind::Authority {
        vec![name]
    } else {
        Vec::new()
    };
    while let Some(issuer) = frontier.pop() {
        for p in all.iter().filter(|p| p.parent.as_deref() == Some(issuer)) {
            targets.push((p.kind, p.name.clone()));
            if p.kind == Kind::Authority {
                frontier.push(&p.name);
            }
        }
    }
    Ok(targets)
}

/// Opens the store named by `url`: `sqlite:PATH` (or a path ending in `.sqlite3`/`.db`) or
/// `postgres://…`/`postgresql://…`, and brings its schema up to date.
pub fn open(url: &str) -> Result<Box<dyn Store>, Error> {
    let mut store: Box<dyn Store> =
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Box::new(PostgresStore::connect(url)?)
        } else {
            let path = url
                .strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
                .unwrap_or(url);
            Box::new(SqliteStore::open(std::path::Path::new(path))?)
        };
    store.migrate()?;
    Ok(store)
}

/// A row as stored, before its fields are checked.
pub(crate) struct RawPrincipal {
    pub(crate) kind: String,
    pub(crate) name: String,
    pub(crate) leaf: i64,
    pub(crate) attributes: String,
    pub(crate) parent: Option<String>,
    pub(crate) revoked_at: Option<i64>,
    pub(crate) sealed_key: Vec<u8>,
    pub(crate) created_at: i64,
}

impl RawPrincipal {
    pub(crate) fn check(self) -> Result<Principal, Error> {
        let what = format!("record of {}", self.name);
        Ok(Principal {
            kind: Kind::parse(&self.kind).ok_or_else(|| corrupt(&what, "unknown kind"))?,
            leaf: u64::try_from(self.leaf).map_err(|_| corrupt(&what, "negative leaf"))?,
            attributes: attributes_from_text(&self.attributes, &self.name)?,
            revoked_at: self
                .revoked_at
                .map(|p| u64::try_from(p).map_err(|_| corrupt(&what, "negative period")))
                .transpose()?,
            name: self.name,
            parent: self.parent,
            sealed_key: self.sealed_key,
            created_at: self.created_at,
        })
    }
}

/// The pace rule of [`Store::advance_period`], for every backend: with `not_after: Some(t)`, an
/// advance by hand recorded at `last` after `t` refuses this one, and says when the next may
/// come.
pub(crate) fn check_advance_pace(
    last: Option<i64>,
    not_after: Option<i64>,
    now: i64,
) -> Result<(), Error> {
    match (last, not_after) {
        (Some(at), Some(limit)) if at > limit => Err(Error::AdvancedRecently {
            at,
            next: now.saturating_add(at.saturating_sub(limit)),
        }),
        _ => Ok(()),
    }
}

pub(crate) fn counters_from(rows: Vec<(String, i64)>) -> Result<Counters, Error> {
    let mut c = Counters::default();
    for (key, value) in rows {
        let value = u64::try_from(value).map_err(|_| corrupt("counters", "negative value"))?;
        match key.as_str() {
            "next_leaf" => c.next_leaf = value,
            "period_offset" => c.period_offset = value,
            "revocation_version" => c.revocation_version = value,
            "period_advanced_at" => c.period_advanced_at = i64::try_from(value).ok(),
            _ => {}
        }
    }
    Ok(c)
}

fn attributes_to_text(attributes: &[String]) -> String {
    serde_json::to_string(attributes).unwrap_or_default()
}

fn attributes_from_text(text: &str, name: &str) -> Result<Vec<String>, Error> {
    serde_json::from_str(text).map_err(|e| Error::Corrupt {
        what: format!("attributes of {name}"),
        reason: e.to_string(),
    })
}

fn corrupt(what: &str, reason: &str) -> Error {
    Error::Corrupt {
        what: what.to_string(),
        reason: reason.to_string(),
    }
}
