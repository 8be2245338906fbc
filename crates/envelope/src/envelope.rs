//! Element envelopes: AES-256-GCM under a per-resource key wrapped under a header key, tagged
//! under the sealing key.
//!
//! Wire format, version 2, fixed layout (121 bytes plus the element's length):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | version = 2 |
//! | 16 | header id |
//! | 12 + 32 + 16 | wrapped resource key: nonce, AES-256-GCM(header key, resource key), tag |
//! | 12 | element nonce |
//! | 16 | authenticity tag (below) |
//! | n + 16 | AES-256-GCM(resource key, element JSON), tag |
//!
//! Associated data (NIST SP 800-38D "A"), each string length-prefixed with a big-endian `u32`:
//! for the wrapped key `"fhirseal wrap v2" ‖ header id ‖ resource type ‖ id`; for the element
//! `"fhirseal element v2" ‖ header id ‖ resource type ‖ id ‖ element path ‖ access structure`.
//!
//! Authenticity tag: the first 16 bytes of
//! `HMAC-SHA256(mac key, "fhirseal envelope tag v2" ‖ len ‖ element associated data ‖ len ‖
//! every other byte of the envelope, in order)` (lengths big-endian `u32`; the mac key is derived
//! from the [`SealingKey`]). Any gateway checks it before decrypting, whatever its reader's
//! attributes: an envelope made outside the trusted zone, modified, or moved to another element,
//! resource, id, access structure or header does not verify ([`Error::Forged`]).
//!
//! Version 1 (the same without the tag, `v1` in the associated-data strings) still decodes, so
//! that it is reported as forged rather than as malformed, but it never verifies.

use std::borrow::Cow;
use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use rand_core::{CryptoRng, RngCore};
use rshabe::AccessStructure;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::header::{HeaderId, HeaderKey};
use crate::sealing::{SealingKey, tags_match};
use crate::{Error, Malformed};

const VERSION: u8 = 2;
const VERSION_1: u8 = 1;
const NONCE: usize = 12;
const TAG: usize = 16;
const WRAPPED: usize = NONCE + 32 + TAG;
/// The authenticity tag's length (a truncated HMAC-SHA256).
const AUTH_TAG: usize = 16;
/// The fixed fields of a version-2 envelope.
const HEADER: usize = 1 + 16 + WRAPPED + NONCE + AUTH_TAG;
/// The fixed fields of a version-1 envelope.
const HEADER_1: usize = 1 + 16 + WRAPPED + NONCE;
const AUTH_DOMAIN: &[u8] = b"fhirseal envelope tag v2";

/// Where an element lives, bound into its envelope's associated data. Owned
/// ([`ElementContext::new`]) or borrowed ([`ElementContext::with_policy_text`], for readers
/// opening many elements).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElementContext<'a> {
    resource_type: Cow<'a, str>,
    id: Cow<'a, str>,
    path: Cow<'a, str>,
    policy: Cow<'a, str>,
}

/// A resource's data key: 32 random bytes, one per resource. Zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ResourceKey([u8; 32]);

/// A resource key's AES-256-GCM key schedule, prepared once to open many elements; wiped on
/// drop (aes-gcm's `zeroize` feature).
pub struct ResourceCipher(Aes256Gcm);

/// A header key's AES-256-GCM key schedule, prepared once to unwrap the keys of the many
/// resources sealed under one header (a search answer's, say); wiped on drop (aes-gcm's
/// `zeroize` feature).
pub struct HeaderCipher(Aes256Gcm);

/// A resource key wrapped under a header key, for one resource.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct WrappedKey([u8; WRAPPED]);

/// One sealed element.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    header: HeaderId,
    wrapped: WrappedKey,
    nonce: [u8; NONCE],
    /// `None` for a version-1 envelope: decoded only to be refused as unauthenticated.
    tag: Option<[u8; AUTH_TAG]>,
    ciphertext: Vec<u8>,
}

