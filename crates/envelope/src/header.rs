//! RS-HABE headers: the attribute-based half of the hybrid encryption.
//!
//! Wire format, version 2:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | version = 2 |
//! | 16 | header id |
//! | 1 | granularity (1: resource, 2: shared) |
//! | 32 | tag: `HMAC-SHA256(mac key, "fhirseal header tag v2" ‖ id ‖ granularity ‖ canonical access structure)`, each field length-prefixed (big-endian `u32`) |
//! | rest | RS-HABE ciphertext (rshabe's encoding) |
//!
//! The tag leaves out the ciphertext's group elements and its period on purpose: the public
//! ciphertext update rewrites them each period without the sealing key. A swapped ciphertext is
//! caught by the key binding instead: the header key is
//! `HKDF-SHA256(salt = header salt, ikm = RS-HABE data key, info = "fhirseal header key v2" ‖ id)`
//! (see [`SealingKey`]), so another ciphertext yields a key that unwraps no resource key.
//!
//! Version 1 (no tag, the header key being the data key itself) still decodes, so that such a
//! header is reported as forged rather than as missing, but it never verifies and never opens.
//!
//! Headers stored upstream live as long as the data: `tests/data/known-answers-v2.txt` holds headers
//! and elements sealed under this format, and the crate's tests fail when they stop verifying or
//! opening.

use std::fmt;

use rand_core::{CryptoRng, RngCore};
use rshabe::{AccessStructure, Ciphertext, DecryptionKey, PublicParams, UpdateMode};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::sealing::{SealingKey, tags_match};
use crate::{Error, Malformed};

/// How many resources share one RS-HABE header (DESIGN.md, "Keys and performance").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Granularity {
    /// One header per resource: the paper's layout, strongest isolation, one RS-HABE decryption
    /// per resource read.
    Resource,
    /// One header per access structure and period, stored once; each resource's key is wrapped
    /// under it. After the first decryption of a header (cached), a read costs AES only.
    Shared,
}

/// A header's stable identifier: 16 random bytes, kept across ciphertext updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HeaderId([u8; 16]);

/// An RS-HABE ciphertext whose data key, bound to the sealing key, protects resource keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    id: HeaderId,
    granularity: Granularity,
    /// `None` for a version-1 header: decoded only to be refused as unauthenticated.
    tag: Option<[u8; TAG]>,
    ciphertext: Ciphertext,
    /// The ciphertext's access structure in canonical text, made once: the tag covers it and
    /// every element opened under the header binds it (it was written out again for each).
    policy: String,
}

/// A header's key: the RS-HABE data key bound to the sealing key and the header id. Zeroized on
/// drop.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct HeaderKey(pub(crate) [u8; 32]);

const VERSION: u8 = 2;
const VERSION_1: u8 = 1;
const TAG: usize = 32;
const TAG_DOMAIN: &[u8] = b"fhirseal header tag v2";

// === impl Header ===

impl Header {
    /// A new header for `policy` at `period`, tagged with and bound to `sealing`, and its key.
    ///
    /// # Errors
    /// [`Error::Scheme`] when RS-HABE refuses the structure or the period.
    pub fn new(
        pp: &PublicParams,
        policy: &AccessStructure,
        period: u64,
        granularity: Granularity,
        sealing: &SealingKey,
        rng: &mut (impl CryptoRng + RngCore),
    ) -> Result<(Self, HeaderKey), Error> {
        let (ciphertext, data_key) = rshabe::encrypt(pp, policy, period, rng)?;
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        let id = HeaderId(id);
        let policy = ciphertext.policy().to_string();
        let tag = header_tag(sealing, id, granularity, &policy);
        let key = HeaderKey(sealing.header_key(data_key.as_bytes(), id.as_bytes()));
        let header = Self {
            id,
            granularity,
            tag: Some(tag),
            ciphertext,
            policy,
        };
        Ok((header, key))
    }

    /// Checks that the trusted zone made this header: its tag verifies under `sealing` for its
    /// id, granularity and access structure.
    ///
    /// # Errors
    /// [`Error::Forged`] when it does not, or when the header is of version 1 (no tag).
    pub fn verify(&self, sealing: &SealingKey) -> Result<(), Error> {
        let tag = self.tag.as_ref().ok_or(Error::Forged)?;
        let expected = header_tag(sealing, self.id, self.granularity, &self.policy);
        tags_match(&expected, tag)
            .then_some(())
            .ok_or(Error::Forged)
    }

    /// Its stable id.
    pub fn id(&self) -> HeaderId {
        self.id
    }

    /// Its granularity.
    pub fn granularity(&self) -> Granularity {
        self.granularity
    }

    /// The RS-HABE ciphertext.
    pub fn ciphertext(&self) -> &Ciphertext {
        &self.ciphertext
    }

    /// The ciphertext's access structure in canonical text: `ciphertext().policy().to_string()`,
    /// made when the header was.
    pub fn policy_text(&self) -> &str {
        &self.policy
    }

    /// Verifies the header ([`Header::verify`]), then opens its key with a decryption key whose
    /// attributes satisfy its structure.
    ///
    /// # Errors
    /// [`Error::Forged`] when the header does not verify; [`Error::Scheme`] when the key does not
    /// satisfy the structure or is of an earlier period.
    pub fn open(&self, key: &DecryptionKey, sealing: &SealingKey) -> Result<HeaderKey, Error> {
        self.verify(sealing)?;
        let data_key = rshabe::decrypt(key, &self.ciphertext)?;
        Ok(HeaderKey(
            sealing.header_key(data_key.as_bytes(), self.id.as_bytes()),
        ))
    }

