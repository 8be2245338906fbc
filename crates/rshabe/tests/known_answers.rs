//! Known answers: a decryption key, ciphertexts and the data keys they must yield, generated once
//! from a fixed seed by format version 1 and checked in (`tests/data/known-answers-v1.txt`).
//!
//! Ciphertexts live for years on the upstream server; this test fails if a change to the
//! encoding or the algebra would leave stored ciphertexts unreadable. Regenerate only for a new
//! format version (`cargo test -p rshabe --test known_answers -- --ignored`), never to make a
//! failure go away.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rshabe::{
    AccessStructure, Attribute, Ciphertext, DecryptionKey, Params, RevocationList, UpdateMode,
};

const FILE: &str = "tests/data/known-answers-v1.txt";

#[test]
fn stored_ciphertexts_still_open() {
    let text = std::fs::read_to_string(FILE).unwrap();
    let field = |name: &str| -> Vec<u8> {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap();
        hex_decode(line.split_once(' ').unwrap().1)
    };
    let dk_bytes = field("decryption-key");
    let dk = DecryptionKey::from_bytes(&dk_bytes).unwrap();
    assert_eq!(*dk.to_bytes(), dk_bytes);
    for name in ["fresh", "updated"] {
        let ct_bytes = field(&format!("ciphertext-{name}"));
        let ct = Ciphertext::from_bytes(&ct_bytes).unwrap();
        assert_eq!(ct.to_bytes(), ct_bytes, "{name}");
        let key = rshabe::decrypt(&dk, &ct).unwrap();
        assert_eq!(
            key.as_bytes().to_vec(),
            field(&format!("data-key-{name}")),
            "{name}"
        );
    }
}

#[test]
#[ignore = "writes the known-answer file; run only for a new format version"]
fn regenerate_known_answers() {
    let mut rng = ChaCha20Rng::seed_from_u64(2026);
    let (pp, msk) = rshabe::setup(Params::new(4, 4).unwrap(), &mut rng);
    let attributes: Vec<Attribute> = ["role:physician", "dept:cardiology", "org:st-mary"]
        .iter()
        .map(|a| Attribute::new(a).unwrap())
        .collect();
    let sk = rshabe::keygen(&pp, &msk, 5, &attributes, &mut rng).unwrap();
    let ku = rshabe::key_update(&pp, &msk, 9, &RevocationList::new(), &mut rng).unwrap();
    let dk = rshabe::decrypt_key(&pp, &sk, &ku, &mut rng).unwrap();
    let policy = AccessStructure::parse(
        "2 of (role:physician, role:nurse, org:st-mary) and dept:cardiology",
    )
    .unwrap();
    let (fresh, fresh_key) = rshabe::encrypt(&pp, &policy, 9, &mut rng).unwrap();
    let (old, updated_key) = rshabe::encrypt(&pp, &policy, 0, &mut rng).unwrap();
    let mut updated = old;
    for period in [3, 6, 9] {
        updated = rshabe::ct_update(&pp, &updated, period, UpdateMode::Minimal, &mut rng).unwrap();
    }
    let lines = [
        "# rshabe wire format v1 known answers: seed 2026, L = 4, ℓ = 4, period 9".to_string(),
        format!("decryption-key {}", hex_encode(&dk.to_bytes())),
        format!("ciphertext-fresh {}", hex_encode(&fresh.to_bytes())),
        format!("data-key-fresh {}", hex_encode(fresh_key.as_bytes())),
        format!("ciphertext-updated {}", hex_encode(&updated.to_bytes())),
        format!("data-key-updated {}", hex_encode(updated_key.as_bytes())),
    ];
    std::fs::write(FILE, lines.join("\n") + "\n").unwrap();
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
