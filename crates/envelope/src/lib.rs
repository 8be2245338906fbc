//! Hybrid sealing for FHIRseal: each protected FHIR element becomes an AES-256-GCM envelope under
//! a per-resource key, which is wrapped under the data key of an RS-HABE header.
//!
//! # Brief overview
//!
//! - A [`SealingKey`] is the trusted zone's symmetric secret (the authority's and every gateway
//!   replica's): everything FHIRseal writes is tagged under it and bound to it, so that what
//!   anyone else writes from the public parameters never opens as genuine.
//! - A [`Header`] is an RS-HABE ciphertext with a stable [`HeaderId`]: one per resource
//!   ([`Granularity::Resource`]) or one per access structure and period, shared by every
//!   resource sealed under it ([`Granularity::Shared`]). Its key, the [`HeaderKey`], is derived
//!   from what attribute-based decryption recovers and the sealing key; [`HeaderCache`] keeps
//!   opened header keys per key holder.
//! - A [`ResourceKey`] is drawn per resource and wrapped once under the header key.
//! - [`seal`] turns one element's JSON bytes into an [`Envelope`] bound to its
//!   [`ElementContext`] (resource type, logical id, element path, access structure);
//!   [`open`] reverses it. The envelope's canonical bytes travel as base64 in a FHIR
//!   `valueBase64Binary`.
//! - [`BlindIndex`] derives equality-search tokens from normalised values.
//!
//! ```
//! use fhirseal_envelope::{ElementContext, Granularity, Header, ResourceKey, SealingKey};
//! use rand_core::OsRng;
//! use rshabe::{AccessStructure, Attribute, Params, RevocationList};
//!
//! let (pp, msk) = rshabe::setup(Params::new(4, 4)?, &mut OsRng);
//! let sealing = SealingKey::generate(&mut OsRng); // in a gateway: the authority's named secret
//! let policy = AccessStructure::parse("role:physician")?;
//! let (header, key) = Header::new(&pp, &policy, 0, Granularity::Shared, &sealing, &mut OsRng)?;
//!
//! let resource_key = ResourceKey::generate(&mut OsRng);
//! let wrapped = resource_key.wrap(&key, header.id(), "Patient", "p1", &mut OsRng);
//! let ctx = ElementContext::new("Patient", "p1", "Patient.birthDate", &policy);
//! let envelope = fhirseal_envelope::seal(
//!     &ctx, header.id(), &wrapped, &resource_key, br#""1970-01-01""#, &sealing, &mut OsRng,
//! );
//! let text = envelope.to_base64();
//!
//! // A physician's gateway session opens it.
//! let sk = rshabe::keygen(&pp, &msk, 1, &[Attribute::new("role:physician")?], &mut OsRng)?;
//! let ku = rshabe::key_update(&pp, &msk, 0, &RevocationList::new(), &mut OsRng)?;
//! let dk = rshabe::decrypt_key(&pp, &sk, &ku, &mut OsRng)?;
//! let opened_key = header.open(&dk, &sealing)?;
//! let envelope = fhirseal_envelope::Envelope::from_base64(&text)?;
//! let plain = fhirseal_envelope::open(&ctx, &envelope, &opened_key, &sealing)?;
//! assert_eq!(&plain[..], br#""1970-01-01""#);
//!
//! // The same envelope claimed for another patient is refused before any decryption.
//! let elsewhere = ElementContext::new("Patient", "p2", "Patient.birthDate", &policy);
//! assert!(envelope.verify(&elsewhere, &sealing).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Guarantees
//!
//! - A fresh 96-bit nonce for every AES-GCM encryption, from the injected RNG.
//! - The associated data binds the envelope version, resource type, logical id (or the
//!   `urn:uuid` of a transaction entry), element path, canonical access structure and header id:
//!   an envelope moved to another element, resource, id or structure does not open.
//! - **Authenticity against everyone outside the trusted zone** (the upstream's operator
//!   included), though RS-HABE encryption is public-key. Every header carries an HMAC-SHA256 tag
//!   under the [`SealingKey`] over its id, granularity and access structure, and its key is
//!   `HKDF(salt = sealing-derived salt, ikm = RS-HABE data key, info = … ‖ header id)`, so a
//!   header written from the public parameters, or a genuine one whose ciphertext was swapped,
//!   yields a key that unwraps nothing. Every envelope carries a 16-byte tag over its associated
//!   data and all its other bytes, checked before any decryption ([`Envelope::verify`]): a
//!   forged, modified or moved envelope is [`Error::Forged`] for every gateway, whatever its
//!   reader may open. Version-1 headers and envelopes (no tag) decode only to be refused the same
//!   way. The tags are compared in constant time. Not covered: a whole resource rolled back to an
//!   older genuine version, genuine envelopes of an older version of the same resource and
//!   element put back, and sealed elements deleted (see `docs/authenticity.md`).
//! - The header tag leaves out the ciphertext's group elements and period, so the public
//!   ciphertext update ([`Header::update`]) keeps a header verifiable with no secret.
//! - Every failure to decrypt is the same [`Error::Open`]; an authenticity failure is
//!   [`Error::Forged`]; malformed input is a typed [`Error::Malformed`] before any decryption is
//!   tried.
//! - Keys zeroize on drop and print nothing in `Debug`.
//! - aes-gcm selects AES-NI and PCLMULQDQ at run time (no `RUSTFLAGS` needed); the `envelope`
//!   benchmark measures the throughput that proves it.
//!
//! # Non-goals, and the future end-to-end mode
//!
//! The tags are symmetric: whoever checks them could also make them, so only the trusted zone
//! (authority and gateways) checks them today. In a future end-to-end mode, where enrolled
//! clients open envelopes themselves, two things change and the layout stays: the envelope's and
//! header's tag fields hold an Ed25519 signature of the same bytes by a trusted-zone signing key
//! (a new version byte, 64-byte tag fields), which clients verify with its public key; and the
//! header-key salt derived from the sealing key is handed to enrolled clients with their user
//! keys (it is not what makes a forgery fail any more once signatures do, only what binds a
//! header's key to the trusted zone). Clients then verify before decrypting, exactly as a
//! gateway does now.
#![warn(missing_docs)]

mod blind_index;
mod cache;
mod envelope;
mod error;
mod header;
mod sealing;

pub use blind_index::{BlindIndex, MAX_TOKEN_BITS, MIN_TOKEN_BITS};
pub use cache::HeaderCache;
pub use envelope::{
    ElementContext, Envelope, HeaderCipher, ResourceCipher, ResourceKey, Verified, WrappedKey,
    open, open_prepared, open_with, seal,
};
pub use error::{Error, Malformed};
pub use header::{Granularity, Header, HeaderId, HeaderKey};
pub use sealing::SealingKey;