/// An envelope whose authenticity tag verified for one element context
/// ([`Envelope::verify`]): ready to decrypt, with no second tag check.
pub struct Verified<'e> {
    envelope: &'e Envelope,
    aad: Vec<u8>,
}

/// Seals `plaintext` (the element's JSON) for `ctx` under `resource_key`, carrying the resource
/// key `wrapped` under header `header`, and tags it under `sealing`.
pub fn seal(
    ctx: &ElementContext<'_>,
    header: HeaderId,
    wrapped: &WrappedKey,
    resource_key: &ResourceKey,
    plaintext: &[u8],
    sealing: &SealingKey,
    rng: &mut (impl CryptoRng + RngCore),
) -> Envelope {
    let mut nonce = [0u8; NONCE];
    rng.fill_bytes(&mut nonce);
    let aad = ctx.element_aad(header);
    let ciphertext = cipher(&resource_key.0)
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        // AES-GCM on an in-memory buffer under 64 GiB cannot fail.
        .unwrap_or_default();
    let mut envelope = Envelope {
        header,
        wrapped: *wrapped,
        nonce,
        tag: None,
        ciphertext,
    };
    let full = envelope.expected_tag(&aad, sealing);
    let mut tag = [0u8; AUTH_TAG];
    tag.copy_from_slice(&full[..AUTH_TAG]);
    envelope.tag = Some(tag);
    envelope
}

/// Verifies an envelope for `ctx` ([`Envelope::verify`]), then opens it with the key of its
/// header.
///
/// # Errors
/// [`Error::Forged`] when it does not verify, [`Error::Open`] for any failure to decrypt.
pub fn open(
    ctx: &ElementContext<'_>,
    envelope: &Envelope,
    header_key: &HeaderKey,
    sealing: &SealingKey,
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let verified = envelope.verify(ctx, sealing)?;
    let resource_key =
        envelope
            .wrapped
            .unwrap(header_key, envelope.header, &ctx.resource_type, &ctx.id)?;
    verified.open(&resource_key.cipher())
}

/// Verifies an envelope for `ctx`, then opens it with its resource's key, already unwrapped (from
/// [`WrappedKey::unwrap`]): the elements of one resource share one wrapped key, so a reader
/// unwraps it once.
///
/// # Errors
/// [`Error::Forged`] when it does not verify, [`Error::Open`] for any failure to decrypt.
pub fn open_with(
    ctx: &ElementContext<'_>,
    envelope: &Envelope,
    resource_key: &ResourceKey,
    sealing: &SealingKey,
) -> Result<Zeroizing<Vec<u8>>, Error> {
    open_prepared(ctx, envelope, &resource_key.cipher(), sealing)
}

/// Verifies an envelope for `ctx`, then opens it with its resource's key schedule, prepared once
/// per resource ([`ResourceKey::cipher`]).
///
/// # Errors
/// [`Error::Forged`] when it does not verify, [`Error::Open`] for any failure to decrypt.
pub fn open_prepared(
    ctx: &ElementContext<'_>,
    envelope: &Envelope,
    cipher: &ResourceCipher,
    sealing: &SealingKey,
) -> Result<Zeroizing<Vec<u8>>, Error> {
    envelope.verify(ctx, sealing)?.open(cipher)
}

// === impl Verified ===

impl Verified<'_> {
    /// The envelope that verified.
    pub fn envelope(&self) -> &Envelope {
        self.envelope
    }

    /// Decrypts the element with its resource's key schedule.
    ///
    /// # Errors
    /// [`Error::Open`] for any failure (another resource's key, say).
    pub fn open(&self, cipher: &ResourceCipher) -> Result<Zeroizing<Vec<u8>>, Error> {
        cipher
            .0
            .decrypt(
                &Nonce::from(self.envelope.nonce),
                Payload {
                    msg: &self.envelope.ciphertext,
                    aad: &self.aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| Error::Open)
    }
}

impl fmt::Debug for Verified<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verified")
            .field("envelope", self.envelope)
            .finish_non_exhaustive()
    }
}

// === impl ElementContext ===

