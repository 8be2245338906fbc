//! The authority's errors. Each says what is wrong and, where there is one, the fix.

/// Everything that can go wrong in the authority.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `init` on a database that already holds an authority.
    #[error(
        "an authority already exists in {location}; refusing to overwrite it (use another database)"
    )]
    AlreadyInitialised {
        /// The database.
        location: String,
    },
    /// Any other command on a database without an authority.
    #[error("no authority in {location}; create one with `fhirseal authority init`")]
    NotInitialised {
        /// The database.
        location: String,
    },
    /// The database was written by a newer release of FHIRseal.
    #[error(
        "the database {location} has schema version {found}, newer than the {supported} this release knows; \
         upgrade FHIRseal, nothing was changed"
    )]
    SchemaTooNew {
        /// The database.
        location: String,
        /// The version found.
        found: i64,
        /// The newest version this build supports.
        supported: i64,
    },
    /// The authority's stored keys are in the retired layout, in which every node of a key shared
    /// one randomiser (shared/crypto/RS-HABE.md §4, "Correction (2026-12-02)"): such keys let a
    /// revoked user decrypt data sealed after the revocation, so the authority is not opened until
    /// [`Authority::migrate_keys`](crate::Authority::migrate_keys) has re-issued them.
    #[error(
        "the authority at {location} holds keys in the retired layout {found} (RS-HABE.md §4 correction: \
         they let a revoked user's key combine with a current one); stop every gateway using it and run \
         `fhirseal authority migrate-keys` to re-issue them"
    )]
    RetiredKeyLayout {
        /// The database.
        location: String,
        /// The layout found (1; a store that records none counts as 1).
        found: u64,
    },
    /// A key asked for whose key was destroyed: a principal revoked when the authority's keys were
    /// re-issued (see [`Authority::migrate_keys`](crate::Authority::migrate_keys)).
    #[error(
        "the key of {kind} {name} was destroyed when the authority's keys were re-issued (it was revoked); \
         a revoked identity gets no key"
    )]
    KeyDestroyed {
        /// `user` or `authority`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// The key-encryption key could not be read or is malformed.
    #[error("key-encryption key from {source_name}: {reason}")]
    Kek {
        /// Where it was read from (a file path or an environment variable).
        source_name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A sealed record does not open: the key-encryption key is wrong, or the record is corrupt.
    #[error(
        "the {what} does not open with this key-encryption key: the key is wrong or the record is corrupt \
         (nothing was changed)"
    )]
    Unseal {
        /// Which record.
        what: String,
    },
    /// A stored record that does not decode.
    #[error("the stored {what} is corrupt: {reason}")]
    Corrupt {
        /// Which record.
        what: String,
        /// Why.
        reason: String,
    },
    /// An identity that is not registered.
    #[error("{kind} {name} is not registered (see `fhirseal authority {list} list`)", list = plural(kind))]
    UnknownPrincipal {
        /// `user` or `authority`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// An identity that is already registered.
    #[error("{kind} {name} is already registered")]
    AlreadyRegistered {
        /// `user` or `authority`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// A revocation of something already revoked.
    #[error("{kind} {name} was already revoked at period {period}")]
    AlreadyRevoked {
        /// `user` or `authority`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The period of the earlier revocation.
        period: u64,
    },
    /// A key asked for a user revoked at or before the period.
    #[error("user {name} is revoked since period {since}; no decryption key for period {period}")]
    Revoked {
        /// The user.
        name: String,
        /// The period asked for.
        period: u64,
        /// The period of the revocation.
        since: u64,
    },
    /// Issuance of an attribute the issuing (sub-)authority does not hold.
    #[error("authority {authority} may not issue attribute {attribute}: it holds only {held}")]
    OutsideDelegation {
        /// The sub-authority.
        authority: String,
        /// The attribute refused.
        attribute: String,
        /// What it may issue, comma-separated.
        held: String,
    },
    /// Issuance under a revoked sub-authority.
    #[error("authority {0} is revoked and can issue nothing")]
    AuthorityRevoked(String),
    /// Every leaf of the user tree is taken.
    #[error("all {0} leaves of the user tree are taken; create a new authority with a deeper tree")]
    LeavesExhausted(u64),
    /// Every period of the time tree is used up.
    #[error(
        "period {period} is past the last period ({last}) of the time tree; create a new authority"
    )]
    PeriodsExhausted {
        /// The period asked for.
        period: u64,
        /// The last period the tree holds.
        last: u64,
    },
    /// A guarded advance of the period
    /// ([`Authority::advance_period_unless_recent`](crate::Authority::advance_period_unless_recent))
    /// less than a period length after the last advance by hand. Every period advanced by hand
    /// is one the time tree no longer has for later, so they are paced like the clock's.
    #[error(
        "the period was advanced by hand at {at} (unix time); the next advance is allowed from {next},          one period length later"
    )]
    AdvancedRecently {
        /// When the period was last advanced by hand.
        at: i64,
        /// When the next guarded advance is allowed.
        next: i64,
    },
    /// An invalid argument (an empty identity, an invalid attribute, a bad period length).
    #[error("{0}")]
    Invalid(String),
    /// The value of a new named secret could not be made (see
    /// [`Authority::secret_or_create`](crate::Authority::secret_or_create)).
    #[error("the secret {name} could not be created")]
    SecretCreation {
        /// The secret's name.
        name: String,
    },
    /// A ciphertext-update job that does not exist (see
    /// [`Store::start_update_job`](crate::Store::start_update_job)).
    #[error("there is no ciphertext-update job {job}")]
    UnknownJob {
        /// The job asked for.
        job: u64,
    },
    /// A chunk key that the job does not hold.
    #[error("ciphertext-update job {job} has no chunk {key}")]
    UnknownChunk {
        /// The job.
        job: u64,
        /// The chunk's key.
        key: String,
    },
    /// A worker completed, released or renewed a chunk it no longer holds: its lease expired and
    /// another worker claimed the chunk, or it was released or completed already. What the worker
    /// did on it is not recorded; the chunk's holder does it again (the work is idempotent).
    #[error(
        "worker {worker} no longer holds chunk {key} of ciphertext-update job {job} \
         (its lease expired and another worker claimed it, or it was released or done); \
         its work is not recorded"
    )]
    LeaseLost {
        /// The job.
        job: u64,
        /// The chunk's key.
        key: String,
        /// The worker that asked.
        worker: String,
    },
    /// New chunks for a job that was already marked finished.
    #[error(
        "ciphertext-update job {job} is finished and takes no new chunks; \
         start a job for a later period instead"
    )]
    JobFinished {
        /// The job.
        job: u64,
    },
    /// A scheme error from `rshabe`.
    #[error(transparent)]
    Scheme(#[from] rshabe::Error),
    /// A SQLite error.
    #[error("SQLite ({location}): {source}")]
    Sqlite {
        /// The database.
        location: String,
        /// The driver's error.
        source: rusqlite::Error,
    },
    /// A PostgreSQL error.
    #[error("PostgreSQL ({location}): {source}")]
    Postgres {
        /// The database (without password).
        location: String,
        /// The driver's error.
        source: postgres::Error,
    },
    /// The audit chain fails verification at record `seq` ([`crate::audit::verify`]).
    #[error("the audit chain is broken at record {seq}: {problem}")]
    AuditTampered {
        /// The first bad record's sequence number.
        seq: u64,
        /// What is wrong with it.
        problem: crate::audit::Tamper,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

fn plural(kind: &str) -> &'static str {
    if kind == "authority" {
        "authorities"
    } else {
        "users"
    }
}
