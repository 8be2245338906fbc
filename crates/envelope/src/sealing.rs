//! The sealing key: the trusted zone's symmetric secret that makes sealed data authentic.
//!
//! RS-HABE encryption is public-key: anyone holding the public parameters (the upstream's
//! operator included) can make a header, and envelopes under it, that open to values of their
//! choosing. Every gateway replica and the authority hold one more secret, the sealing key, and
//! everything FHIRseal writes depends on it twice (see `docs/authenticity.md`):
//!
//! - `mac_key = HKDF-SHA256(salt = "fhirseal sealing v2", ikm = sealing key, info = "mac")`
//!   keys the HMAC-SHA256 tags of headers and envelopes;
//! - `header_salt = HKDF-SHA256(salt = "fhirseal sealing v2", ikm = sealing key, info = "header
//!   salt")` is mixed into every header key, so that the key an RS-HABE ciphertext made outside
//!   the trusted zone decrypts to wraps nothing the trusted zone wrapped.

use std::fmt;

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use rand_core::{CryptoRng, RngCore};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// The trusted zone's 32-byte sealing secret and the two keys derived from it. Zeroized on
/// drop; `Debug` prints nothing of it.
#[derive(Clone)]
pub struct SealingKey {
    /// HMAC-SHA256 keyed by `mac_key` and nothing hashed yet: each tag starts from a copy, so the
    /// key's two padded blocks are hashed once per key rather than twice per tag. Its two SHA-256
    /// states are all there is of `mac_key` here; `sha2`'s `zeroize` feature wipes them when they
    /// drop, this one and every copy (`the_keyed_mac_is_wiped_on_drop`).
    keyed: Hmac<Sha256>,
    header_salt: [u8; 32],
}

impl SealingKey {
    /// The keys derived from `secret` (32 random bytes: the authority's named secret that every
    /// gateway replica shares).
    pub fn new(secret: &[u8; 32]) -> Self {
        let kdf = Hkdf::<Sha256>::new(Some(SALT), secret);
        let mut mac_key = Zeroizing::new([0u8; 32]);
        let mut header_salt = [0u8; 32];
        // 32 bytes is within HKDF-SHA256's output limit (255 × 32), so `expand` cannot fail.
        let _ = kdf.expand(MAC_INFO, &mut *mac_key);
        let _ = kdf.expand(HEADER_SALT_INFO, &mut header_salt);
        Self {
            keyed: hmac_keyed_by(&mac_key),
            header_salt,
        }
    }

    /// A fresh random sealing key (for tests and one-process tools; a gateway takes its key
    /// from the authority so that every replica shares it).
    pub fn generate(rng: &mut (impl CryptoRng + RngCore)) -> Self {
        let mut secret = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut *secret);
        Self::new(&secret)
    }

    /// `HMAC-SHA256(mac_key, domain ‖ parts…)`, every part length-prefixed (big-endian `u32`). A
    /// part is given as the pieces it is made of, hashed in order as one: the caller need not
    /// copy them together.
    pub(crate) fn tag(&self, domain: &[u8], parts: &[&[&[u8]]]) -> [u8; 32] {
        let mut mac = self.keyed.clone();
        mac.update(domain);
        for pieces in parts {
            let len: usize = pieces.iter().map(|piece| piece.len()).sum();
            mac.update(&(len as u32).to_be_bytes());
            for piece in *pieces {
                mac.update(piece);
            }
        }
        mac.finalize().into_bytes().into()
    }

    /// `HKDF-SHA256(salt = header_salt, ikm = data_key, info = domain ‖ header id)`.
    pub(crate) fn header_key(&self, data_key: &[u8; 32], header_id: &[u8; 16]) -> [u8; 32] {
        let kdf = Hkdf::<Sha256>::new(Some(&self.header_salt), data_key);
        let mut info = HEADER_KEY_INFO.to_vec();
        info.extend_from_slice(header_id);
        let mut out = [0u8; 32];
        let _ = kdf.expand(&info, &mut out);
        out
    }
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealingKey(..)")
    }
}

impl Drop for SealingKey {
    fn drop(&mut self) {
        self.header_salt.zeroize();
        // `keyed` wipes itself as it drops, after this.
    }
}

impl ZeroizeOnDrop for SealingKey {}

/// HMAC-SHA256 keyed by the 32-byte `key`, nothing hashed yet. HMAC pads a short key with zeros
/// to the hash's 64-byte block (RFC 2104 §2): padding it here makes the construction infallible.
pub(crate) fn hmac_keyed_by(key: &[u8; 32]) -> Hmac<Sha256> {
    let mut block = Zeroizing::new([0u8; 64]);
    block[..32].copy_from_slice(key);
    <Hmac<Sha256> as KeyInit>::new((&*block).into())
}

