//! The tamper-evident audit trail: an append-only hash chain of audit lines in the authority's
//! store, with signed checkpoints (schema version 6).
//!
//! - Each record is one audit line as the gateway wrote it (its JSON text, byte for byte), with a
//!   sequence number (dense, from 1), a time (Unix milliseconds), the hash of the record before
//!   it (`prev`; 32 zero bytes for record 1) and its own `hash`, SHA-256 over
//!   [`CHAIN_DST`] and the four fields, each length-prefixed ([`link_hash`]).
//! - [`AuditChain::append`] adds records through [`Store::append_audit`], one transaction that
//!   reads the tail and inserts after it while excluding every other appender (SQLite
//!   `BEGIN IMMEDIATE`; PostgreSQL a transaction-scoped advisory lock), so processes sharing one
//!   store extend one chain and never fork it. The `seq` primary key stands behind the lock.
//! - In the same transaction, when one is due by [`CheckpointPolicy`] (every N records or T
//!   seconds, whichever comes first), a **checkpoint** is stored: the tail's `(seq, hash, time)`
//!   signed with Ed25519 ([`checkpoint_message`]) by a [`CheckpointSigner`] whose seed is the
//!   authority's named secret [`CHECKPOINT_KEY`], sealed under the key-encryption key. Its
//!   public key ([`CheckpointSigner::public_key`]) verifies checkpoints without that secret.
//! - [`search`] finds records through the chain's index ([`index`], schema version 7: terms
//!   for patients, agents and outcomes, and the time recorded; since version 8 written behind
//!   the chain, in transactions of its own, [`index_pending`]) and reads them from the chain,
//!   each hash recomputed. It first brings the index up to the tail, so it finds every record
//!   chained before it began.
//! - [`verify`] recomputes the chain and checks every checkpoint; the first problem, by sequence
//!   number, is [`Error::AuditTampered`] naming the record and the kind of [`Tamper`].
//!
//! What this proves and what not: an edit, a deletion, a reorder or a truncation is found, named
//! by sequence number; one made to look consistent (the records after it re-hashed) is found
//! unless every checkpoint from the tampered record on is deleted too. So
//! someone with write access to the database can rewrite the chain after any point by re-hashing
//! the records and deleting the checkpoints from there (or drop the tail with its checkpoints);
//! with the key-encryption key too, they can sign fresh checkpoints over a rewritten chain. Only
//! checkpoints copied out of the database (`fhirseal audit verify --expect SEQ:HASH`, see
//! `docs/audit.md`) bind the chain against its own operator: a change at or before a copied
//! checkpoint is found whatever else is done to the database.

use std::collections::BTreeMap;

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::store::{RawAuditRecord, RawCheckpoint, Store};
use crate::{Authority, Error};

pub mod index;
pub mod link;

pub use index::AuditQuery;
pub use link::{AuditEntry, AuditRecord, CHAIN_DST, ChainTail, GENESIS, link_hash};
use link::{corrupt, to_hash};

/// The domain-separation tag of a checkpoint's signed message.
pub const CHECKPOINT_DST: &[u8] = b"FHIRSEAL-AUDIT-CHECKPOINT-V1";

/// The authority's named secret holding the checkpoint key's 32-byte Ed25519 seed.
pub const CHECKPOINT_KEY: &str = "audit/checkpoint-key/ed25519";

/// The longest audit line accepted into the chain, in bytes.
pub const MAX_RECORD: usize = 1 << 20;

/// How many records [`verify`] and [`records`] read at a time.
const PAGE: u32 = 1000;

/// How many records one transaction of [`index_pending`] takes.
pub const INDEX_BATCH: u32 = 100;

/// When a checkpoint is due: after `every_records` records or `every_seconds` seconds since the
/// last one, whichever comes first (checked on each append).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointPolicy {
    every_records: u64,
    every_seconds: u64,
}

/// The key that signs checkpoints (Ed25519). Its `Debug` shows only the public key.
pub struct CheckpointSigner {
    pair: Ed25519KeyPair,
}

/// The chain's writer: a store, the checkpoint key and the checkpoint policy.
pub struct AuditChain {
    store: Box<dyn Store>,
    signer: CheckpointSigner,
    policy: CheckpointPolicy,
}

