//! The chain's links, as the stores write them: what one record is, its hash, and how a batch of
//! lines is linked after the tail inside a backend's append transaction. Nothing here reads or
//! writes a store, so the backends and [`crate::audit`] can both use it.

use sha2::{Digest, Sha256};

use crate::Error;

/// The domain-separation tag of a chain link's hash.
pub const CHAIN_DST: &[u8] = b"FHIRSEAL-AUDIT-CHAIN-V1";

/// The `prev` of record 1.
pub const GENESIS: [u8; 32] = [0; 32];

/// One audit line to append, with its time.
#[derive(Clone, Copy, Debug)]
pub struct AuditEntry<'a> {
    /// Unix time in milliseconds.
    pub time: i64,
    /// The audit line, as written (no newline).
    pub record: &'a str,
}

/// The position of the chain's last record (or of a checkpoint): sequence number, hash, time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainTail {
    /// Sequence number, from 1.
    pub seq: u64,
    /// The record's hash.
    pub hash: [u8; 32],
    /// Unix time in milliseconds.
    pub time: i64,
}

/// One record of the chain, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    /// Sequence number, from 1.
    pub seq: u64,
    /// Unix time in milliseconds.
    pub time: i64,
    /// The audit line as written.
    pub record: String,
    /// The previous record's hash.
    pub prev: [u8; 32],
    /// This record's hash.
    pub hash: [u8; 32],
}

/// A link's hash: SHA-256 over [`CHAIN_DST`], then `seq` (8 bytes, big-endian), `time` (8
/// bytes, big-endian, two's complement), `prev` (32 bytes) and `record` (UTF-8), each field
/// preceded by its length as 8 bytes big-endian (the tag too).
pub fn link_hash(seq: u64, time: i64, prev: &[u8; 32], record: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for field in [
        CHAIN_DST,
        &seq.to_be_bytes(),
        &time.to_be_bytes(),
        prev,
        record.as_bytes(),
    ] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field);
    }
    hasher.finalize().into()
}

/// The records to insert after `tail` (`None`: the chain is empty), linked: sequence numbers
/// and hashes. For the backends, inside their append transaction.
pub(crate) fn link(
    tail: Option<(i64, Vec<u8>, i64)>,
    entries: &[AuditEntry<'_>],
) -> Result<(ChainTail, Vec<AuditRecord>), Error> {
    let (mut seq, mut prev, mut time) = match tail {
        None => (0, GENESIS, 0),
        Some((seq, hash, time)) => {
            let seq = u64::try_from(seq).map_err(|_| corrupt(seq, "a negative sequence number"))?;
            let hash = to_hash(&hash).ok_or_else(|| corrupt(seq, "a hash that is not 32 bytes"))?;
            (seq, hash, time)
        }
    };
    let mut records = Vec::with_capacity(entries.len());
    for entry in entries {
        seq += 1;
        let hash = link_hash(seq, entry.time, &prev, entry.record);
        records.push(AuditRecord {
            seq,
            time: entry.time,
            record: entry.record.to_string(),
            prev,
            hash,
        });
        (prev, time) = (hash, entry.time);
    }
    Ok((
        ChainTail {
            seq,
            hash: prev,
            time,
        },
        records,
    ))
}

/// The last checkpoint as stored, checked, for the backends.
pub(crate) fn last_checkpoint(
    raw: Option<(i64, Vec<u8>, i64)>,
) -> Result<Option<ChainTail>, Error> {
    raw.map(|(seq, hash, time)| {
        let hash =
            to_hash(&hash).ok_or_else(|| corrupt(seq, "a checkpoint hash that is not 32 bytes"))?;
        let seq = u64::try_from(seq).map_err(|_| corrupt(seq, "a negative checkpoint"))?;
        Ok(ChainTail { seq, hash, time })
    })
    .transpose()
}

pub(crate) fn to_hash(bytes: &[u8]) -> Option<[u8; 32]> {
    bytes.try_into().ok()
}

pub(crate) fn corrupt(seq: impl std::fmt::Display, what: &str) -> Error {
    Error::Corrupt {
        what: format!("audit record {seq}"),
        reason: what.to_string(),
    }
}
