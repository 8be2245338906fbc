//! RS-HABE headers: the attribute-based half of the hybrid encryption.

use std::fmt;

use rand_core::{CryptoRng, RngCore};
use rshabe::{AccessStructure, Ciphertext, DataKey, DecryptionKey, PublicParams, UpdateMode};

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

/// An RS-HABE ciphertext whose data key protects resource keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    id: HeaderId,
    granularity: Granularity,
    ciphertext: Ciphertext,
}

/// A header's data key. Zeroized on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct HeaderKey(pub(crate) DataKey);

const VERSION: u8 = 1;

// === impl Header ===

impl Header {
    /// A new header for `policy` at `period`, and its key.
    pub fn new(
        pp: &PublicParams,
        policy: &AccessStructure,
        period: u64,
        granularity: Granularity,
        rng: &mut (impl CryptoRng + RngCore),
    ) -> Result<(Self, HeaderKey), Error> {
        let (ciphertext, key) = rshabe::encrypt(pp, policy, period, rng)?;
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        let header = Self {
            id: HeaderId(id),
            granularity,
            ciphertext,
        };
        Ok((header, HeaderKey(key)))
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

    /// Opens the header key with a decryption key whose attributes satisfy its structure.
    pub fn open(&self, key: &DecryptionKey) -> Result<HeaderKey, Error> {
        Ok(HeaderKey(rshabe::decrypt(key, &self.ciphertext)?))
    }

    /// The same header moved to a later period (public; same id, same key).
    pub fn update(
        &self,
        pp: &PublicParams,
        period: u64,
        mode: UpdateMode,
        rng: &mut (impl CryptoRng + RngCore),
    ) -> Result<Self, Error> {
        Ok(Self {
            ciphertext: rshabe::ct_update(pp, &self.ciphertext, period, mode, rng)?,
            ..self.clone()
        })
    }

    /// `version (1) ‖ id (16) ‖ granularity (1: resource, 2: shared) ‖ RS-HABE ciphertext`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        out.extend_from_slice(&self.id.0);
        out.push(match self.granularity {
            Granularity::Resource => 1,
            Granularity::Shared => 2,
        });
        out.extend_from_slice(&self.ciphertext.to_bytes());
        out
    }

    /// The id and the canonical access structure of an encoded header, read without decoding its
    /// group elements. For the warm path only: a key already opened from the genuine header
    /// (cached by id) then opens envelopes bound to this structure, and a forged header cannot
    /// make an envelope open because the structure is part of each envelope's associated data.
    /// Returns the id, the period and the structure.
    pub fn peek(bytes: &[u8]) -> Result<(HeaderId, u64, &str), Error> {
        let (id, _, ciphertext) = Self::prefix(bytes)?;
        let (period, policy) = Ciphertext::peek(ciphertext).map_err(Malformed::Header)?;
        Ok((id, period, policy))
    }

    /// Decodes [`Header::to_bytes`]'s output.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let (id, granularity, ciphertext) = Self::prefix(bytes)?;
        let granularity = match granularity {
            1 => Granularity::Resource,
            2 => Granularity::Shared,
            other => return Err(Malformed::UnknownGranularity(other).into()),
        };
        let ciphertext = Ciphertext::from_bytes(ciphertext).map_err(Malformed::Header)?;
        Ok(Self {
            id,
            granularity,
            ciphertext,
        })
    }

    /// `version ‖ id ‖ granularity byte ‖ rest`, the version checked.
    fn prefix(bytes: &[u8]) -> Result<(HeaderId, u8, &[u8]), Error> {
        let (&version, rest) = bytes.split_first().ok_or(Malformed::Truncated)?;
        if version != VERSION {
            return Err(Malformed::UnknownVersion(version).into());
        }
        if rest.len() < 17 {
            return Err(Malformed::Truncated.into());
        }
        let (id, rest) = rest.split_at(16);
        let mut raw = [0u8; 16];
        raw.copy_from_slice(id);
        Ok((HeaderId(raw), rest[0], &rest[1..]))
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