/// What [`verify`] found on an intact chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intact {
    /// Records in the chain.
    pub records: u64,
    /// Checkpoints, each with a good signature over a record of the chain.
    pub checkpoints: u64,
    /// The last checkpoint's sequence number, if there is one.
    pub last_checkpoint: Option<u64>,
}

/// What is wrong with a record of the chain ([`Error::AuditTampered`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tamper {
    /// Its content (time or line) no longer hashes to its stored hash: edited.
    Edited,
    /// Records `seq` to `to` are missing: deleted.
    Missing {
        /// The last missing sequence number.
        to: u64,
    },
    /// Its `prev` is the hash of record `follows`, not of the record before it: records were
    /// swapped or reordered.
    OutOfOrder {
        /// The record it was chained after.
        follows: u64,
    },
    /// Its `prev` is the hash of no record in the chain: the record before it was edited and
    /// re-hashed, or replaced.
    Unlinked,
    /// The chain ends before this sequence number although a checkpoint signed record
    /// `checkpoint`: its tail was truncated.
    Truncated {
        /// The checkpoint's sequence number.
        checkpoint: u64,
    },
    /// A checkpoint at this record signed another hash: the chain was rewritten.
    CheckpointMismatch,
    /// The checkpoint at this record does not verify under the public key: forged.
    BadSignature,
    /// The record does not match a checkpoint copied out of the database (`--expect`).
    ExpectedMismatch,
    /// A field of the stored row is malformed (what).
    Malformed(&'static str),
}

// === impl Tamper ===

impl std::fmt::Display for Tamper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Edited => f.write_str("edited: its time or line no longer matches its hash"),
            Self::Missing { to } => write!(f, "deleted: the chain skips to record {}", to + 1),
            Self::OutOfOrder { follows } => write!(
                f,
                "out of order: it was chained after record {follows}, not the one before it \
                 (records swapped or reordered)"
            ),
            Self::Unlinked => f.write_str(
                "unlinked: its prev hash is no record's (the record before it was edited and \
                 re-hashed, or replaced)",
            ),
            Self::Truncated { checkpoint } => write!(
                f,
                "missing: the chain ends before it, but checkpoint {checkpoint} signed a record \
                 up to there (tail truncated)"
            ),
            Self::CheckpointMismatch => {
                f.write_str("its checkpoint signed another hash (the chain was rewritten)")
            }
            Self::BadSignature => {
                f.write_str("its checkpoint's signature does not verify (forged)")
            }
            Self::ExpectedMismatch => {
                f.write_str("its hash is not the one expected (the chain was rewritten)")
            }
            Self::Malformed(what) => write!(f, "malformed: {what}"),
        }
    }
}

// === impl CheckpointPolicy ===

impl CheckpointPolicy {
    /// The default: every 1,000 records or 60 seconds.
    pub const DEFAULT: Self = Self {
        every_records: 1000,
        every_seconds: 60,
    };

    /// A checkpoint every `every_records` records (1 to 1,000,000) or `every_seconds` seconds
    /// (1 to 86,400), whichever comes first.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a value out of bounds.
    pub fn new(every_records: u64, every_seconds: u64) -> Result<Self, Error> {
        if !(1..=1_000_000).contains(&every_records) {
            return Err(Error::Invalid(format!(
                "a checkpoint every 1 to 1000000 records, not {every_records}"
            )));
        }
        if !(1..=86_400).contains(&every_seconds) {
            return Err(Error::Invalid(format!(
                "a checkpoint every 1 to 86400 seconds, not {every_seconds}"
            )));
        }
        Ok(Self {
            every_records,
            every_seconds,
        })
    }

    /// The most records between two checkpoints.
    pub fn every_records(&self) -> u64 {
        self.every_records
    }

    /// The most seconds between two checkpoints (while records come).
    pub fn every_seconds(&self) -> u64 {
        self.every_seconds
    }

    /// Whether a checkpoint at `tail` is due after the `last` one.
    fn due(&self, tail: &ChainTail, last: Option<&ChainTail>) -> bool {
        match last {
            _ if tail.seq == 0 => false,
            None => true,
            Some(last) => {
                tail.seq > last.seq
                    && (tail.seq - last.seq >= self.every_records
                        || tail.time.saturating_sub(last.time)
                            >= i64::try_from(self.every_seconds * 1000).unwrap_or(i64::MAX))
            }
        }
    }
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

// === impl CheckpointSigner ===

impl CheckpointSigner {
    /// The authority's checkpoint key ([`CHECKPOINT_KEY`]), created (32 bytes from `rng`) on
    /// first use; replicas sharing the store agree on the first one stored.
    ///
    /// # Errors
    /// The store's errors; [`Error::Unseal`] if the stored seed does not open.
    pub fn load_or_create(
        authority: &Authority,
        rng: &mut (impl CryptoRng + RngCore),
    ) -> Result<Self, Error> {
        let mut fresh = Zeroizing::new(vec![0u8; 32]);
        rng.fill_bytes(&mut fresh);
        let seed = authority.secret_or_create(CHECKPOINT_KEY, move || Ok(fresh), rng)?;
        Self::from_seed(&seed)
    }

