//! The wire format: round trips, and refusal of truncated, extended, bit-flipped, off-subgroup and
//! non-canonical input, for every decoder.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use blstrs::{G1Affine, G2Affine};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use rshabe::{
    AccessStructure, Attribute, Ciphertext, DecodeError, DecryptionKey, Error, KeyUpdate,
    MasterSecret, Params, PublicParams, RevocationList, SecretKey, UpdateMode,
};

type Decoder = fn(&[u8]) -> Result<Vec<u8>, Error>;

/// Each object kind's encoding, with a decoder that re-encodes what it decoded.
fn corpus() -> Vec<(&'static str, Vec<u8>, Decoder)> {
    let mut rng = ChaCha20Rng::seed_from_u64(99);
    let params = Params::new(4, 3).unwrap();
    let (pp, msk) = rshabe::setup(params, &mut rng);
    let attrs: Vec<Attribute> = ["a", "é", "dept:\"x\" y"]
        .iter()
        .map(|n| Attribute::new(n).unwrap())
        .collect();
    let sk = rshabe::keygen(&pp, &msk, 3, &attrs, &mut rng).unwrap();
    let mut rl = RevocationList::new();
    rl.revoke(params, 9, 0).unwrap();
    let ku = rshabe::key_update(&pp, &msk, 2, &rl, &mut rng).unwrap();
    let dk = rshabe::decrypt_key(&pp, &sk, &ku, &mut rng).unwrap();
    let policy =
        AccessStructure::parse("a and (\"é\" or 2 of (b, c, \"dept:\\\"x\\\" y\"))").unwrap();
    let (ct, _) = rshabe::encrypt(&pp, &policy, 1, &mut rng).unwrap();
    let ct = rshabe::ct_update(&pp, &ct, 2, UpdateMode::Minimal, &mut rng).unwrap();
    vec![
        ("public parameters", pp.to_bytes(), |b| {
            PublicParams::from_bytes(b).map(|x| x.to_bytes())
        }),
        ("master secret", msk.to_bytes().to_vec(), |b| {
            MasterSecret::from_bytes(b).map(|x| x.to_bytes().to_vec())
        }),
        ("secret key", sk.to_bytes().to_vec(), |b| {
            SecretKey::from_bytes(b).map(|x| x.to_bytes().to_vec())
        }),
        ("key update", ku.to_bytes(), |b| {
            KeyUpdate::from_bytes(b).map(|x| x.to_bytes())
        }),
        ("decryption key", dk.to_bytes().to_vec(), |b| {
            DecryptionKey::from_bytes(b).map(|x| x.to_bytes().to_vec())
        }),
        ("ciphertext", ct.to_bytes(), |b| {
            Ciphertext::from_bytes(b).map(|x| x.to_bytes())
        }),
    ]
}

#[test]
fn every_object_round_trips_canonically() {
    for (name, bytes, decode) in corpus() {
        assert_eq!(decode(&bytes).unwrap(), bytes, "{name}");
    }
}

#[test]
fn decoded_objects_work() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let params = Params::new(3, 3).unwrap();
    let (pp, msk) = rshabe::setup(params, &mut rng);
    let pp = PublicParams::from_bytes(&pp.to_bytes()).unwrap();
    let msk = MasterSecret::from_bytes(&msk.to_bytes()).unwrap();
    let sk = rshabe::keygen(&pp, &msk, 1, &[Attribute::new("a").unwrap()], &mut rng).unwrap();
    let sk = SecretKey::from_bytes(&sk.to_bytes()).unwrap();
    let ku = rshabe::key_update(&pp, &msk, 4, &RevocationList::new(), &mut rng).unwrap();
    let ku = KeyUpdate::from_bytes(&ku.to_bytes()).unwrap();
    let dk = rshabe::decrypt_key(&pp, &sk, &ku, &mut rng).unwrap();
    let dk = DecryptionKey::from_bytes(&dk.to_bytes()).unwrap();
    let (ct, key) =
        rshabe::encrypt(&pp, &AccessStructure::parse("a").unwrap(), 3, &mut rng).unwrap();
    let ct = Ciphertext::from_bytes(&ct.to_bytes()).unwrap();
    assert_eq!(rshabe::decrypt(&dk, &ct).unwrap(), key);
}