impl<'a> ElementContext<'a> {
    /// The context of element `path` (`Patient.birthDate`) of resource `resource_type/id`, sealed
    /// under `policy`. `id` is the logical id, or the `urn:uuid:…` of a transaction entry.
    pub fn new(
        resource_type: &str,
        id: &str,
        path: &str,
        policy: &AccessStructure,
    ) -> ElementContext<'static> {
        ElementContext {
            resource_type: Cow::Owned(resource_type.to_string()),
            id: Cow::Owned(id.to_string()),
            path: Cow::Owned(path.to_string()),
            policy: Cow::Owned(policy.to_string()),
        }
    }

    /// The same, borrowed, with the access structure already in canonical text (as
    /// [`Header::peek`] reads it): no copy and no print per element.
    ///
    /// [`Header::peek`]: crate::Header::peek
    pub fn with_policy_text(
        resource_type: &'a str,
        id: &'a str,
        path: &'a str,
        policy: &'a str,
    ) -> Self {
        Self {
            resource_type: Cow::Borrowed(resource_type),
            id: Cow::Borrowed(id),
            path: Cow::Borrowed(path),
            policy: Cow::Borrowed(policy),
        }
    }

    fn element_aad(&self, header: HeaderId) -> Vec<u8> {
        const DOMAIN: &[u8] = b"fhirseal element v2";
        let fields = [&self.resource_type, &self.id, &self.path, &self.policy];
        // Sized once: every element opened builds one.
        let len = fields.iter().map(|field| 4 + field.len()).sum::<usize>();
        let mut aad = Vec::with_capacity(DOMAIN.len() + 16 + len);
        aad.extend_from_slice(DOMAIN);
        aad.extend_from_slice(header.as_bytes());
        for field in fields {
            push_prefixed(&mut aad, field);
        }
        aad
    }
}

// === impl ResourceKey ===

impl ResourceKey {
    /// A fresh random key.
    pub fn generate(rng: &mut (impl CryptoRng + RngCore)) -> Self {
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        Self(key)
    }

    /// Its prepared key schedule, for opening several elements of one resource.
    pub fn cipher(&self) -> ResourceCipher {
        ResourceCipher(cipher(&self.0))
    }

    /// This key wrapped under `header_key` for resource `resource_type/id`.
    pub fn wrap(
        &self,
        header_key: &HeaderKey,
        header: HeaderId,
        resource_type: &str,
        id: &str,
        rng: &mut (impl CryptoRng + RngCore),
    ) -> WrappedKey {
        let mut nonce = [0u8; NONCE];
        rng.fill_bytes(&mut nonce);
        let aad = wrap_aad(header, resource_type, id);
        let sealed = cipher(&header_key.0)
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &self.0,
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        let mut out = [0u8; WRAPPED];
        out[..NONCE].copy_from_slice(&nonce);
        if sealed.len() == 32 + TAG {
            out[NONCE..].copy_from_slice(&sealed);
        }
        WrappedKey(out)
    }
}

impl fmt::Debug for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResourceKey(..)")
    }
}

// === impl WrappedKey ===

impl WrappedKey {
    /// The resource key, unwrapped with `header_key` for resource `resource_type/id`. Any failure
    /// is [`Error::Open`].
    pub fn unwrap(
        &self,
        header_key: &HeaderKey,
        header: HeaderId,
        resource_type: &str,
        id: &str,
    ) -> Result<ResourceKey, Error> {
        self.unwrap_with(&header_key.cipher(), header, resource_type, id)
    }

    /// [`WrappedKey::unwrap`] with the header key's schedule already prepared
    /// ([`HeaderKey::cipher`]).
    pub fn unwrap_with(
        &self,
        header_key: &HeaderCipher,
        header: HeaderId,
        resource_type: &str,
        id: &str,
    ) -> Result<ResourceKey, Error> {
        let (nonce, sealed) = self.0.split_at(NONCE);
        let nonce: [u8; NONCE] = nonce.try_into().map_err(|_| Error::Open)?;
        let aad = wrap_aad(header, resource_type, id);
        let key = Zeroizing::new(
            header_key
                .0
                .decrypt(
                    &Nonce::from(nonce),
                    Payload {
                        msg: sealed,
                        aad: &aad,
                    },
                )
                .map_err(|_| Error::Open)?,
        );
        let bytes: [u8; 32] = key.as_slice().try_into().map_err(|_| Error::Open)?;
        Ok(ResourceKey(bytes))
    }
}