    /// The signer of a 32-byte Ed25519 seed.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for a seed that is not 32 bytes.
    pub fn from_seed(seed: &[u8]) -> Result<Self, Error> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| Error::Corrupt {
            what: "the audit checkpoint key".into(),
            reason: "not a 32-byte Ed25519 seed".into(),
        })?;
        Ok(Self { pair })
    }

    /// The public key (32 bytes), for auditors.
    pub fn public_key(&self) -> [u8; 32] {
        let mut key = [0u8; 32];
        let bytes = self.pair.public_key().as_ref();
        if bytes.len() == 32 {
            key.copy_from_slice(bytes);
        }
        key
    }

    /// The signature of the checkpoint at `tail`.
    pub fn sign(&self, tail: &ChainTail) -> Vec<u8> {
        self.pair.sign(&checkpoint_message(tail)).as_ref().to_vec()
    }
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("public_key", &hex(&self.public_key()))
            .finish_non_exhaustive()
    }
}

// === impl AuditChain ===

impl AuditChain {
    /// The writer of the chain in `store` (its own connection: appends do not wait for the
    /// authority's other work).
    pub fn new(store: Box<dyn Store>, signer: CheckpointSigner, policy: CheckpointPolicy) -> Self {
        Self {
            store,
            signer,
            policy,
        }
    }

    /// Appends `entries`, in order, in one transaction, with a checkpoint at the new tail if one
    /// is due; returns the tail.
    ///
    /// # Errors
    /// The store's errors (nothing is appended then); [`Error::Invalid`] for a line over
    /// [`MAX_RECORD`] bytes.
    pub fn append(&mut self, entries: &[AuditEntry<'_>]) -> Result<ChainTail, Error> {
        if let Some(long) = entries.iter().find(|e| e.record.len() > MAX_RECORD) {
            return Err(Error::Invalid(format!(
                "an audit line of {} bytes is over the {MAX_RECORD} the chain takes",
                long.record.len()
            )));
        }
        let (signer, policy) = (&self.signer, self.policy);
        self.store.append_audit(entries, &mut |tail, last| {
            Ok(policy.due(tail, last).then(|| signer.sign(tail)))
        })
    }

    /// Signs a checkpoint at the tail now, unless the tail has one (or the chain is empty); for a
    /// writer that stops, so that no record is left after the last checkpoint.
    ///
    /// # Errors
    /// The store's errors.
    pub fn checkpoint(&mut self) -> Result<ChainTail, Error> {
        let signer = &self.signer;
        self.store.append_audit(&[], &mut |tail, last| {
            let signed = last.is_some_and(|last| last.seq >= tail.seq);
            Ok((tail.seq > 0 && !signed).then(|| signer.sign(tail)))
        })
    }

    /// Indexes up to `limit` of the records the chain's index does not cover yet (this
    /// writer's or another's), in one transaction ([`Store::index_audit`]); how many. Fewer
    /// than `limit`: the index covers the whole chain.
    ///
    /// # Errors
    /// The store's errors (nothing is indexed then; a later call or search does it).
    pub fn index(&mut self, limit: u32) -> Result<u32, Error> {
        self.store.index_audit(limit)
    }

    /// The public key of the checkpoint signer.
    pub fn public_key(&self) -> [u8; 32] {
        self.signer.public_key()
    }

    /// Whether this chain's appends may run on an async thread ([`Store::commits_in_process`]).
    pub fn commits_in_process(&self) -> bool {
        self.store.commits_in_process()
    }
}

impl std::fmt::Debug for AuditChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditChain")
            .field("store", &self.store.location())
            .field("signer", &self.signer)
            .field("policy", &self.policy)
            .finish()
    }
}

// === the chain's arithmetic ===

