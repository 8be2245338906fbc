//! Blind-index tokens: equality search on sealed elements without revealing them to the server.
//!
//! `token = truncate_bits(HMAC-SHA256(K_index, normalised value))` with
//! `K_index = HKDF-SHA256(salt = "fhirseal blind index v2", ikm = gateway secret, info = index)`,
//! where `index` names one element and one transform of its values
//! (`Patient.name.family/prefix`). Equal normalised values of one index give equal tokens; tokens
//! of different indexes (or gateways) are unrelated. Tokens are truncated to a chosen number of
//! bits so that unequal values collide on purpose: a token then stands for many values, and the
//! gateway drops the false positives after opening the candidates. Like any deterministic index
//! it still reveals equality between stored values' tokens, and their frequencies; what each
//! transform reveals is written in `docs/search.md`. How values are normalised is the caller's
//! (`fhirseal_seal::index`): this module only keys, hashes and truncates.
//!
//! The secret has generations (`docs/search.md`, "Rotating the secret"): each [`BlindIndex`]
//! knows which one it is keyed by, so that the tokens of two generations can live side by side
//! upstream while a rotation re-indexes, each under a system of its own.

use std::fmt;
use std::num::NonZeroU32;

use hkdf::Hkdf;
use hmac::Mac;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::sealing::hmac_keyed_by;

/// HKDF's salt for every index key.
const SALT: &[u8] = b"fhirseal blind index v2";

/// The fewest bits a token may keep: below this, a token says nearly nothing and every search
/// fetches most of the resources.
pub const MIN_TOKEN_BITS: u8 = 4;
/// The most bits a token may keep.
pub const MAX_TOKEN_BITS: u8 = 64;

/// Derives blind-index tokens from one generation of a gateway secret.
pub struct BlindIndex {
    /// HKDF-SHA256's extract step over the secret, done once: every index's key is expanded
    /// from it. It holds the pseudorandom key as a keyed HMAC, whose SHA-256 states `sha2`'s
    /// `zeroize` feature wipes on drop (as `SealingKey`'s).
    kdf: Hkdf<Sha256>,
    generation: NonZeroU32,
}

impl BlindIndex {
    /// An index keyed by the gateway's 32-byte secret, generation 1 (the first).
    pub fn new(secret: [u8; 32]) -> Self {
        Self::of_generation(secret, NonZeroU32::MIN)
    }

    /// An index keyed by generation `generation` of the gateway's secret.
    pub fn of_generation(secret: [u8; 32], generation: NonZeroU32) -> Self {
        let secret = Zeroizing::new(secret);
        Self {
            kdf: Hkdf::<Sha256>::new(Some(SALT), &*secret),
            generation,
        }
    }

    /// Which generation of the secret this index is keyed by.
    pub fn generation(&self) -> NonZeroU32 {
        self.generation
    }

    /// The token of the already normalised `value` in index `index`, truncated to `bits`
    /// (clamped to [`MIN_TOKEN_BITS`]..=[`MAX_TOKEN_BITS`]): the top `bits` bits of the MAC, as
    /// `ceil(bits / 4)` lower-case hex digits (a FHIR `code`).
    pub fn token(&self, index: &str, value: &str, bits: u8) -> String {
        let bits = bits.clamp(MIN_TOKEN_BITS, MAX_TOKEN_BITS);
        let mac = self.mac(index, value.as_bytes());
        let mut top = [0u8; 8];
        top.copy_from_slice(&mac[..8]);
        let top = u64::from_be_bytes(top) >> (64 - u32::from(bits));
        let digits = usize::from(bits).div_ceil(4);
        format!("{top:0digits$x}")
    }

