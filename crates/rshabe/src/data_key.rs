//! The 32-byte data key that a ciphertext carries.

use std::fmt;

use blstrs::{Compress, Gt};
use group::Group;
use hkdf::Hkdf;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::Error;

/// HKDF salt: names the scheme and its version.
const SALT: &[u8] = b"fhirseal rshabe v1";
/// HKDF info: names what the output is for.
const INFO: &[u8] = b"data key";

/// A 32-byte symmetric key (for AES-256-GCM), `HKDF-SHA256(m)` of the ciphertext's random GT
/// message `m`. Zeroized on drop; compared in constant time; `Debug` prints no key material.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DataKey([u8; 32]);

impl DataKey {
    /// RS-HABE.md §2.1 rule 4: `DEK = KDF(m)` over the 288-byte compressed encoding of `m`.
    pub(crate) fn derive(m: &Gt) -> Result<Self, Error> {
        // blstrs' `compress` panics on the identity (its c1 is zero); callers never pass it, and
        // this check keeps that a local invariant rather than a remote one.
        if bool::from(m.is_identity()) {
            return Err(Error::Decryption);
        }
        let mut ikm = zeroize::Zeroizing::new(Vec::with_capacity(288));
        m.write_compressed(&mut *ikm)
            .map_err(|_| Error::Decryption)?;
        let mut key = [0u8; 32];
        Hkdf::<Sha256>::new(Some(SALT), &ikm)
            .expand(INFO, &mut key)
            .map_err(|_| Error::Decryption)?;
        Ok(Self(key))
    }

    /// The key bytes, for the AEAD that uses them.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl PartialEq for DataKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for DataKey {}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}