/// What a checkpoint signs: [`CHECKPOINT_DST`], `seq`, `hash` and `time`, encoded as in
/// [`link_hash`] (each length-prefixed).
pub fn checkpoint_message(tail: &ChainTail) -> Vec<u8> {
    let mut message = Vec::with_capacity(100);
    for field in [
        CHECKPOINT_DST,
        &tail.seq.to_be_bytes(),
        &tail.hash,
        &tail.time.to_be_bytes(),
    ] {
        message.extend_from_slice(&(field.len() as u64).to_be_bytes());
        message.extend_from_slice(field);
    }
    message
}

// === reading and verifying ===

/// Up to `limit` records after sequence number `after`, in order, checked (for export).
///
/// # Errors
/// The store's errors; [`Error::Corrupt`] naming the sequence number of a malformed row.
pub fn records(store: &mut dyn Store, after: u64, limit: u32) -> Result<Vec<AuditRecord>, Error> {
    store
        .audit_records(after, limit)?
        .into_iter()
        .map(|raw| check_record(raw).map_err(|(seq, what)| corrupt(seq, what)))
        .collect()
}

/// Brings the chain's index up to the tail ([`Store::index_audit`], [`INDEX_BATCH`] records a
/// transaction); how many records it indexed.
///
/// # Errors
/// The store's errors (the transactions before the failing one stay).
pub fn index_pending(store: &mut dyn Store) -> Result<u64, Error> {
    let mut indexed = 0u64;
    loop {
        let batch = store.index_audit(INDEX_BATCH)?;
        indexed += u64::from(batch);
        if batch < INDEX_BATCH {
            return Ok(indexed);
        }
    }
}

/// The records `query` finds through the chain's index ([`index`]), newest first, each read
/// from the chain itself and its hash recomputed: what a search shows is what [`verify`] covers.
/// The index is first brought up to the tail ([`index_pending`]): every record chained before
/// the search began can be found.
///
/// # Errors
/// The store's errors (a search never answers from an index behind the chain); [`Error::Corrupt`]
/// for a malformed row; [`Error::AuditTampered`] ([`Tamper::Edited`]) for a record that no
/// longer hashes to its stored hash (run [`verify`]).
pub fn search(store: &mut dyn Store, query: &AuditQuery) -> Result<Vec<AuditRecord>, Error> {
    index_pending(store)?;
    store
        .audit_search(query)?
        .into_iter()
        .map(|raw| {
            let record = check_record(raw).map_err(|(seq, what)| corrupt(seq, what))?;
            if link_hash(record.seq, record.time, &record.prev, &record.record) != record.hash {
                return Err(tampered(record.seq, Tamper::Edited));
            }
            Ok(record)
        })
        .collect()
}

/// Record `seq` of the chain, its hash recomputed, if there is one.
///
/// # Errors
/// As [`search`].
pub fn record(store: &mut dyn Store, seq: u64) -> Result<Option<AuditRecord>, Error> {
    let Some(after) = seq.checked_sub(1) else {
        return Ok(None);
    };
    let Some(record) = records(store, after, 1)?.pop().filter(|r| r.seq == seq) else {
        return Ok(None);
    };
    if link_hash(record.seq, record.time, &record.prev, &record.record) != record.hash {
        return Err(tampered(record.seq, Tamper::Edited));
    }
    Ok(Some(record))
}

/// Every record of the chain, page by page, to `each` (for export).
///
/// # Errors
/// As [`records`], and `each`'s.
pub fn for_each_record(
    store: &mut dyn Store,
    mut each: impl FnMut(&AuditRecord) -> Result<(), Error>,
) -> Result<u64, Error> {
    let mut after = 0;
    loop {
        let page = records(store, after, PAGE)?;
        let Some(last) = page.last() else {
            return Ok(after);
        };
        after = last.seq;
        page.iter().try_for_each(&mut each)?;
    }
}

