//! The attribute authority of FHIRseal: the only holder of the RS-HABE master secret.
//!
//! It issues keys to medical workers (bound to a leaf of the user tree and the attributes their
//! roles map to), registers sub-authorities (a hospital, a department) that may issue only within
//! their own attributes, keeps the revocation list, and publishes the key update of each period
//! that makes revocation real. The gateway asks it for per-period decryption keys on the users'
//! behalf.
//!
//! # Brief overview
//!
//! - [`Authority`] is the authority: [`Authority::init`] creates one, [`Authority::open`] opens it.
//! - Its state lives in a [`Store`]: [`SqliteStore`] (one file, the default) or
//!   [`PostgresStore`] (shared by several gateway replicas), chosen by [`store::open`].
//! - The master secret and every user key are sealed at rest with AES-256-GCM under a
//!   key-encryption key, [`Kek`], read from a file or the `FHIRSEAL_AUTHORITY_KEK` variable.
//! - Other components keep named secrets there, sealed the same way and shared by replicas
//!   ([`Authority::secret_or_create`]): the embedded authorization server's signing key.
//! - The ciphertext-update job's work queue lives there too ([`jobs`]): chunks claimed under
//!   leases, so that several replicas sharing PostgreSQL split the work and a restart resumes it.
//! - The gateway's audit lines are kept there as a hash chain with signed checkpoints
//!   ([`audit`]): `fhirseal audit verify` finds an edit, a deletion, a reorder or a truncation.
//! - Every key is in the per-node layout ([`KEY_LAYOUT`], RS-HABE.md §4 as corrected on
//!   2026-12-02). An authority whose keys are in the retired layout is refused
//!   ([`Error::RetiredKeyLayout`]) until [`Authority::migrate_keys`] has re-issued them
//!   (`docs/authority-keys.md`).
//!
//! ```
//! use fhirseal_authority::{Authority, InitOptions, Kek, store};
//! use rand_core::OsRng;
//!
//! let dir = tempfile::tempdir()?;
//! let url = format!("sqlite:{}", dir.path().join("authority.sqlite3").display());
//! let kek = Kek::generate(&mut OsRng);
//! let now = 1_800_000_000;
//! let authority = Authority::init(store::open(&url)?, kek, InitOptions::default(), now, &mut OsRng)?;
//!
//! let doctor = authority.add_user("Practitioner/1", &["role:physician".into()], None, now, &mut OsRng)?;
//! let period = authority.current_period(now)?;
//! let dk = authority.decryption_key("Practitioner/1", period, &mut OsRng)?;
//! assert_eq!(dk.period(), period);
//!
//! authority.revoke(fhirseal_authority::Kind::User, &doctor.name, now)?;
//! assert!(authority.decryption_key("Practitioner/1", period + 1, &mut OsRng).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Guarantees
//!
//! - The master secret exists in clear only in memory, for the operations that need it, and is
//!   zeroized after; it never reaches a log or an error message.
//! - Leaves are allocated in the transaction that registers the principal: concurrent issuers,
//!   in one process or several, never lose or duplicate one.
//! - Revoking a sub-authority revokes everything registered below it.
//! - Every operation on a bad or foreign database fails with an error naming it; nothing is
//!   overwritten (`init` refuses an existing authority, a newer schema is refused untouched).
//! - The key migration is one transaction: after a crash the store is as it was before, and
//!   running it again on a migrated store does nothing.
//!
//! # Non-goals
//!
//! The authority does not map SMART roles to attributes (that is the policy's job) and does not
//! authenticate its callers: whoever can run it with the key-encryption key is the authority.
#![warn(missing_docs)]

pub mod audit;
mod authority;
mod cache;
mod error;
pub mod jobs;
mod kek;
pub mod leases;
mod periods;
pub mod store;

pub use audit::{AuditChain, CheckpointPolicy, CheckpointSigner};
pub use authority::{Authority, InitOptions, PeriodInfo};
pub use error::Error;
pub use jobs::{Chunk, JobId, Progress};
pub use kek::{KEK_ENV, Kek};
pub use periods::unix_now;
pub use store::{KEY_LAYOUT, KeyMigration, Kind, PostgresStore, Principal, SqliteStore, Store};
