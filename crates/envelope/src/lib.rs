//! Hybrid sealing for FHIRseal: each protected FHIR element becomes an AES-256-GCM envelope under
//! a per-resource key, which is wrapped under the data key of an RS-HABE header.
//!
//! # Brief overview
//!
//! - A [`Header`] is an RS-HABE ciphertext with a stable [`HeaderId`]: one per resource
//!   ([`Granularity::Resource`]) or one per access structure and period, shared by every
//!   resource sealed under it ([`Granularity::Shared`]). Its data key, the [`HeaderKey`], is what
//!   attribute-based decryption recovers; [`HeaderCache`] keeps opened header keys per key holder.
//! - A [`ResourceKey`] is drawn per resource and wrapped once under the header key.
//! - [`seal`] turns one element's JSON bytes into an [`Envelope`] bound to its
//!   [`ElementContext`] (resource type, logical id, element path, access structure);
//!   [`open`] reverses it. The envelope's canonical bytes travel as base64 in a FHIR
//!   `valueBase64Binary`.
//! - [`BlindIndex`] derives equality-search tokens from normalised values.
//!
//! ```
//! use fhirseal_envelope::{ElementContext, Granularity, Header, ResourceKey};
//! use rand_core::OsRng;
//! use rshabe::{AccessStructure, Attribute, Params, RevocationList};
//!
//! let (pp, msk) = rshabe::setup(Params::new(4, 4)?, &mut OsRng);
//! let policy = AccessStructure::parse("role:physician")?;
//! let (header, key) = Header::new(&pp, &policy, 0, Granularity::Shared, &mut OsRng)?;
//!
//! let resource_key = ResourceKey::generate(&mut OsRng);
//! let wrapped = resource_key.wrap(&key, header.id(), "Patient", "p1", &mut OsRng);
//! let ctx = ElementContext::new("Patient", "p1", "Patient.birthDate", &policy);
//! let envelope = fhirseal_envelope::seal(&ctx, header.id(), &wrapped, &resource_key, br#""1970-01-01""#, &mut OsRng);
//! let text = envelope.to_base64();
//!
//! // A physician's gateway session opens it.
//! let sk = rshabe::keygen(&pp, &msk, 1, &[Attribute::new("role:physician")?], &mut OsRng)?;
//! let ku = rshabe::key_update(&pp, &msk, 0, &RevocationList::new(), &mut OsRng)?;
//! let dk = rshabe::decrypt_key(&pp, &sk, &ku, &mut OsRng)?;
//! let opened_key = header.open(&dk)?;
//! let envelope = fhirseal_envelope::Envelope::from_base64(&text)?;
//! let plain = fhirseal_envelope::open(&ctx, &envelope, &opened_key)?;
//! assert_eq!(&plain[..], br#""1970-01-01""#);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Guarantees
//!
//! - A fresh 96-bit nonce for every AES-GCM encryption, from the injected RNG.
//! - The associated data binds the envelope version, resource type, logical id (or the
//!   `urn:uuid` of a transaction entry), element path, canonical access structure and header id:
//!   an envelope moved to another element, resource, id or structure does not open.
//! - Every opening failure is the same [`Error::Open`]; malformed input is a typed
//!   [`Error::Malformed`] before any decryption is tried.
//! - Keys zeroize on drop and print nothing in `Debug`.
//! - aes-gcm selects AES-NI and PCLMULQDQ at run time (no `RUSTFLAGS` needed); the `envelope`
//!   benchmark measures the throughput that proves it.
#![warn(missing_docs)]

mod blind_index;
mod cache;
mod envelope;
mod error;
mod header;

pub use blind_index::{BlindIndex, ValueKind};
pub use cache::HeaderCache;
pub use envelope::{
    ElementContext, Envelope, ResourceCipher, ResourceKey, WrappedKey, open, open_prepared,
    open_with, seal,
};
pub use error::{Error, Malformed};
pub use header::{Granularity, Header, HeaderId, HeaderKey};
