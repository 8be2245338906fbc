//! Property tests: decryption succeeds exactly when the key's attributes satisfy the access
//! structure, over random structures with threshold gates, fresh and after ciphertext updates.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::sync::OnceLock;

use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rshabe::access::Node;
use rshabe::{
    AccessStructure, Attribute, Error, MasterSecret, Params, PublicParams, RevocationList,
    UpdateMode,
};

const NAMES: [&str; 5] = ["a", "b", "c", "role:nurse", "dept:\"icu\""];

fn system() -> &'static (PublicParams, MasterSecret) {
    static SYSTEM: OnceLock<(PublicParams, MasterSecret)> = OnceLock::new();
    SYSTEM.get_or_init(|| {
        rshabe::setup(
            Params::new(4, 4).unwrap(),
            &mut ChaCha20Rng::seed_from_u64(1),
        )
    })
}

fn structure() -> impl Strategy<Value = Node> {
    let leaf =
        prop::sample::select(NAMES.to_vec()).prop_map(|n| Node::Leaf(Attribute::new(n).unwrap()));
    leaf.prop_recursive(3, 12, 4, |inner| {
        prop::collection::vec(inner, 2..=4).prop_flat_map(|children| {
            let n = children.len();
            (1..=n).prop_map(move |threshold| Node::Gate {
                threshold,
                children: children.clone(),
            })
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn decrypts_iff_the_attributes_satisfy_the_structure(
        root in structure(),
        held in prop::collection::btree_set(0..NAMES.len(), 1..=NAMES.len()),
        seed in any::<u64>(),
        period in 0u64..16,
        later in 0u64..16,
    ) {
        let (pp, msk) = system();
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let policy = AccessStructure::from_node(root).unwrap();
        let attributes: Vec<Attribute> = held.iter().map(|&i| Attribute::new(NAMES[i]).unwrap()).collect();
        let satisfied = policy.is_satisfied_by(&|a| attributes.contains(a));

        let key = rshabe::keygen(pp, msk, seed % 16, &attributes, &mut rng).unwrap();
        let (ct, data_key) = rshabe::encrypt(pp, &policy, period, &mut rng).unwrap();
        let ku = rshabe::key_update(pp, msk, period, &RevocationList::new(), &mut rng).unwrap();
        let dk = rshabe::decrypt_key(pp, &key, &ku, &mut rng).unwrap();
        let opened = rshabe::decrypt(&dk, &ct);
        prop_assert_eq!(opened.is_ok(), satisfied, "{}", policy);
        if let Ok(k) = opened {
            prop_assert!(k == data_key);
        } else {
            prop_assert_eq!(opened.err(), Some(Error::Decryption));
        }

        // After an update to a later period the same holds for that period's key, and the
        // ciphertext's encoding still decodes to itself.
        let to = period.max(later);
        let mode = if seed % 2 == 0 { UpdateMode::Minimal } else { UpdateMode::Rerandomize };
        let updated = rshabe::ct_update(pp, &ct, to, mode, &mut rng).unwrap();
        prop_assert!(rshabe::Ciphertext::from_bytes(&updated.to_bytes()).unwrap() == updated);
        let ku = rshabe::key_update(pp, msk, to, &RevocationList::new(), &mut rng).unwrap();
        let dk = rshabe::decrypt_key(pp, &key, &ku, &mut rng).unwrap();
        prop_assert_eq!(rshabe::decrypt(&dk, &updated).ok(), satisfied.then_some(data_key));
    }
}

/// A wide OR of `n` distinct attributes, each `len` bytes long (a `k:` prefix and padding).
fn wide_or(n: usize, len: usize) -> Node {
    let children = (0..n)
        .map(|i| {
            let name = format!("k{i:04}:{}", "x".repeat(len.saturating_sub(6)));
            Node::Leaf(Attribute::new(&name).unwrap())
        })
        .collect();
    Node::Gate {
        threshold: 1,
        children,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Every structure the crate lets exist can be stored and read back: its canonical text fits
    /// the decoder's limit and parses back to it, up to the limits on names (256 bytes) and
    /// leaves (the 256 children of a gate here), where most of these are far past 16 KiB and
    /// must be refused when they are made, never at decoding time (the audit's silent data loss).
    #[test]
    fn every_accepted_structure_is_encodable(n in 1usize..=256, len in 6usize..=256) {
        match AccessStructure::from_node(wide_or(n, len)) {
            Ok(s) => {
                let text = s.to_string();
                prop_assert!(text.len() <= rshabe::access::MAX_POLICY_BYTES);
                prop_assert_eq!(AccessStructure::parse(&text).unwrap(), s);
            }
            Err(e) => prop_assert_eq!(e.kind, rshabe::access::PolicyErrorKind::CanonicalTooLong),
        }
    }
}

/// At the size limit itself: the largest structure of this shape that fits encrypts, encodes and
/// decodes to the same ciphertext, which still opens; one more attribute is refused when the
/// structure is made.
#[test]
fn ciphertexts_round_trip_at_the_policy_size_limit() {
    let (pp, msk) = system();
    let limit = rshabe::access::MAX_POLICY_BYTES;
    let len = 200;
    let fits = (1..=256)
        .take_while(|&n| AccessStructure::from_node(wide_or(n, len)).is_ok())
        .last()
        .unwrap();
    let policy = AccessStructure::from_node(wide_or(fits, len)).unwrap();
    let text = policy.to_string();
    assert!(
        text.len() <= limit && text.len() + len > limit,
        "{}",
        text.len()
    );
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let (ct, key) = rshabe::encrypt(pp, &policy, 3, &mut rng).unwrap();
    let bytes = ct.to_bytes();
    let back = rshabe::Ciphertext::from_bytes(&bytes).unwrap();
    assert_eq!(back, ct);
    let holder = [Attribute::new(&format!("k0000:{}", "x".repeat(len - 6))).unwrap()];
    let sk = rshabe::keygen(pp, msk, 2, &holder, &mut rng).unwrap();
    let ku = rshabe::key_update(pp, msk, 3, &RevocationList::new(), &mut rng).unwrap();
    let dk = rshabe::decrypt_key(pp, &sk, &ku, &mut rng).unwrap();
    assert_eq!(rshabe::decrypt(&dk, &back).unwrap(), key);

    let over = AccessStructure::from_node(wide_or(fits + 1, len)).unwrap_err();
    assert_eq!(over.kind, rshabe::access::PolicyErrorKind::CanonicalTooLong);
    // Past 64 KiB the old u16 length wrapped silently: refused long before.
    let huge = AccessStructure::from_node(wide_or(256, 256)).unwrap_err();
    assert_eq!(huge.kind, rshabe::access::PolicyErrorKind::CanonicalTooLong);
}