/// Whether `tag` (at least 16 bytes) equals the first `tag.len()` bytes of `expected`, in
/// constant time.
pub(crate) fn tags_match(expected: &[u8; 32], tag: &[u8]) -> bool {
    (16..=expected.len()).contains(&tag.len()) && bool::from(expected[..tag.len()].ct_eq(tag))
}

/// The HKDF salt of both derivations from the sealing secret.
const SALT: &[u8] = b"fhirseal sealing v2";
/// HKDF info of the MAC key.
const MAC_INFO: &[u8] = b"mac";
/// HKDF info of the header-key salt.
const HEADER_SALT_INFO: &[u8] = b"header salt";
/// HKDF info prefix of a header key (the header id follows).
const HEADER_KEY_INFO: &[u8] = b"fhirseal header key v2";

#[cfg(test)]
mod tests {
    use super::*;

    /// `mac_key` as the module docs define it, for checking against.
    fn mac_key(secret: &[u8; 32]) -> [u8; 32] {
        let mut key = [0u8; 32];
        Hkdf::<Sha256>::new(Some(SALT), secret)
            .expand(MAC_INFO, &mut key)
            .unwrap();
        key
    }

    #[test]
    fn sub_keys_differ_from_each_other_and_between_secrets() {
        let a = SealingKey::new(&[1u8; 32]);
        let b = SealingKey::new(&[2u8; 32]);
        assert_ne!(mac_key(&[1u8; 32]), a.header_salt);
        assert_ne!(mac_key(&[1u8; 32]), mac_key(&[2u8; 32]));
        assert_ne!(a.header_salt, b.header_salt);
        assert_ne!(a.tag(b"d", &[&[b"x"]]), b.tag(b"d", &[&[b"x"]]));
        // Length prefixes: moving bytes between parts changes the tag.
        assert_ne!(
            a.tag(b"d", &[&[b"ab"], &[b"c"]]),
            a.tag(b"d", &[&[b"a"], &[b"bc"]])
        );
        assert_ne!(
            a.header_key(&[0u8; 32], &[0u8; 16]),
            a.header_key(&[0u8; 32], &[1u8; 16])
        );
        assert_eq!(format!("{a:?}"), "SealingKey(..)");
    }

    #[test]
    fn the_tag_is_hmac_over_the_length_prefixed_parts() {
        let secret = [9u8; 32];
        let key = SealingKey::new(&secret);
        // The construction written out: a MAC keyed afresh, each part whole.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&mac_key(&secret)).unwrap();
        mac.update(b"domain");
        for part in [&b"first part"[..], b"", b"third"] {
            mac.update(&(part.len() as u32).to_be_bytes());
            mac.update(part);
        }
        let expected: [u8; 32] = mac.finalize().into_bytes().into();
        // A part's pieces are hashed as the part they make up, however it is cut.
        assert_eq!(
            key.tag(b"domain", &[&[b"first part"], &[], &[b"third"]]),
            expected
        );
        assert_eq!(
            key.tag(
                b"domain",
                &[&[b"fir", b"", b"st part"], &[b""], &[b"th", b"ird"]]
            ),
            expected
        );
        // The keyed state is copied, never advanced: the same tag twice, and from a clone.
        let copy = key.clone();
        let again = |key: &SealingKey| key.tag(b"domain", &[&[b"first part"], &[], &[b"third"]]);
        assert_eq!(again(&key), expected);
        assert_eq!(again(&copy), expected);
        assert_eq!(again(&key), expected);
    }

    #[test]
    fn the_keyed_mac_is_wiped_on_drop() {
        // What `SealingKey::keyed` holds of the key: the two SHA-256 states of `HmacCore`. They
        // wipe themselves only with `sha2`'s `zeroize` feature (the workspace turns it on); this
        // does not compile without it.
        fn wiped_on_drop<T: ZeroizeOnDrop>() {}
        wiped_on_drop::<<Sha256 as hmac::EagerHash>::Core>();
        wiped_on_drop::<Sha256>();
        wiped_on_drop::<SealingKey>();
    }

    #[test]
    fn truncated_tags_compare_on_their_prefix_only() {
        let full = [7u8; 32];
        assert!(tags_match(&full, &[7u8; 16]));
        assert!(!tags_match(&full, &[[7u8; 15].as_slice(), &[8]].concat()));
        assert!(!tags_match(&full, &[7u8; 33]));
        assert!(!tags_match(&full, &[]));
        assert!(!tags_match(&full, &[7u8; 15]));
    }
}