/// Recomputes the chain in `store` and checks every checkpoint's signature under `public_key`
/// (32 bytes) and its hash, and each `(seq, hash)` of `expect` (checkpoints copied out of the
/// database).
///
/// # Errors
/// [`Error::AuditTampered`] naming the first bad record by sequence number and what is wrong;
/// the store's errors.
pub fn verify(
    store: &mut dyn Store,
    public_key: &[u8],
    expect: &[(u64, [u8; 32])],
) -> Result<Intact, Error> {
    let key = UnparsedPublicKey::new(&ED25519, public_key);
    let mut checkpoints: BTreeMap<u64, RawCheckpoint> = BTreeMap::new();
    for c in store.audit_checkpoints()? {
        let seq = u64::try_from(c.seq)
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| tampered(0, Tamper::Malformed("a checkpoint's sequence number")))?;
        checkpoints.insert(seq, c);
    }
    let expect: BTreeMap<u64, [u8; 32]> = expect.iter().copied().collect();
    let (mut expected, mut prev) = (1u64, GENESIS);
    loop {
        let page = store.audit_records(expected - 1, PAGE)?;
        if page.is_empty() {
            break;
        }
        for raw in page {
            let record =
                check_record(raw).map_err(|(seq, what)| tampered(seq, Tamper::Malformed(what)))?;
            if record.seq != expected {
                return Err(tampered(expected, Tamper::Missing { to: record.seq - 1 }));
            }
            if record.prev != prev {
                let problem = match find_hash(store, &record.prev)? {
                    Some(follows) => Tamper::OutOfOrder { follows },
                    None => Tamper::Unlinked,
                };
                return Err(tampered(record.seq, problem));
            }
            if link_hash(record.seq, record.time, &record.prev, &record.record) != record.hash {
                return Err(tampered(record.seq, Tamper::Edited));
            }
            if let Some(c) = checkpoints.get(&record.seq) {
                check_checkpoint(&key, &record, c)?;
            }
            if expect.get(&record.seq).is_some_and(|h| *h != record.hash) {
                return Err(tampered(record.seq, Tamper::ExpectedMismatch));
            }
            (expected, prev) = (record.seq + 1, record.hash);
        }
    }
    let last = expected - 1;
    let beyond = checkpoints.keys().chain(expect.keys()).copied().max();
    if let Some(checkpoint) = beyond.filter(|s| *s > last) {
        return Err(tampered(expected, Tamper::Truncated { checkpoint }));
    }
    Ok(Intact {
        records: last,
        checkpoints: checkpoints.len() as u64,
        last_checkpoint: checkpoints.keys().next_back().copied(),
    })
}

/// Checks the stored checkpoint `c` at `record`: same hash, good signature.
fn check_checkpoint(
    key: &UnparsedPublicKey<&[u8]>,
    record: &AuditRecord,
    c: &RawCheckpoint,
) -> Result<(), Error> {
    if to_hash(&c.hash) != Some(record.hash) {
        return Err(tampered(record.seq, Tamper::CheckpointMismatch));
    }
    let tail = ChainTail {
        seq: record.seq,
        hash: record.hash,
        time: c.time,
    };
    key.verify(&checkpoint_message(&tail), &c.signature)
        .map_err(|_| tampered(record.seq, Tamper::BadSignature))
}

/// The sequence number of the stored record whose hash is `hash`, if any (a second scan, run only
/// once a record is found out of place).
fn find_hash(store: &mut dyn Store, hash: &[u8; 32]) -> Result<Option<u64>, Error> {
    let mut after = 0;
    loop {
        let page = store.audit_records(after, PAGE)?;
        let Some(last) = page.last() else {
            return Ok(None);
        };
        after = u64::try_from(last.seq).unwrap_or(u64::MAX);
        if let Some(found) = page.iter().find(|r| r.hash == hash) {
            return Ok(u64::try_from(found.seq).ok());
        }
        if after == u64::MAX {
            return Ok(None);
        }
    }
}

/// A row's fields checked, or its sequence number and what is malformed.
fn check_record(raw: RawAuditRecord) -> Result<AuditRecord, (u64, &'static str)> {
    let seq = u64::try_from(raw.seq)
        .ok()
        .filter(|s| *s > 0)
        .ok_or((0, "a sequence number below 1"))?;
    Ok(AuditRecord {
        seq,
        time: raw.time,
        prev: to_hash(&raw.prev).ok_or((seq, "its prev hash is not 32 bytes"))?,
        hash: to_hash(&raw.hash).ok_or((seq, "its hash is not 32 bytes"))?,
        record: String::from_utf8(raw.record).map_err(|_| (seq, "its line is not UTF-8"))?,
    })
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The 32 bytes of 64 hex digits, if they are.
pub fn from_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn tampered(seq: u64, problem: Tamper) -> Error {
    Error::AuditTampered { seq, problem }
}

#[cfg(test)]
mod tests;
