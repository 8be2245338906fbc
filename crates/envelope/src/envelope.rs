//! Element envelopes: AES-256-GCM under a per-resource key wrapped under a header key.
//!
//! Wire format, version 1, fixed layout (105 bytes plus the element's length):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | version = 1 |
//! | 16 | header id |
//! | 12 + 32 + 16 | wrapped resource key: nonce, AES-256-GCM(header key, resource key), tag |
//! | 12 | element nonce |
//! | n + 16 | AES-256-GCM(resource key, element JSON), tag |
//!
//! Associated data (NIST SP 800-38D "A"), each string length-prefixed with a big-endian `u32`:
//! for the wrapped key `"fhirseal wrap v1" ‖ header id ‖ resource type ‖ id`; for the element
//! `"fhirseal element v1" ‖ header id ‖ resource type ‖ id ‖ element path ‖ access structure`.

use std::borrow::Cow;
use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use rand_core::{CryptoRng, RngCore};
use rshabe::AccessStructure;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::header::{HeaderId, HeaderKey};
use crate::{Error, Malformed};

const VERSION: u8 = 1;
const NONCE: usize = 12;
const TAG: usize = 16;
const WRAPPED: usize = NONCE + 32 + TAG;
const HEADER: usize = 1 + 16 + WRAPPED + NONCE;

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

/// A resource key wrapped under a header key, for one resource.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct WrappedKey([u8; WRAPPED]);

/// One sealed element.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    header: HeaderId,
    wrapped: WrappedKey,
    nonce: [u8; NONCE],
    ciphertext: Vec<u8>,
}

/// Seals `plaintext` (the element's JSON) for `ctx` under `resource_key`, carrying the resource
/// key `wrapped` under header `header`.
pub fn seal(
    ctx: &ElementContext<'_>,
    header: HeaderId,
    wrapped: &WrappedKey,
    resource_key: &ResourceKey,
    plaintext: &[u8],
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
    Envelope {
        header,
        wrapped: *wrapped,
        nonce,
        ciphertext,
    }
}

/// Opens an envelope for `ctx` with the key of its header. Any failure is [`Error::Open`].
pub fn open(
    ctx: &ElementContext<'_>,
    envelope: &Envelope,
    header_key: &HeaderKey,
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let resource_key =
        envelope
            .wrapped
            .unwrap(header_key, envelope.header, &ctx.resource_type, &ctx.id)?;
    open_with(ctx, envelope, &resource_key)
}

/// Opens an envelope for `ctx` with its resource's key, already unwrapped (from
/// [`WrappedKey::unwrap`]): the elements of one resource share one wrapped key, so a reader
/// unwraps it once. Any failure is [`Error::Open`].
pub fn open_with(
    ctx: &ElementContext<'_>,
    envelope: &Envelope,
    resource_key: &ResourceKey,
) -> Result<Zeroizing<Vec<u8>>, Error> {
    open_prepared(ctx, envelope, &resource_key.cipher())
}

/// Opens an envelope with its resource's key schedule, prepared once per resource
/// ([`ResourceKey::cipher`]). Any failure is [`Error::Open`].
pub fn open_prepared(
    ctx: &ElementContext<'_>,
    envelope: &Envelope,
    cipher: &ResourceCipher,
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let aad = ctx.element_aad(envelope.header);
    cipher
        .0
        .decrypt(
            &Nonce::from(envelope.nonce),
            Payload {
                msg: &envelope.ciphertext,
                aad: &aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| Error::Open)
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
        let mut aad = b"fhirseal element v1".to_vec();
        aad.extend_from_slice(header.as_bytes());
        for field in [&self.resource_type, &self.id, &self.path, &self.policy] {
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
        let sealed = cipher(header_key.0.as_bytes())
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
        let (nonce, sealed) = self.0.split_at(NONCE);
        let nonce: [u8; NONCE] = nonce.try_into().map_err(|_| Error::Open)?;
        let aad = wrap_aad(header, resource_type, id);
        let key = Zeroizing::new(
            cipher(header_key.0.as_bytes())
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

    /// The canonical bytes (see the module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.ciphertext.len());
        out.push(VERSION);
        out.extend_from_slice(self.header.as_bytes());
        out.extend_from_slice(&self.wrapped.0);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Decodes [`Envelope::to_bytes`]'s output; refuses anything shorter than the fixed fields
    /// plus a tag, and unknown versions.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let (header, wrapped, nonce) = Self::fixed(bytes)?;
        Ok(Self {
            header,
            wrapped,
            nonce,
            ciphertext: bytes[HEADER..].to_vec(),
        })
    }

    /// The fixed fields of an encoded envelope.
    fn fixed(bytes: &[u8]) -> Result<(HeaderId, WrappedKey, [u8; NONCE]), Error> {
        let (&version, _) = bytes.split_first().ok_or(Malformed::Truncated)?;
        if version != VERSION {
            return Err(Malformed::UnknownVersion(version).into());
        }
        if bytes.len() < HEADER + TAG {
            return Err(Malformed::Truncated.into());
        }
        let mut header = [0u8; 16];
        header.copy_from_slice(&bytes[1..17]);
        let mut wrapped = [0u8; WRAPPED];
        wrapped.copy_from_slice(&bytes[17..17 + WRAPPED]);
        let mut nonce = [0u8; NONCE];
        nonce.copy_from_slice(&bytes[17 + WRAPPED..HEADER]);
        Ok((HeaderId::from_bytes(header), WrappedKey(wrapped), nonce))
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

    /// [`Envelope::from_bytes`] reusing the buffer for the ciphertext.
    fn from_vec(mut bytes: Vec<u8>) -> Result<Self, Error> {
        let (header, wrapped, nonce) = Self::fixed(&bytes)?;
        bytes.drain(..HEADER);
        Ok(Self {
            header,
            wrapped,
            nonce,
            ciphertext: bytes,
        })
    }
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
    let mut aad = b"fhirseal wrap v1".to_vec();
    aad.extend_from_slice(header.as_bytes());
    push_prefixed(&mut aad, resource_type);
    push_prefixed(&mut aad, id);
    aad
}

fn push_prefixed(out: &mut Vec<u8>, field: &str) {
    out.extend_from_slice(&(field.len() as u32).to_be_bytes());
    out.extend_from_slice(field.as_bytes());
}