#[test]
fn truncated_input_is_refused() {
    for (name, bytes, decode) in corpus() {
        // Every length up to the first group element, then a spread of lengths through the rest.
        let lengths = (0..64)
            .chain((64..bytes.len()).step_by(13))
            .chain([bytes.len() - 1]);
        for len in lengths.filter(|&l| l < bytes.len()) {
            assert!(decode(&bytes[..len]).is_err(), "{name} cut at {len}");
        }
    }
}

#[test]
fn extended_input_is_refused() {
    for (name, mut bytes, decode) in corpus() {
        bytes.push(0);
        assert_eq!(
            decode(&bytes).err(),
            Some(Error::Decode(DecodeError::TrailingBytes(1))),
            "{name}"
        );
    }
}

#[test]
fn unknown_versions_and_other_kinds_are_refused() {
    let all = corpus();
    for (name, bytes, decode) in &all {
        let mut unknown = bytes.clone();
        unknown[0] = 9;
        assert_eq!(
            decode(&unknown).err(),
            Some(Error::Decode(DecodeError::UnknownVersion(9))),
            "{name}"
        );
        for (other, other_bytes, _) in &all {
            if other != name {
                assert!(
                    matches!(
                        decode(other_bytes),
                        Err(Error::Decode(DecodeError::WrongKind { .. }))
                    ),
                    "{other} read as {name}"
                );
            }
        }
    }
}

/// Every single-bit flip is refused or decodes to another object; never the same one, never a
/// panic. Flips inside group elements are always refused: the result is off the curve or off the
/// subgroup.
#[test]
fn bit_flips_never_pass_unnoticed() {
    for (name, bytes, decode) in corpus() {
        for i in 0..bytes.len() {
            {
                let bit = i % 8;
                let mut flipped = bytes.clone();
                flipped[i] ^= 1 << bit;
                if let Ok(reencoded) = decode(&flipped) {
                    assert_ne!(reencoded, bytes, "{name}: byte {i} bit {bit}");
                    assert_eq!(
                        reencoded, flipped,
                        "{name}: byte {i} bit {bit} is not canonical"
                    );
                }
            }
        }
    }
}

/// A secret key of format version 1 (one randomiser for the whole path: the layout the audit of
/// 2026-12-02 broke) is refused by name, so the authority can say what to do; every other object
/// stays at version 1 and a version 2 of those is unknown.
#[test]
fn secret_keys_of_the_retired_layout_are_refused_by_name() {
    for (name, bytes, decode) in corpus() {
        let (mut v1, mut v2) = (bytes.clone(), bytes.clone());
        v1[0] = 1;
        v2[0] = 2;
        if name == "secret key" {
            assert_eq!(bytes[0], rshabe::SECRET_KEY_VERSION);
            assert_eq!(
                decode(&v1).err(),
                Some(Error::Decode(DecodeError::RetiredKeyLayout))
            );
        } else {
            assert_eq!(bytes[0], rshabe::WIRE_VERSION, "{name}");
            assert_eq!(
                decode(&v2).err(),
                Some(Error::Decode(DecodeError::UnknownVersion(2))),
                "{name}"
            );
        }
    }
}

/// The identity point never occurs in a genuine object (only with negligible probability), and
/// an all-identity ciphertext would "decrypt" to a data key its writer chose: every decoder
/// refuses it wherever a group element stands.
#[test]
fn identity_points_are_refused() {
    use group::prime::PrimeCurveAffine;
    let id1 = G1Affine::identity().to_compressed();
    let id2 = G2Affine::identity().to_compressed();
    for (name, bytes, decode) in corpus() {
        let mut tried = 0;
        for at in 4..bytes.len() {
            let fits = |n: usize| bytes.len() >= at + n;
            let g1 = fits(48)
                && bool::from(
                    G1Affine::from_compressed(&bytes[at..at + 48].try_into().unwrap()).is_some(),
                );
            let g2 = fits(96)
                && bool::from(
                    G2Affine::from_compressed(&bytes[at..at + 96].try_into().unwrap()).is_some(),
                );
            let mut forged = bytes.clone();
            if g1 {
                forged[at..at + 48].copy_from_slice(&id1);
            } else if g2 {
                forged[at..at + 96].copy_from_slice(&id2);
            } else {
                continue;
            }
            tried += 1;
            assert_eq!(
                decode(&forged).err(),
                Some(Error::Decode(DecodeError::IdentityPoint)),
                "{name} at {at}"
            );
        }
        if name != "master secret" {
            assert!(tried > 0, "{name}");
        }
    }
}