    /// The same header moved to a later period (public; same id, same key, same tag: it still
    /// verifies).
    ///
    /// # Errors
    /// [`Error::Scheme`] when RS-HABE refuses the period.
    pub fn update(
        &self,
        pp: &PublicParams,
        period: u64,
        mode: UpdateMode,
        rng: &mut (impl CryptoRng + RngCore),
    ) -> Result<Self, Error> {
        let ciphertext = rshabe::ct_update(pp, &self.ciphertext, period, mode, rng)?;
        // An update keeps the structure; the text is still made from the ciphertext it will
        // stand for, as every constructor makes it.
        Ok(Self {
            policy: ciphertext.policy().to_string(),
            ciphertext,
            ..self.clone()
        })
    }

    /// The module docs' layout: `version (2) ‖ id (16) ‖ granularity (1) ‖ tag (32) ‖ RS-HABE
    /// ciphertext`. A decoded version-1 header is written back as version 1 (it stays refused).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![if self.tag.is_some() {
            VERSION
        } else {
            VERSION_1
        }];
        out.extend_from_slice(&self.id.0);
        out.push(granularity_byte(self.granularity));
        if let Some(tag) = &self.tag {
            out.extend_from_slice(tag);
        }
        out.extend_from_slice(&self.ciphertext.to_bytes());
        out
    }

    /// The id, period and canonical access structure of an encoded header, read without decoding
    /// its group elements and **without verifying it**: for finding ids. To use the structure,
    /// [`Header::peek_verified`].
    ///
    /// # Errors
    /// [`Error::Malformed`] when the prefix does not decode.
    pub fn peek(bytes: &[u8]) -> Result<(HeaderId, u64, &str), Error> {
        let prefix = Self::prefix(bytes)?;
        let (period, policy) = Ciphertext::peek(prefix.ciphertext).map_err(Malformed::Header)?;
        Ok((prefix.id, period, policy))
    }

    /// [`Header::peek`], and the tag verified over what was read: the warm path of a reader
    /// whose key for this id is cached (opened from a header that verified), so that a modified
    /// structure is refused without decoding group elements.
    ///
    /// # Errors
    /// [`Error::Malformed`] when the prefix does not decode, [`Error::Forged`] when the tag does
    /// not verify or the header is of version 1.
    pub fn peek_verified<'b>(
        bytes: &'b [u8],
        sealing: &SealingKey,
    ) -> Result<(HeaderId, u64, &'b str), Error> {
        let prefix = Self::prefix(bytes)?;
        let (period, policy) = Ciphertext::peek(prefix.ciphertext).map_err(Malformed::Header)?;
        let tag = prefix.tag.ok_or(Error::Forged)?;
        let granularity = granularity_of(prefix.granularity)?;
        let expected = header_tag(sealing, prefix.id, granularity, policy);
        if !tags_match(&expected, tag) {
            return Err(Error::Forged);
        }
        Ok((prefix.id, period, policy))
    }

    /// Decodes [`Header::to_bytes`]'s output (version 2, or version 1 to be refused when
    /// verified). Nothing is verified here: the ciphertext-update job, which holds no sealing
    /// key, decodes and re-encodes headers too.
    ///
    /// # Errors
    /// [`Error::Malformed`] when the bytes do not decode.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let prefix = Self::prefix(bytes)?;
        let granularity = granularity_of(prefix.granularity)?;
        let ciphertext = Ciphertext::from_bytes(prefix.ciphertext).map_err(Malformed::Header)?;
        Ok(Self {
            id: prefix.id,
            granularity,
            tag: prefix.tag.map(|tag| {
                let mut raw = [0u8; TAG];
                raw.copy_from_slice(tag);
                raw
            }),
            policy: ciphertext.policy().to_string(),
            ciphertext,
        })
    }

    /// The fields before the RS-HABE ciphertext, the version checked.
    fn prefix(bytes: &[u8]) -> Result<Prefix<'_>, Error> {
        let (&version, rest) = bytes.split_first().ok_or(Malformed::Truncated)?;
        let tag_len = match version {
            VERSION => TAG,
            VERSION_1 => 0,
            other => return Err(Malformed::UnknownVersion(other).into()),
        };
        if rest.len() < 17 + tag_len {
            return Err(Malformed::Truncated.into());
        }
        let (id, rest) = rest.split_at(16);
        let mut raw = [0u8; 16];
        raw.copy_from_slice(id);
        let (tag, ciphertext) = rest[1..].split_at(tag_len);
        Ok(Prefix {
            id: HeaderId(raw),
            granularity: rest[0],
            tag: (tag_len > 0).then_some(tag),
            ciphertext,
        })
    }
}

/// The fields of an encoded header before its RS-HABE ciphertext.
struct Prefix<'b> {
    id: HeaderId,
    granularity: u8,
    tag: Option<&'b [u8]>,
    ciphertext: &'b [u8],
}

/// The module docs' header tag.
fn header_tag(
    sealing: &SealingKey,
    id: HeaderId,
    granularity: Granularity,
    policy: &str,
) -> [u8; TAG] {
    sealing.tag(
        TAG_DOMAIN,
        &[
            &[id.as_bytes()],
            &[&[granularity_byte(granularity)]],
            &[policy.as_bytes()],
        ],
    )
}

fn granularity_byte(granularity: Granularity) -> u8 {
    match granularity {
        Granularity::Resource => 1,
        Granularity::Shared => 2,
    }
}

fn granularity_of(byte: u8) -> Result<Granularity, Error> {
    match byte {
        1 => Ok(Granularity::Resource),
        2 => Ok(Granularity::Shared),
        other => Err(Malformed::UnknownGranularity(other).into()),
    }
}

// === impl HeaderId ===

impl HeaderId {
    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// An id from its bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }
}

impl fmt::Display for HeaderId {
    /// Lower-case hex, as used in resource ids and logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for HeaderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HeaderKey(..)")
    }
}
