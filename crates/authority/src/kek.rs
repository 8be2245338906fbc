//! The key-encryption key (KEK) and the records sealed under it with AES-256-GCM.
//!
//! Sealed record: `version (1 byte = 1) ‖ nonce (12 bytes, random) ‖ AES-256-GCM(ciphertext ‖ tag)`,
//! with associated data naming what the record is (`fhirseal authority v1 ‖ what`), so a sealed
//! user key cannot be passed off as the master secret or as another user's key.

use std::fmt;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::Error;

/// The environment variable that may hold the KEK as 64 hex digits.
pub const KEK_ENV: &str = "FHIRSEAL_AUTHORITY_KEK";

const VERSION: u8 = 1;
const NONCE: usize = 12;
const AAD_PREFIX: &[u8] = b"fhirseal authority v1\0";

/// A 256-bit key-encryption key. Zeroized on drop; `Debug` prints nothing of it.
pub struct Kek(Zeroizing<[u8; 32]>);

impl Kek {
    /// A fresh random key.
    pub fn generate(rng: &mut (impl CryptoRng + RngCore)) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut *key);
        Self(key)
    }

    /// Parses 64 hex digits (surrounding white space ignored). `source_name` names where the text
    /// came from, for the error.
    pub fn from_hex(text: &str, source_name: &str) -> Result<Self, Error> {
        let text = text.trim();
        let bad = |reason: &str| Error::Kek {
            source_name: source_name.to_string(),
            reason: reason.to_string(),
        };
        if text.len() != 64 {
            return Err(bad("expected 64 hex digits (32 bytes)"));
        }
        let mut key = Zeroizing::new([0u8; 32]);
        for (i, byte) in key.iter_mut().enumerate() {
            let pair = text.get(2 * i..2 * i + 2).ok_or_else(|| bad("not hex"))?;
            *byte = u8::from_str_radix(pair, 16)
                .map_err(|_| bad("expected 64 hex digits (32 bytes)"))?;
        }
        Ok(Self(key))
    }

    /// Reads a KEK file (64 hex digits).
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| Error::Kek {
            source_name: path.display().to_string(),
            reason: source.to_string(),
        })?);
        Self::from_hex(&text, &path.display().to_string())
    }

    /// Writes a new KEK file readable by its owner only; refuses to overwrite one.
    pub fn write_new_file(&self, path: &Path) -> Result<(), Error> {
        use std::io::Write;
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(io)?;
        let hex = Zeroizing::new(self.to_hex());
        file.write_all(format!("{}\n", hex.as_str()).as_bytes())
            .map_err(io)
    }

    fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Seals `plaintext` as the record `what`.
    pub fn seal(
        &self,
        what: &str,
        plaintext: &[u8],
        rng: &mut (impl CryptoRng + RngCore),
    ) -> Vec<u8> {
        let mut nonce = [0u8; NONCE];
        rng.fill_bytes(&mut nonce);
        let aad = aad(what);
        let cipher = self.cipher();
        let sealed = cipher.encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        );
        let mut out = Vec::with_capacity(1 + NONCE + plaintext.len() + 16);
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        // AES-GCM encryption of an in-memory buffer under 64 GiB cannot fail.
        out.extend_from_slice(&sealed.unwrap_or_default());
        out
    }

    /// Opens a record sealed as `what`; any failure is [`Error::Unseal`].
    pub fn open(&self, what: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        let fail = || Error::Unseal {
            what: what.to_string(),
        };
        let (version, rest) = sealed.split_first().ok_or_else(fail)?;
        if *version != VERSION || rest.len() < NONCE + 16 {
            return Err(fail());
        }
        let (nonce, body) = rest.split_at(NONCE);
        let nonce: [u8; NONCE] = nonce.try_into().map_err(|_| fail())?;
        let aad = aad(what);
        self.cipher()
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: body,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| fail())
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&(*self.0).into())
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Kek(..)")
    }
}

fn aad(what: &str) -> Vec<u8> {
    [AAD_PREFIX, what.as_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use rand_core::OsRng;

    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let kek = Kek::generate(&mut OsRng);
        let sealed = kek.seal("master secret", b"secret", &mut OsRng);
        assert_eq!(&*kek.open("master secret", &sealed).unwrap(), b"secret");
        assert!(
            kek.open("user key Practitioner/1", &sealed).is_err(),
            "bound to its name"
        );
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 1;
            assert!(kek.open("master secret", &t).is_err(), "byte {i}");
        }
        assert!(
            kek.open("master secret", &sealed[..sealed.len() - 1])
                .is_err()
        );
        let other = Kek::generate(&mut OsRng);
        assert!(matches!(
            other.open("master secret", &sealed),
            Err(Error::Unseal { .. })
        ));
    }

    #[test]
    fn hex_parsing_refuses_bad_keys() {
        let good = "00".repeat(32);
        assert!(Kek::from_hex(&format!(" {good}\n"), "t").is_ok());
        for bad in ["", "zz", &"0".repeat(63), &"g".repeat(64), &"é".repeat(32)] {
            assert!(
                matches!(Kek::from_hex(bad, "t"), Err(Error::Kek { .. })),
                "{bad:?}"
            );
        }
        assert!(!format!("{:?}", Kek::from_hex(&good, "t").unwrap()).contains("00"));
    }
}
