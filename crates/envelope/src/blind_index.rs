//! Blind-index tokens: equality search on sealed elements without revealing them to the server.
//!
//! `token = HMAC-SHA256(K_element, normalise(value))` with
//! `K_element = HKDF-SHA256(salt = "fhirseal blind index v1", ikm = gateway secret, info = path)`,
//! so equal values of one element give equal tokens, and tokens of different elements (or
//! gateways) are unrelated. Like any deterministic index it reveals equality between stored
//! values, and frequencies; the policy chooses it per element knowing that.

use std::fmt;

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;

/// How a value is normalised before it is tokenised, after FHIR's search matching rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValueKind<'a> {
    /// `string` search: NFC, case-folded, white space collapsed and trimmed.
    String,
    /// `token` search on a code or identifier: `system|value`, NFC, exact otherwise (codes are
    /// case-sensitive in most code systems).
    Token {
        /// The code system or identifier namespace, if any.
        system: Option<&'a str>,
    },
    /// Anything compared exactly (dates in their canonical form, references): NFC only.
    Exact,
}

/// Derives blind-index tokens from a gateway secret.
pub struct BlindIndex {
    secret: Zeroizing<[u8; 32]>,
}

impl BlindIndex {
    /// An index keyed by the gateway's 32-byte secret.
    pub fn new(secret: [u8; 32]) -> Self {
        Self {
            secret: Zeroizing::new(secret),
        }
    }

    /// The token of `value` for element `path`, as 64 lower-case hex digits (a FHIR `token`
    /// search value).
    pub fn token(&self, path: &str, kind: ValueKind<'_>, value: &str) -> String {
        let mut key = Zeroizing::new([0u8; 32]);
        // 32 bytes is within HKDF-SHA256's output limit, so `expand` cannot fail.
        let _ = Hkdf::<Sha256>::new(Some(b"fhirseal blind index v1"), &*self.secret)
            .expand(path.as_bytes(), &mut *key);
        // HMAC pads a short key with zeros to the hash's 64-byte block (RFC 2104 §2): padding it
        // here makes the construction infallible.
        let mut block = Zeroizing::new([0u8; 64]);
        block[..32].copy_from_slice(&*key);
        let mut mac = <Hmac<Sha256> as Mac>::new(&(*block).into());
        mac.update(normalise(kind, value).as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

fn normalise(kind: ValueKind<'_>, value: &str) -> String {
    let nfc: String = value.nfc().collect();
    match kind {
        ValueKind::String => nfc
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .flat_map(char::to_lowercase)
            .collect(),
        ValueKind::Token { system } => format!("{}|{nfc}", system.unwrap_or("")),
        ValueKind::Exact => nfc,
    }
}

impl fmt::Debug for BlindIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BlindIndex(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_match_after_normalisation_and_nothing_else_does() {
        let index = BlindIndex::new([7; 32]);
        let s = |v| index.token("Patient.name.family", ValueKind::String, v);
        assert_eq!(s("  Müller   Lüdenscheidt "), s("müller lüdenscheidt"));
        assert_eq!(s("Mu\u{308}ller"), s("Müller"), "NFC");
        assert_ne!(s("Muller"), s("Müller"));
        let t = |sys, v| index.token("Patient.identifier", ValueKind::Token { system: sys }, v);
        assert_eq!(
            t(Some("urn:oid:1.2.3"), "A12"),
            t(Some("urn:oid:1.2.3"), "A12")
        );
        assert_ne!(
            t(Some("urn:oid:1.2.3"), "A12"),
            t(Some("urn:oid:1.2.3"), "a12"),
            "codes are exact"
        );
        assert_ne!(t(Some("urn:oid:1.2.3"), "A12"), t(Some("urn:oid:9"), "A12"));
        assert_ne!(t(None, "a|b"), t(Some("a"), "b").replace('x', "y"));
        assert_eq!(s("x").len(), 64);
    }

    #[test]
    fn the_padded_key_is_rfc_2104_hmac() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mut block = [0u8; 64];
        block[..4].copy_from_slice(b"Jefe");
        let mut mac = <Hmac<Sha256> as Mac>::new(&block.into());
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
    fn tokens_are_keyed_per_element_and_per_gateway() {
        let a = BlindIndex::new([1; 32]);
        let b = BlindIndex::new([2; 32]);
        let v = "1970-01-01";
        assert_ne!(
            a.token("Patient.birthDate", ValueKind::Exact, v),
            a.token("Person.birthDate", ValueKind::Exact, v)
        );
        assert_ne!(
            a.token("Patient.birthDate", ValueKind::Exact, v),
            b.token("Patient.birthDate", ValueKind::Exact, v)
        );
        assert!(!format!("{a:?}").contains('1'));
    }
}