impl HeaderKey {
    /// Its prepared key schedule, for unwrapping the keys of several resources.
    pub fn cipher(&self) -> HeaderCipher {
        HeaderCipher(cipher(&self.0))
    }
}

impl fmt::Debug for HeaderCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HeaderCipher(..)")
    }
}

impl fmt::Debug for ResourceCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResourceCipher(..)")
    }
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WrappedKey(..)")
    }
}

// === impl Envelope ===

impl Envelope {
    /// The header whose key opens it.
    pub fn header(&self) -> HeaderId {
        self.header
    }

    /// Its resource's wrapped key.
    pub fn wrapped(&self) -> &WrappedKey {
        &self.wrapped
    }

    /// Checks that the trusted zone sealed this envelope for exactly `ctx`: its tag verifies
    /// under `sealing` over `ctx`'s associated data and every other byte of the envelope.
    /// Needs no header key, so every gateway can tell a forged or moved envelope from a genuine
    /// one, whatever its reader may open. The tags are compared in constant time.
    ///
    /// # Errors
    /// [`Error::Forged`] when it does not verify, or when the envelope is of version 1.
    pub fn verify(
        &self,
        ctx: &ElementContext<'_>,
        sealing: &SealingKey,
    ) -> Result<Verified<'_>, Error> {
        let tag = self.tag.as_ref().ok_or(Error::Forged)?;
        let aad = ctx.element_aad(self.header);
        if !tags_match(&self.expected_tag(&aad, sealing), tag) {
            return Err(Error::Forged);
        }
        Ok(Verified {
            envelope: self,
            aad,
        })
    }

    /// Whether it is of the current version (version 1 is decoded only to be refused).
    pub fn is_current_version(&self) -> bool {
        self.tag.is_some()
    }

    /// The canonical bytes (see the module docs). A decoded version-1 envelope is written back as
    /// version 1 (it stays refused).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.ciphertext.len());
        out.push(if self.tag.is_some() {
            VERSION
        } else {
            VERSION_1
        });
        out.extend_from_slice(self.header.as_bytes());
        out.extend_from_slice(&self.wrapped.0);
        out.extend_from_slice(&self.nonce);
        if let Some(tag) = &self.tag {
            out.extend_from_slice(tag);
        }
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Decodes [`Envelope::to_bytes`]'s output; refuses anything shorter than the fixed fields
    /// plus a tag, and unknown versions.
    ///
    /// # Errors
    /// [`Error::Malformed`] when the bytes do not decode.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        Self::from_vec(bytes.to_vec())
    }

    /// The tag of this envelope for associated data `aad`: the module docs' construction.
    fn expected_tag(&self, aad: &[u8], sealing: &SealingKey) -> [u8; 32] {
        // The body: the version byte and the fields before the tag, then the ciphertext, hashed
        // from where they lie rather than copied together.
        let body: [&[u8]; 5] = [
            &[VERSION],
            self.header.as_bytes(),
            &self.wrapped.0,
            &self.nonce,
            &self.ciphertext,
        ];
        sealing.tag(AUTH_DOMAIN, &[&[aad], &body])
    }

    /// The fixed fields of an encoded envelope, and their length.
    fn fixed(bytes: &[u8]) -> Result<(Fixed, usize), Error> {
        let (&version, _) = bytes.split_first().ok_or(Malformed::Truncated)?;
        let len = match version {
            VERSION => HEADER,
            VERSION_1 => HEADER_1,
            other => return Err(Malformed::UnknownVersion(other).into()),
        };
        if bytes.len() < len + TAG {
            return Err(Malformed::Truncated.into());
        }
        let mut header = [0u8; 16];
        header.copy_from_slice(&bytes[1..17]);
        let mut wrapped = [0u8; WRAPPED];
        wrapped.copy_from_slice(&bytes[17..17 + WRAPPED]);
        let mut nonce = [0u8; NONCE];
        nonce.copy_from_slice(&bytes[17 + WRAPPED..HEADER_1]);
        let tag = (version == VERSION).then(|| {
            let mut tag = [0u8; AUTH_TAG];
            tag.copy_from_slice(&bytes[HEADER_1..HEADER]);
            tag
        });
        let fixed = Fixed {
            header: HeaderId::from_bytes(header),
            wrapped: WrappedKey(wrapped),
            nonce,
            tag,
        };
        Ok((fixed, len))
    }

    /// Standard base64 with padding, for `valueBase64Binary`.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.to_bytes())
    }

    /// Decodes [`Envelope::to_base64`]'s output (canonical base64 only).
    pub fn from_base64(text: &str) -> Result<Self, Error> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| Malformed::Base64)?;
        Self::from_vec(bytes)
    }

    /// The header id of the envelope that `text` ([`Envelope::to_base64`]'s output) encodes,
    /// read from its first 24 characters only: the version and the id, nothing verified, the
    /// rest neither decoded nor checked. For finding which headers a response needs before
    /// opening it; [`Envelope::from_base64`] (when opening) still refuses a malformed envelope.
    ///
    /// # Errors
    /// [`Malformed`] when `text` is shorter than the smallest envelope's encoding, its prefix is
    /// not base64, or the version is unknown.
    pub fn header_of_base64(text: &str) -> Result<HeaderId, Error> {
        // Canonical base64 is whole quanta; the bytes it holds must make at least the smallest
        // envelope (version 1, an empty ciphertext and its tag).
        if !text.len().is_multiple_of(4) {
            return Err(Malformed::Base64.into());
        }
        let padding = text.bytes().rev().take_while(|&b| b == b'=').count();
        if (text.len() / 4 * 3).saturating_sub(padding) < HEADER_1 + TAG {
            return Err(Malformed::Truncated.into());
        }
        // 24 characters are 18 whole bytes: the version and the 16-byte id, and one more.
        let prefix = text.get(..24).ok_or(Malformed::Base64)?;
        let mut bytes = [0u8; 18];
        let n = base64::engine::general_purpose::STANDARD
            .decode_slice(prefix, &mut bytes)
            .map_err(|_| Malformed::Base64)?;
        if n != bytes.len() {
            return Err(Malformed::Base64.into());
        }
        match bytes[0] {
            VERSION | VERSION_1 => {}
            other => return Err(Malformed::UnknownVersion(other).into()),
        }
        let mut header = [0u8; 16];
        header.copy_from_slice(&bytes[1..17]);
        Ok(HeaderId::from_bytes(header))
    }

    /// [`Envelope::from_bytes`] reusing the buffer for the ciphertext.
    fn from_vec(mut bytes: Vec<u8>) -> Result<Self, Error> {
        let (fixed, len) = Self::fixed(&bytes)?;
        bytes.drain(..len);
        Ok(Self {
            header: fixed.header,
            wrapped: fixed.wrapped,
            nonce: fixed.nonce,
            tag: fixed.tag,
            ciphertext: bytes,
        })
    }
}

