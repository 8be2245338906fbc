//! RS-HABE: revocable-storage hierarchical attribute-based encryption on BLS12-381.
//!
//! This crate is the cryptographic core of FHIRseal. It lets an attribute authority issue keys
//! bound to attribute sets (`role:physician`, `dept:cardiology`), lets anyone encrypt a data key
//! under an access structure over those attributes (`role:physician and dept:cardiology`), and
//! makes revocation real: a revoked user gets no decryption key for later periods, and stored
//! ciphertexts can be moved to a later period with public information only, after which the
//! revoked user's old keys open nothing. It knows nothing of FHIR, HTTP or storage.
//!
//! # Brief overview
//!
//! - [`setup`] makes the [`PublicParams`] and the authority's [`MasterSecret`].
//! - [`keygen`] issues a long-term [`SecretKey`] for a leaf of the user tree and an attribute
//!   set; [`delegate`] narrows a key to a subset (a department's sub-authority).
//! - Each period the authority publishes a [`KeyUpdate`] ([`key_update`]) that leaves out the
//!   users on the [`RevocationList`]; each user combines it with the long-term key into that
//!   period's [`DecryptionKey`] ([`decrypt_key`]).
//! - [`encrypt`] makes a [`Ciphertext`] for an [`AccessStructure`] and a period, and the 32-byte
//!   [`DataKey`] it carries; [`ct_update`] moves a ciphertext to a later period; [`decrypt`]
//!   recovers the data key.
//!
//! ```
//! use rand_chacha::ChaCha20Rng;
//! use rand_core::SeedableRng;
//! use rshabe::{AccessStructure, Attribute, Params, RevocationList, UpdateMode};
//!
//! let mut rng = ChaCha20Rng::from_entropy();
//! let params = Params::new(8, 6)?; // 256 users, 64 periods
//! let (pp, msk) = rshabe::setup(params, &mut rng);
//!
//! // The authority issues keys.
//! let attrs = |names: &[&str]| names.iter().map(|n| Attribute::new(n)).collect::<Result<Vec<_>, _>>();
//! let doctor = rshabe::keygen(&pp, &msk, 1, &attrs(&["role:physician", "dept:cardiology"])?, &mut rng)?;
//! let nurse = rshabe::keygen(&pp, &msk, 2, &attrs(&["role:nurse", "dept:cardiology"])?, &mut rng)?;
//!
//! // A record is sealed for period 0.
//! let policy = AccessStructure::parse("role:physician and dept:cardiology")?;
//! let (ct, data_key) = rshabe::encrypt(&pp, &policy, 0, &mut rng)?;
//!
//! // Period 0: the doctor opens it, the nurse cannot.
//! let mut revoked = RevocationList::new();
//! let ku0 = rshabe::key_update(&pp, &msk, 0, &revoked, &mut rng)?;
//! let dk_doctor = rshabe::decrypt_key(&pp, &doctor, &ku0, &mut rng)?;
//! assert_eq!(rshabe::decrypt(&dk_doctor, &ct)?, data_key);
//! let dk_nurse = rshabe::decrypt_key(&pp, &nurse, &ku0, &mut rng)?;
//! assert!(rshabe::decrypt(&dk_nurse, &ct).is_err());
//!
//! // The doctor leaves at period 1: no new decryption key, and once the stored ciphertext is
//! // updated, the old decryption key opens nothing either.
//! revoked.revoke(params, 1, 1)?;
//! let ku1 = rshabe::key_update(&pp, &msk, 1, &revoked, &mut rng)?;
//! assert!(rshabe::decrypt_key(&pp, &doctor, &ku1, &mut rng).is_err());
//! let ct1 = rshabe::ct_update(&pp, &ct, 1, UpdateMode::Minimal, &mut rng)?;
//! assert!(rshabe::decrypt(&dk_doctor, &ct1).is_err());
//!
//! // Everything has a canonical, versioned encoding.
//! let bytes = ct1.to_bytes();
//! assert_eq!(rshabe::Ciphertext::from_bytes(&bytes)?, ct1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Guarantees
//!
//! - Every algorithm of RS-HABE.md §4, with the algebra cross-checked against the exponent-space
//!   model `rsabe_model.py`. Security claim, limits and what each property means for a hospital:
//!   [`notes`].
//! - Secret scalars are multiplied in constant time (blst's ladder, or this crate's fixed-base
//!   tables); `Y^s` uses a constant-time table, never blstrs' variable-time `Gt * Scalar`.
//!   Variable-time arithmetic only ever sees public values (LSSS coefficients, ciphertexts).
//! - Attributes are hashed to `Z_r` with RFC 9380 `expand_message_xmd` under a versioned domain
//!   tag; time nodes live in a separate domain no attribute can reach.
//! - Decoding checks every point's subgroup and refuses any non-canonical input; no input makes
//!   this crate panic.
//! - Secret types zeroize on drop and print no secret in `Debug`. The RNG is always injected.
//!
//! # Non-goals
//!
//! Not CCA-secure on its own (ciphertexts must stay publicly re-randomisable): pair the data key
//! with an AEAD that binds the context, as `fhirseal-envelope` does. Not post-quantum. No
//! peer-reviewed proof exists for this exact composition.
#![warn(missing_docs)]

pub mod access;
mod backend;
mod ciphertext;
mod data_key;
mod decrypt_key;
mod encoding;
mod error;
mod hash;
mod key;
pub mod notes;
mod params;
pub mod secret_sharing;
pub mod tree;
mod update;

pub use access::{AccessStructure, Attribute, PolicyError};
pub use ciphertext::{Ciphertext, UpdateMode, ct_update, decrypt, encrypt};
pub use data_key::DataKey;
pub use decrypt_key::{DecryptionKey, decrypt_key};
pub use encoding::{SECRET_KEY_VERSION, VERSION as WIRE_VERSION};
pub use error::{DecodeError, Error};
pub use hash::{DST_ATTRIBUTE, DST_TIME_NODE};
pub use key::{SecretKey, delegate, keygen};
pub use params::{MasterSecret, Params, PublicParams, setup};
pub use update::{KeyUpdate, RevocationList, key_update};

/// The most attributes one key can hold.
pub const MAX_KEY_ATTRIBUTES: usize = 1024;
