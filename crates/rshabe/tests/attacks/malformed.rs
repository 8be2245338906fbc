//! Malformed and hostile encodings, the audit's cases that `tests/encoding.rs` does not already
//! hold: every truncation read by every decoder, non-canonical point and GT encodings, objects
//! made wholly of identity points, and forged counts. Typed errors, never a panic, never
//! unbounded time.

use std::time::{Duration, Instant};

use blstrs::{Compress, G1Affine, G2Affine, Gt};
use group::Group;
use group::prime::PrimeCurveAffine;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use rshabe::{
    Ciphertext, DecodeError, DecryptionKey, Error, KeyUpdate, PublicParams, RevocationList,
    SecretKey, UpdateMode,
};

use crate::support::{RawCt, RawDk, RawSk, System, opens};

/// BLS12-381's base field modulus p, big-endian.
const P: [u8; 48] = [
    0x1a, 0x01, 0x11, 0xea, 0x39, 0x7f, 0xe6, 0x9a, 0x4b, 0x1b, 0xa7, 0xb6, 0x43, 0x4b, 0xac, 0xd7,
    0x64, 0x77, 0x4b, 0x84, 0xf3, 0x85, 0x12, 0xbf, 0x67, 0x30, 0xd2, 0xa0, 0xf6, 0xb0, 0xf6, 0x24,
    0x1e, 0xab, 0xff, 0xfe, 0xb1, 0x53, 0xff, 0xff, 0xb9, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xaa, 0xab,
];

/// Far above what any decoder here needs on a loaded machine; a quadratic or unbounded decoder
/// takes minutes.
const BOUND: Duration = Duration::from_secs(5);

/// One encoding of each kind.
struct Objects {
    pp: Vec<u8>,
    sk: Vec<u8>,
    ku: Vec<u8>,
    dk: Vec<u8>,
    ct: Vec<u8>,
}

fn objects() -> (System, Objects, rshabe::DataKey) {
    let mut s = System::new(71);
    let mut rl = RevocationList::new();
    rl.revoke(s.params, 3, 0).unwrap();
    let sk = s.key(5, &["a", "b"]);
    let ku = s.update(4, &rl);
    let dk = s.dk(&sk, &ku);
    let (ct, dek) = s.seal("a and (b or 2 of (c, d, e))", 1);
    let ct = s.move_to(&ct, 4, UpdateMode::Minimal);
    let o = Objects {
        pp: s.pp.to_bytes(),
        sk: sk.to_bytes().to_vec(),
        ku: ku.to_bytes(),
        dk: dk.to_bytes().to_vec(),
        ct: ct.to_bytes(),
    };
    (s, o, dek)
}

/// Which of the five decoders accept `b`.
fn accepted_by(b: &[u8]) -> [bool; 5] {
    [
        PublicParams::from_bytes(b).is_ok(),
        SecretKey::from_bytes(b).is_ok(),
        KeyUpdate::from_bytes(b).is_ok(),
        DecryptionKey::from_bytes(b).is_ok(),
        Ciphertext::from_bytes(b).is_ok(),
    ]
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    assert!(start.elapsed() < BOUND, "{what} took {:?}", start.elapsed());
    out
}

fn decode_error(e: DecodeError) -> Option<Error> {
    Some(Error::Decode(e))
}

