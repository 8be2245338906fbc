//! The durable work queue of the ciphertext-update job.
//!
//! After a revocation and a period change, every sealed header stored on the upstream must be
//! moved to the new period. That work is one *job* per target period, cut into *chunks* by a
//! planner (a chunk is, say, one page of one resource type; its key is opaque here). Workers, in
//! one process or in several replicas sharing a PostgreSQL store, claim chunks one at a time
//! under a lease, complete them with the number of headers they moved, or release them on
//! failure:
//!
//! - [`Store::start_update_job`](crate::Store::start_update_job) is idempotent: one job per
//!   target period, found again after a restart (the job is resumable).
//! - [`Store::add_chunks`](crate::Store::add_chunks) is idempotent: a key already in the job is
//!   neither re-added nor reset.
//! - [`Store::claim_chunk`](crate::Store::claim_chunk) hands out one chunk that is pending, or
//!   claimed under a lease that has expired (a crashed worker's), in one transaction that
//!   excludes other claimers (PostgreSQL `SELECT … FOR UPDATE SKIP LOCKED`, SQLite
//!   `BEGIN IMMEDIATE`): two claimers never get the same chunk under a live lease. Chunks
//!   claimed fewer times come first, then in the order they were added, so a chunk that keeps
//!   failing does not hold back the others.
//! - [`Store::complete_chunk`](crate::Store::complete_chunk),
//!   [`Store::release_chunk`](crate::Store::release_chunk) and
//!   [`Store::renew_lease`](crate::Store::renew_lease) are accepted only from the worker the
//!   chunk is claimed by; any other gets [`Error::LeaseLost`], and its
//!   work must be treated as not recorded (moving a header is idempotent, so the chunk's next
//!   holder simply does it again).
//! - [`Store::finish_job_if_done`](crate::Store::finish_job_if_done) marks the job finished once
//!   it has chunks and all of them are done; a finished job accepts no new chunk.
//!
//! A planner that discovers a chunk while working on another (the next page of a search) adds it
//! *before* completing the chunk it holds, so a job never looks done while work is still to be
//! discovered.
//!
//! Chunk keys and worker names appear in error messages: they must not hold PHI or secrets (a
//! resource type and a page number or an opaque cursor, a host name and process id).

use crate::Error;

/// The longest chunk key accepted, in bytes.
pub const MAX_CHUNK_KEY: usize = 1024;
/// The longest worker name accepted, in bytes.
pub const MAX_WORKER_NAME: usize = 256;
/// The longest lease accepted, in seconds (one week).
pub const MAX_LEASE_SECONDS: u64 = 7 * 24 * 3600;

/// The identifier of a ciphertext-update job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(u64);

impl JobId {
    /// The job with this number (as shown by [`JobId::get`] or its `Display`).
    pub fn new(id: u64) -> Self {
        Self(id)
    }

    /// Its number.
    pub fn get(self) -> u64 {
        self.0
    }

    /// Its number as stored (a positive `BIGINT`); an identifier past `i64::MAX` names no job.
    pub(crate) fn to_db(self) -> Result<i64, Error> {
        i64::try_from(self.0).map_err(|_| Error::UnknownJob { job: self.0 })
    }

    pub(crate) fn from_db(id: i64) -> Result<Self, Error> {
        u64::try_from(id)
            .map(Self)
            .map_err(|_| corrupt("update job", "negative identifier"))
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A chunk handed to a worker by [`Store::claim_chunk`](crate::Store::claim_chunk).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// The planner's key for it.
    pub key: String,
    /// How many times it has been claimed, this claim included (1 on its first claim).
    pub attempts: u32,
}

/// Where a ciphertext-update job stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The period the job moves headers to.
    pub target_period: u64,
    /// Unix time at which the job was started.
    pub created_at: i64,
    /// How many chunks the planner has added.
    pub chunks_total: u64,
    /// How many of them are done.
    pub chunks_done: u64,
    /// How many are claimed by a worker now (leases that have expired included).
    pub chunks_claimed: u64,
    /// How many headers the done chunks moved, added up.
    pub headers_moved: u64,
    /// Whether the job was marked finished ([`finished_at`](Self::finished_at) is set).
    pub finished: bool,
    /// Unix time at which it was marked finished.
    pub finished_at: Option<i64>,
}

impl Progress {
    /// How many chunks are waiting for a worker (neither claimed nor done).
    pub fn chunks_pending(&self) -> u64 {
        self.chunks_total
            .saturating_sub(self.chunks_done)
            .saturating_sub(self.chunks_claimed)
    }
}

/// The stored state of a chunk that is done (the others are `pending` and `claimed`).
pub(crate) const DONE: &str = "done";