/// The fixed fields of an encoded envelope.
struct Fixed {
    header: HeaderId,
    wrapped: WrappedKey,
    nonce: [u8; NONCE],
    tag: Option<[u8; AUTH_TAG]>,
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("header", &self.header)
            .field("len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

fn cipher(key: &[u8; 32]) -> Aes256Gcm {
    Aes256Gcm::new(&(*key).into())
}

fn wrap_aad(header: HeaderId, resource_type: &str, id: &str) -> Vec<u8> {
    let mut aad = b"fhirseal wrap v2".to_vec();
    aad.extend_from_slice(header.as_bytes());
    push_prefixed(&mut aad, resource_type);
    push_prefixed(&mut aad, id);
    aad
}

fn push_prefixed(out: &mut Vec<u8>, field: &str) {
    out.extend_from_slice(&(field.len() as u32).to_be_bytes());
    out.extend_from_slice(field.as_bytes());
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;
    use crate::header::HeaderKey;

    const PLAINTEXT: &[u8] = br#""1970-01-01""#;
    /// An element sealed from fixed keys and a fixed nonce stream (below). The upstream holds
    /// envelopes for as long as the data lives: a change to how the element's context is bound
    /// (its additional data), to the wrap or to the tag must fail here, not in a reader years on.
    const PINNED: &str = "AhEREREREREREREREREREREg0kEHwrdDzBbhqLIMTl7aQSw9b1/7GBGtapw0TGTHD5fN1iUDAc+mypLkkN4LYXrNHx/Idv/NwvrBevL8QXo3uewklzuUSLmPamg9C5FBXvUgNK5TAO2pA8kiH3C/3ISH5fMtWayNuVvNY6bqkhGZnq2AYg==";

    fn fixed() -> (
        SealingKey,
        HeaderId,
        HeaderKey,
        ResourceKey,
        ElementContext<'static>,
    ) {
        (
            SealingKey::new(&[0x5a; 32]),
            HeaderId::from_bytes([0x11; 16]),
            HeaderKey([0x22; 32]),
            ResourceKey([0x33; 32]),
            ElementContext::with_policy_text(
                "Patient",
                "p1",
                "Patient.birthDate",
                "role:physician",
            ),
        )
    }

    #[test]
    fn an_element_seals_to_the_pinned_bytes_and_the_pinned_bytes_open() {
        let (sealing, header, header_key, resource_key, ctx) = fixed();
        let mut rng = ChaCha20Rng::seed_from_u64(18);
        let wrapped = resource_key.wrap(&header_key, header, "Patient", "p1", &mut rng);
        let envelope = seal(
            &ctx,
            header,
            &wrapped,
            &resource_key,
            PLAINTEXT,
            &sealing,
            &mut rng,
        );
        assert_eq!(envelope.to_base64(), PINNED);

        let pinned = Envelope::from_base64(PINNED).unwrap();
        let verified = pinned.verify(&ctx, &sealing).unwrap();
        let key = pinned
            .wrapped()
            .unwrap(&header_key, header, "Patient", "p1")
            .unwrap();
        assert_eq!(&*verified.open(&key.cipher()).unwrap(), PLAINTEXT);
    }

    #[test]
    fn a_prepared_header_key_unwraps_as_the_key_does_and_only_for_its_binding() {
        let (_, header, header_key, resource_key, _) = fixed();
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let wrapped = resource_key.wrap(&header_key, header, "Patient", "p1", &mut rng);
        let prepared = header_key.cipher();
        let key = wrapped
            .unwrap_with(&prepared, header, "Patient", "p1")
            .unwrap();
        assert_eq!(key.0, resource_key.0);
        // One schedule for many resources: each unwraps only its own.
        let other = ResourceKey([0x44; 32]);
        let other_wrapped = other.wrap(&header_key, header, "Patient", "p2", &mut rng);
        let unwrapped = other_wrapped.unwrap_with(&prepared, header, "Patient", "p2");
        assert_eq!(unwrapped.unwrap().0, other.0);
        for (header, resource_type, id) in [
            (HeaderId::from_bytes([0x12; 16]), "Patient", "p1"),
            (header, "Observation", "p1"),
            (header, "Patient", "p2"),
        ] {
            assert!(matches!(
                wrapped.unwrap_with(&prepared, header, resource_type, id),
                Err(Error::Open)
            ));
        }
        let wrong = HeaderKey([0x23; 32]).cipher();
        assert!(matches!(
            wrapped.unwrap_with(&wrong, header, "Patient", "p1"),
            Err(Error::Open)
        ));
        assert_eq!(format!("{prepared:?}"), "HeaderCipher(..)");
    }
}