    /// HMAC-SHA256 of `data` under the key of `index`.
    fn mac(&self, index: &str, data: &[u8]) -> [u8; 32] {
        let mut key = Zeroizing::new([0u8; 32]);
        // 32 bytes is within HKDF-SHA256's output limit, so `expand` cannot fail.
        let _ = self.kdf.expand(index.as_bytes(), &mut *key);
        let mut mac = hmac_keyed_by(&key);
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// A MAC under a key of its own (`purpose` names it, apart from every index), for the
    /// gateway's other keyed checks on search (its signed paging cursors).
    pub fn purpose_mac(&self, purpose: &str, data: &[u8]) -> [u8; 32] {
        self.mac(&format!("\u{0}purpose/{purpose}"), data)
    }
}

impl fmt::Debug for BlindIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlindIndex(generation {}, ..)", self.generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_match_and_tokens_are_truncated() {
        let index = BlindIndex::new([7; 32]);
        let t = |v, bits| index.token("Patient.name.family/prefix", v, bits);
        assert_eq!(t("smith", 16), t("smith", 16));
        assert_ne!(t("smith", 64), t("smyth", 64));
        assert_eq!(t("smith", 16).len(), 4);
        assert_eq!(t("smith", 13).len(), 4);
        assert_eq!(t("smith", 64).len(), 16);
        // Truncation keeps the top bits: a 16-bit token is the start of the 64-bit one.
        assert!(t("smith", 64).starts_with(&t("smith", 16)));
        // 13 bits fit in four hex digits, the first at most 1.
        assert!(u64::from_str_radix(&t("smith", 13), 16).unwrap() < 1 << 13);
        // Out-of-range widths are clamped, never a panic.
        assert_eq!(t("smith", 0).len(), 1);
        assert_eq!(t("smith", 200).len(), 16);
    }

    #[test]
    fn tokens_are_the_documented_construction() {
        // Known answers from an independent implementation (Python's `hmac` and `hashlib`:
        // HKDF-SHA256 of the module docs, then HMAC-SHA256): stored tokens must keep matching
        // whatever the code computing them becomes.
        let index = BlindIndex::new([7; 32]);
        assert_eq!(
            index.token("Patient.name.family/prefix", "smith", 64),
            "44066058bf60e44b"
        );
        assert_eq!(
            index.token("Patient.birthDate/day", "1970-01-01", 16),
            "0de3"
        );
        let cursor: String = index
            .purpose_mac("cursor", b"page 2")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            cursor,
            "477b7325559745ce542b6fbc489d049201820a41de61be0941afb0f759de6d70"
        );
    }

    #[test]
    fn truncated_tokens_collide_at_the_planned_rate() {
        let index = BlindIndex::new([3; 32]);
        let values: Vec<String> = (0..4096).map(|i| format!("value {i}")).collect();
        let tokens: std::collections::HashSet<String> = values
            .iter()
            .map(|v| index.token("x/exact", v, 8))
            .collect();
        // 4096 values into 256 buckets: every bucket is hit.
        assert_eq!(tokens.len(), 256);
    }

    #[test]
    fn the_padded_key_is_rfc_2104_hmac() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?"; the short key
        // padded with zeros, as `hmac_keyed_by` pads every key to the block.
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let mut mac = hmac_keyed_by(&key);
        mac.update(b"what do ya want for nothing?");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn tokens_are_keyed_per_index_and_per_gateway() {
        let a = BlindIndex::new([1; 32]);
        let b = BlindIndex::new([2; 32]);
        let v = "1970-01-01";
        assert_ne!(
            a.token("Patient.birthDate/day", v, 64),
            a.token("Person.birthDate/day", v, 64)
        );
        assert_ne!(
            a.token("Patient.birthDate/day", v, 64),
            b.token("Patient.birthDate/day", v, 64)
        );
        assert_ne!(a.purpose_mac("cursor", b"x"), a.purpose_mac("other", b"x"));
        // The generation shows, never the secret.
        assert_eq!(format!("{a:?}"), "BlindIndex(generation 1, ..)");
        let later = BlindIndex::of_generation([7; 32], NonZeroU32::new(3).unwrap());
        assert_eq!(format!("{later:?}"), "BlindIndex(generation 3, ..)");
        assert_eq!(later.generation().get(), 3);
    }
}