#[test]
fn every_truncation_is_refused_by_every_decoder() {
    let (_, o, _) = objects();
    let start = Instant::now();
    let mut tried = 0;
    for (name, bytes) in [
        ("pp", &o.pp),
        ("sk", &o.sk),
        ("ku", &o.ku),
        ("dk", &o.dk),
        ("ct", &o.ct),
    ] {
        for len in 0..bytes.len() {
            assert_eq!(
                accepted_by(&bytes[..len]),
                [false; 5],
                "{name} cut at {len}"
            );
            let _ = Ciphertext::peek(&bytes[..len]);
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(accepted_by(&longer), [false; 5], "{name} + 1 byte");
        tried += bytes.len() + 1;
    }
    eprintln!(
        "truncations: {tried} inputs, each refused by all five decoders, in {:?}",
        start.elapsed()
    );
}

/// Point encodings `from_compressed` must refuse: x = p, the infinity flag with junk, no
/// compression flag, the sort flag on infinity; G1 and G2 (for G2, in the first coordinate).
fn non_canonical<const N: usize>() -> [[u8; N]; 4] {
    let mut x_eq_p = [0u8; N];
    x_eq_p[..48].copy_from_slice(&P);
    x_eq_p[0] |= 0x80;
    let mut infinity_junk = [0u8; N];
    infinity_junk[0] = 0xc0;
    infinity_junk[N - 1] = 1;
    let mut uncompressed = [0u8; N];
    if N == 48 {
        uncompressed.copy_from_slice(&G1Affine::generator().to_compressed()[..N]);
    } else {
        uncompressed.copy_from_slice(&G2Affine::generator().to_compressed()[..N]);
    }
    uncompressed[0] &= 0x7f;
    let mut infinity_sorted = [0u8; N];
    infinity_sorted[0] = 0xe0;
    [x_eq_p, infinity_junk, uncompressed, infinity_sorted]
}

#[test]
fn non_canonical_point_and_gt_encodings_are_refused() {
    let (_, o, _) = objects();
    let invalid = decode_error(DecodeError::InvalidPoint);
    let rct = RawCt::parse(&o.ct);
    let gt_at = 4 + 8 + 2 + rct.policy.len();
    let c0_at = gt_at + 288;
    let last = o.ct.len() - 48;
    let mut tried = 0;
    // G1: C0, a policy row's element, the last chain element.
    for bad in non_canonical::<48>() {
        for at in [c0_at, c0_at + 48, last] {
            let mut f = o.ct.clone();
            f[at..at + 48].copy_from_slice(&bad);
            assert_eq!(Ciphertext::from_bytes(&f).err(), invalid, "ct at {at}");
            tried += 1;
        }
    }
    // GT: all zero (decompresses to −1, outside GT), a coordinate equal to p, random bytes.
    let mut rng = ChaCha20Rng::seed_from_u64(72);
    let mut p_le = vec![0u8; 288];
    p_le[..48].copy_from_slice(&P.iter().rev().copied().collect::<Vec<_>>());
    let mut random = vec![0u8; 288];
    rng.fill_bytes(&mut random);
    for gt in [vec![0u8; 288], p_le, random] {
        let mut f = o.ct.clone();
        f[gt_at..gt_at + 288].copy_from_slice(&gt);
        assert_eq!(Ciphertext::from_bytes(&f).err(), invalid, "GT");
        tried += 1;
    }
    // G2: the first element of the secret key (the root's K1), of the decryption key (K0), of
    // the key update (its first KU0), and each object's last element.
    let names: usize = RawSk::parse(&o.sk).nodes[0]
        .rows
        .iter()
        .map(|r| 2 + r.0.len())
        .sum();
    let dk_names: usize = RawDk::parse(&o.dk).names.iter().map(|n| 2 + n.len()).sum();
    type Decode = fn(&[u8]) -> Option<Error>;
    let places: [(&Vec<u8>, usize, Decode); 3] = [
        (&o.sk, 4 + 8 + 2 + names, |b| SecretKey::from_bytes(b).err()),
        (&o.dk, 4 + 8 + 2 + dk_names, |b| {
            DecryptionKey::from_bytes(b).err()
        }),
        (&o.ku, 4 + 8 + 4 + 9, |b| KeyUpdate::from_bytes(b).err()),
    ];
    for bad in non_canonical::<96>() {
        for (bytes, first, decode) in places {
            for at in [first, bytes.len() - 96] {
                let mut f = bytes.clone();
                f[at..at + 96].copy_from_slice(&bad);
                assert_eq!(decode(&f), invalid, "G2 at {at}");
                tried += 1;
            }
        }
    }
    eprintln!("non-canonical encodings: {tried} refused");
    assert_eq!(tried, 39);
}

/// The audit's all-identity objects: a ciphertext that "decrypted" to a data key its writer
/// chose, an all-identity decryption key, a secret key with identity heads, identity generators.
/// Each is now refused at decoding as [`DecodeError::IdentityPoint`].
#[test]
fn objects_made_of_identity_points_are_refused() {
    let (_, o, dek) = objects();
    let dk = DecryptionKey::from_bytes(&o.dk).unwrap();
    assert!(
        opens(&dk, &Ciphertext::from_bytes(&o.ct).unwrap(), &dek),
        "control"
    );
    let identity = decode_error(DecodeError::IdentityPoint);

    let mut r = RawCt::parse(&o.ct);
    let id1 = G1Affine::identity();
    r.c0 = id1;
    r.rows.iter_mut().for_each(|x| *x = [id1; 3]);
    r.chains.iter_mut().flatten().for_each(|x| x.1 = [id1; 3]);
    let mut chosen = Vec::new();
    Gt::random(ChaCha20Rng::seed_from_u64(73))
        .write_compressed(&mut chosen)
        .unwrap();
    r.c = chosen;
    assert_eq!(r.ct().err(), identity, "all-identity ciphertext");

    let mut rd = RawDk::parse(&o.dk);
    rd.el.iter_mut().for_each(|p| *p = G2Affine::identity());
    assert_eq!(rd.key().err(), identity, "all-identity decryption key");

    let mut rs = RawSk::parse(&o.sk);
    for node in &mut rs.nodes {
        node.k1 = G2Affine::identity();
        node.k0 = G2Affine::identity();
    }
    assert_eq!(rs.key().err(), identity, "secret key with identity heads");
    let mut rs = RawSk::parse(&o.sk);
    let last = rs.nodes.len() - 1;
    rs.nodes[last].rows[0].1 = (G2Affine::identity(), G2Affine::identity());
    assert_eq!(rs.key().err(), identity, "secret key with an identity row");

    let mut f = o.pp.clone();
    f[4..52].copy_from_slice(&G1Affine::identity().to_compressed());
    assert_eq!(PublicParams::from_bytes(&f).err(), identity, "identity g1");
    let mut f = o.pp;
    f[4 + 7 * 48..4 + 7 * 48 + 96].copy_from_slice(&G2Affine::identity().to_compressed());
    assert_eq!(PublicParams::from_bytes(&f).err(), identity, "identity g2");
}

#[test]
fn forged_counts_are_refused_quickly() {
    let (_, o, _) = objects();
    let truncated = decode_error(DecodeError::Truncated);
    // Key update: u32::MAX nodes.
    let mut f = o.ku[..12].to_vec();
    f.extend_from_slice(&u32::MAX.to_be_bytes());
    f.extend_from_slice(&[0u8; 64]);
    assert_eq!(
        timed("ku count", || KeyUpdate::from_bytes(&f).err()),
        truncated
    );
    // Decryption key and secret key (format version 2): 0xffff names, then 1024 names and no
    // element.
    let names_1024: Vec<u8> = (0..1024u32)
        .flat_map(|i| {
            let n = format!("n{i:04}");
            let mut b = u16::try_from(n.len()).unwrap().to_be_bytes().to_vec();
            b.extend_from_slice(n.as_bytes());
            b
        })
        .collect();
    type Decode = fn(&[u8]) -> Option<Error>;
    let keys: [(&str, &Vec<u8>, Decode); 2] = [
        ("dk", &o.dk, |b| DecryptionKey::from_bytes(b).err()),
        ("sk", &o.sk, |b| SecretKey::from_bytes(b).err()),
    ];
    for (name, bytes, decode) in keys {
        let mut f = bytes[..12].to_vec();
        f.extend_from_slice(&u16::MAX.to_be_bytes());
        f.extend_from_slice(&[0u8; 64]);
        let e = timed(name, || decode(&f));
        assert_eq!(
            e,
            decode_error(DecodeError::InvalidLength),
            "{name}: 0xffff names"
        );
        let mut f = bytes[..12].to_vec();
        f.extend_from_slice(&1024u16.to_be_bytes());
        f.extend_from_slice(&names_1024);
        assert_eq!(
            timed(name, || decode(&f)),
            truncated,
            "{name}: 1024 names, no element"
        );
    }
    // Ciphertext: 255 chains; a chain of 255 rows; a 64 KiB policy.
    let rct = RawCt::parse(&o.ct);
    let mut base = rct.clone();
    base.chains.clear();
    let mut f = base.encode();
    *f.last_mut().unwrap() = 255;
    let e = timed("chains", || Ciphertext::from_bytes(&f).err());
    assert_eq!(e, decode_error(DecodeError::InvalidNode));
    let mut f = base.encode();
    *f.last_mut().unwrap() = u8::try_from(rct.chains.len()).unwrap();
    f.push(255);
    let e = timed("chain length", || Ciphertext::from_bytes(&f).err());
    assert_eq!(e, decode_error(DecodeError::InvalidLength));
    let mut f = o.ct[..12].to_vec();
    f.extend_from_slice(&u16::MAX.to_be_bytes());
    f.extend_from_slice(&"a and ".repeat(65535 / 6 + 1).as_bytes()[..65535]);
    assert!(timed("policy", || Ciphertext::from_bytes(&f).is_err()));
    let _ = Ciphertext::peek(&f);
}

/// Random bodies behind every valid header, the secret key's version 2 included.
#[test]
fn random_bodies_behind_valid_headers_never_panic() {
    let mut rng = ChaCha20Rng::seed_from_u64(74);
    timed("garbage", || {
        for _ in 0..3000 {
            let len = 4 + (rng.next_u32() % 2000) as usize;
            let mut b = vec![0u8; len];
            rng.fill_bytes(&mut b);
            b[1] = 1 + (rng.next_u32() % 6) as u8;
            b[0] = if b[1] == 3 { 2 } else { 1 };
            b[2] = 4;
            b[3] = 4;
            assert!(accepted_by(&b).iter().all(|ok| !ok));
            let _ = Ciphertext::peek(&b);
        }
    });
}