/// A stored job row and its chunk counts, before their fields are checked.
pub(crate) struct RawProgress {
    pub(crate) target_period: i64,
    pub(crate) created_at: i64,
    pub(crate) finished_at: Option<i64>,
    pub(crate) total: i64,
    pub(crate) done: i64,
    pub(crate) claimed: i64,
    pub(crate) moved: i64,
}

impl RawProgress {
    pub(crate) fn check(self) -> Result<Progress, Error> {
        let count = |v: i64, what: &str| {
            u64::try_from(v).map_err(|_| corrupt("update job", &format!("negative {what}")))
        };
        Ok(Progress {
            target_period: count(self.target_period, "target period")?,
            created_at: self.created_at,
            chunks_total: count(self.total, "chunk count")?,
            chunks_done: count(self.done, "chunk count")?,
            chunks_claimed: count(self.claimed, "chunk count")?,
            headers_moved: count(self.moved, "header count")?,
            finished: self.finished_at.is_some(),
            finished_at: self.finished_at,
        })
    }
}

/// What a chunk row says when a worker's write on it matched nothing.
pub(crate) struct ChunkHolder {
    pub(crate) state: String,
    pub(crate) claimed_by: Option<String>,
}

/// Why a worker's completion, release or renewal on `key` did not apply: the chunk is unknown,
/// or held (or done) by someone else. `Ok(())` when it is already done by this very worker (a
/// completion retried after its commit was not seen) and `done_is_ok` is set.
pub(crate) fn refused(
    job: JobId,
    key: &str,
    worker: &str,
    holder: Option<ChunkHolder>,
    done_is_ok: bool,
) -> Result<(), Error> {
    match holder {
        None => Err(Error::UnknownChunk {
            job: job.get(),
            key: key.to_string(),
        }),
        Some(h) if done_is_ok && h.state == DONE && h.claimed_by.as_deref() == Some(worker) => {
            Ok(())
        }
        Some(_) => Err(Error::LeaseLost {
            job: job.get(),
            key: key.to_string(),
            worker: worker.to_string(),
        }),
    }
}

/// Checks the chunk keys the planner adds.
pub(crate) fn check_keys(keys: &[String]) -> Result<(), Error> {
    for key in keys {
        check_key(key)?;
    }
    Ok(())
}

/// Checks one chunk key.
pub(crate) fn check_key(key: &str) -> Result<(), Error> {
    if key.is_empty() || key.len() > MAX_CHUNK_KEY {
        return Err(Error::Invalid(format!(
            "a chunk key must have 1 to {MAX_CHUNK_KEY} bytes, not {}",
            key.len()
        )));
    }
    Ok(())
}

/// Checks a worker name.
pub(crate) fn check_worker(worker: &str) -> Result<(), Error> {
    if worker.is_empty() || worker.len() > MAX_WORKER_NAME {
        return Err(Error::Invalid(format!(
            "a worker name must have 1 to {MAX_WORKER_NAME} bytes, not {}",
            worker.len()
        )));
    }
    Ok(())
}

/// The end of a lease of `lease_seconds` taken at `now`.
pub(crate) fn lease_until(now: i64, lease_seconds: u64) -> Result<i64, Error> {
    if lease_seconds == 0 || lease_seconds > MAX_LEASE_SECONDS {
        return Err(Error::Invalid(format!(
            "a lease must last 1 to {MAX_LEASE_SECONDS} seconds, not {lease_seconds}"
        )));
    }
    i64::try_from(lease_seconds)
        .ok()
        .and_then(|s| now.checked_add(s))
        .ok_or_else(|| Error::Invalid(format!("time {now} is out of range")))
}

/// A count or period as stored (`BIGINT`).
pub(crate) fn to_db(value: u64, what: &str) -> Result<i64, Error> {
    i64::try_from(value).map_err(|_| Error::Invalid(format!("{what} {value} is out of range")))
}

fn corrupt(what: &str, reason: &str) -> Error {
    Error::Corrupt {
        what: what.to_string(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_and_names_are_bounded() {
        assert!(matches!(lease_until(10, 0), Err(Error::Invalid(_))));
        assert!(matches!(
            lease_until(10, MAX_LEASE_SECONDS + 1),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(lease_until(i64::MAX, 1), Err(Error::Invalid(_))));
        assert_eq!(lease_until(10, 30).ok(), Some(40));
        assert!(check_worker("").is_err());
        assert!(check_worker(&"w".repeat(MAX_WORKER_NAME + 1)).is_err());
        assert!(check_key("").is_err());
        assert!(check_key(&"k".repeat(MAX_CHUNK_KEY + 1)).is_err());
        assert!(check_key("Observation/page/1").is_ok());
        assert!(matches!(
            JobId::new(u64::MAX).to_db(),
            Err(Error::UnknownJob { .. })
        ));
    }
}