#[test]
fn points_off_the_subgroup_are_refused() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let (bad_g1, bad_g2) = (off_subgroup_g1(&mut rng), off_subgroup_g2(&mut rng));
    for (name, bytes, decode) in corpus() {
        let mut tried = 0;
        for at in 4..bytes.len() {
            let g1 = bytes.len() >= at + 48
                && G1Affine::from_compressed(&bytes[at..at + 48].try_into().unwrap())
                    .is_some()
                    .into();
            let g2 = bytes.len() >= at + 96
                && G2Affine::from_compressed(&bytes[at..at + 96].try_into().unwrap())
                    .is_some()
                    .into();
            let mut forged = bytes.clone();
            if g1 {
                forged[at..at + 48].copy_from_slice(&bad_g1);
            } else if g2 {
                forged[at..at + 96].copy_from_slice(&bad_g2);
            } else {
                continue;
            }
            tried += 1;
            assert_eq!(
                decode(&forged).err(),
                Some(Error::Decode(DecodeError::InvalidPoint)),
                "{name} at {at}"
            );
        }
        if name != "master secret" {
            assert!(tried > 0, "{name}");
        }
    }
}

#[test]
fn non_canonical_fields_are_refused() {
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let params = Params::new(3, 3).unwrap();
    let (pp, _) = rshabe::setup(params, &mut rng);
    // A policy with redundant parentheses is a valid formula, but not the canonical text.
    let (ct, _) = rshabe::encrypt(
        &pp,
        &AccessStructure::parse("a and b").unwrap(),
        0,
        &mut rng,
    )
    .unwrap();
    let bytes = ct.to_bytes();
    let text = b"a and b";
    let at = bytes.windows(text.len()).position(|w| w == text).unwrap();
    let mut forged = bytes[..at - 2].to_vec();
    let replacement = b"(a) and b";
    forged.extend_from_slice(&(replacement.len() as u16).to_be_bytes());
    forged.extend_from_slice(replacement);
    forged.extend_from_slice(&bytes[at + text.len()..]);
    assert_eq!(
        Ciphertext::from_bytes(&forged).err(),
        Some(Error::Decode(DecodeError::NonCanonical))
    );
    // A scalar at or above the group order.
    let mut msk = vec![1u8, 2, 3, 3];
    msk.extend_from_slice(&[0xff; 32]);
    msk.extend_from_slice(&[0; 32]);
    assert_eq!(
        MasterSecret::from_bytes(&msk).err(),
        Some(Error::Decode(DecodeError::InvalidScalar))
    );
    // Tree depths outside 1..=32.
    let mut bad = pp.to_bytes();
    bad[2] = 40;
    assert!(PublicParams::from_bytes(&bad).is_err());
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let all = corpus();
    for _ in 0..2000 {
        let len = (rng.next_u32() % 600) as usize;
        let mut bytes = vec![0u8; len];
        rng.fill_bytes(&mut bytes);
        if len > 4 {
            bytes[0] = 1;
            bytes[1] = (rng.next_u32() % 7) as u8;
            bytes[2] = (rng.next_u32() % 5) as u8;
            bytes[3] = (rng.next_u32() % 5) as u8;
        }
        for (_, _, decode) in &all {
            let _ = decode(&bytes);
        }
    }
}

fn off_subgroup_g1(rng: &mut ChaCha20Rng) -> [u8; 48] {
    loop {
        let mut b = [0u8; 48];
        rng.fill_bytes(&mut b);
        b[0] = (b[0] & 0x1f) | 0x80;
        if let Some(p) = Option::<G1Affine>::from(G1Affine::from_compressed_unchecked(&b))
            && !bool::from(p.is_torsion_free())
        {
            return p.to_compressed();
        }
    }
}

fn off_subgroup_g2(rng: &mut ChaCha20Rng) -> [u8; 96] {
    loop {
        let mut b = [0u8; 96];
        rng.fill_bytes(&mut b);
        b[0] = (b[0] & 0x1f) | 0x80;
        if let Some(p) = Option::<G2Affine>::from(G2Affine::from_compressed_unchecked(&b))
            && !bool::from(p.is_torsion_free())
        {
            return p.to_compressed();
        }
    }
}
