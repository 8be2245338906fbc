//! The scheme's properties through its public API, with seeded RNGs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rshabe::{
    AccessStructure, Attribute, Ciphertext, DataKey, DecryptionKey, Error, KeyUpdate, MasterSecret,
    Params, PublicParams, RevocationList, SecretKey, UpdateMode,
};

struct System {
    pp: PublicParams,
    msk: MasterSecret,
    rng: ChaCha20Rng,
}

impl System {
    fn new(user_depth: u8, time_depth: u8, seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let (pp, msk) = rshabe::setup(Params::new(user_depth, time_depth).unwrap(), &mut rng);
        Self { pp, msk, rng }
    }

    fn key(&mut self, leaf: u64, attributes: &[&str]) -> SecretKey {
        rshabe::keygen(&self.pp, &self.msk, leaf, &attrs(attributes), &mut self.rng).unwrap()
    }

    fn update(&mut self, period: u64, rl: &RevocationList) -> KeyUpdate {
        rshabe::key_update(&self.pp, &self.msk, period, rl, &mut self.rng).unwrap()
    }

    fn dk(&mut self, key: &SecretKey, ku: &KeyUpdate) -> Result<DecryptionKey, Error> {
        rshabe::decrypt_key(&self.pp, key, ku, &mut self.rng)
    }

    fn seal(&mut self, policy: &str, period: u64) -> (Ciphertext, DataKey) {
        let policy = AccessStructure::parse(policy).unwrap();
        rshabe::encrypt(&self.pp, &policy, period, &mut self.rng).unwrap()
    }

    fn update_ct(&mut self, ct: &Ciphertext, period: u64, mode: UpdateMode) -> Ciphertext {
        rshabe::ct_update(&self.pp, ct, period, mode, &mut self.rng).unwrap()
    }
}

fn attrs(names: &[&str]) -> Vec<Attribute> {
    names.iter().map(|n| Attribute::new(n).unwrap()).collect()
}

#[test]
fn the_life_cycle_of_the_crate_docs() {
    let mut s = System::new(6, 5, 1);
    let doctor = s.key(3, &["role:physician", "dept:cardiology", "org:st-mary"]);
    let nurse = s.key(40, &["role:nurse", "dept:cardiology", "org:st-mary"]);
    let (ct, dek) = s.seal(
        "(role:physician or role:nurse) and dept:cardiology and org:st-mary",
        0,
    );
    let ku = s.update(0, &RevocationList::new());
    for key in [&doctor, &nurse] {
        let dk = s.dk(key, &ku).unwrap();
        assert_eq!(rshabe::decrypt(&dk, &ct).unwrap(), dek);
    }
    let (ct, dek) = s.seal("role:physician and dept:cardiology", 0);
    let dk = s.dk(&nurse, &ku).unwrap();
    assert_eq!(rshabe::decrypt(&dk, &ct), Err(Error::Decryption));
    let dk = s.dk(&doctor, &ku).unwrap();
    assert_eq!(rshabe::decrypt(&dk, &ct).unwrap(), dek);
}

#[test]
fn threshold_gates_open_with_k_of_n() {
    let mut s = System::new(4, 3, 2);
    let (ct, dek) = s.seal("2 of (a, b, c) and d", 0);
    let ku = s.update(0, &RevocationList::new());
    for (leaf, set, opens) in [
        (0, &["a", "b", "d"][..], true),
        (1, &["a", "c", "d"][..], true),
        (2, &["b", "c", "d"][..], true),
        (3, &["a", "d"][..], false),
        (4, &["a", "b", "c"][..], false),
    ] {
        let key = s.key(leaf, set);
        let dk = s.dk(&key, &ku).unwrap();
        assert_eq!(
            rshabe::decrypt(&dk, &ct).ok() == Some(dek.clone()),
            opens,
            "{set:?}"
        );
    }
}

#[test]
fn revocation_is_backward_and_forward_secure() {
    let mut s = System::new(5, 5, 3);
    let doctor = s.key(7, &["role:physician"]);
    let colleague = s.key(8, &["role:physician"]);
    let mut rl = RevocationList::new();
    let (old_ct, old_dek) = s.seal("role:physician", 2);
    let ku2 = s.update(2, &rl);
    let dk2 = s.dk(&doctor, &ku2).unwrap();
    assert_eq!(rshabe::decrypt(&dk2, &old_ct).unwrap(), old_dek);

    // Revoked at period 3.
    rl.revoke(s.pp.params(), 7, 3).unwrap();
    assert!(rl.is_revoked(7, 3) && !rl.is_revoked(7, 2) && !rl.is_revoked(8, 3));
    for period in [3, 4, 17, 31] {
        let ku = s.update(period, &rl);
        assert_eq!(
            s.dk(&doctor, &ku).err(),
            Some(Error::Revoked),
            "period {period}"
        );
        assert!(s.dk(&colleague, &ku).is_ok());
    }
    // Backward: data sealed after the revocation stays closed to every key the doctor held.
    let (new_ct, _) = s.seal("role:physician", 3);
    assert_eq!(rshabe::decrypt(&dk2, &new_ct), Err(Error::Decryption));
    // Forward: once the stored ciphertext is updated past the revocation, the old key is useless.
    for mode in [UpdateMode::Minimal, UpdateMode::Rerandomize] {
        let updated = s.update_ct(&old_ct, 3, mode);
        assert_eq!(rshabe::decrypt(&dk2, &updated), Err(Error::Decryption));
        let ku3 = s.update(3, &rl);
        let dk = s.dk(&colleague, &ku3).unwrap();
        assert_eq!(rshabe::decrypt(&dk, &updated).unwrap(), old_dek);
    }
}

#[test]
fn revoking_a_subtree_leaves_its_neighbours_alone() {
    let mut s = System::new(4, 3, 4);
    let mut rl = RevocationList::new();
    for leaf in [0, 1, 2, 3, 9] {
        rl.revoke(s.pp.params(), leaf, 0).unwrap();
    }
    assert_eq!(
        rl.revoke(s.pp.params(), 9, 2),
        Err(Error::AlreadyRevoked { leaf: 9, period: 0 })
    );
    assert_eq!(rl.revoked_since(9), Some(0));
    let ku = s.update(0, &rl);
    for leaf in 0..16 {
        let key = s.key(leaf, &["x"]);
        assert_eq!(
            s.dk(&key, &ku).is_ok(),
            !matches!(leaf, 0..=3 | 9),
            "leaf {leaf}"
        );
    }
}

#[test]
fn updated_ciphertexts_still_open_for_users_never_revoked() {
    let mut s = System::new(4, 7, 5);
    let key = s.key(5, &["a", "b"]);
    let (ct0, dek) = s.seal("a and b", 0);
    let mut ct = ct0.clone();
    let mut period = 0;
    for steps in [1, 10, 100] {
        while period < steps {
            period += 1;
            let mode = if period % 7 == 0 {
                UpdateMode::Rerandomize
            } else {
                UpdateMode::Minimal
            };
            ct = s.update_ct(&ct, period, mode);
        }
        let ku = s.update(period, &RevocationList::new());
        let dk = s.dk(&key, &ku).unwrap();
        assert_eq!(
            rshabe::decrypt(&dk, &ct).unwrap(),
            dek,
            "after {steps} updates"
        );
        // A jump straight from period 0 lands on the same cover and opens the same way.
        let jumped = s.update_ct(&ct0, period, UpdateMode::Minimal);
        assert_eq!(rshabe::decrypt(&dk, &jumped).unwrap(), dek);
        // The old period's key no longer opens it.
        if period > 0 {
            let ku_old = s.update(period - 1, &RevocationList::new());
            let dk_old = s.dk(&key, &ku_old).unwrap();
            assert_eq!(rshabe::decrypt(&dk_old, &ct), Err(Error::Decryption));
        }
    }
    assert!(ct.longest_chain() <= 8);
}

#[test]
fn ciphertext_update_refuses_the_past_and_foreign_parameters() {
    let mut s = System::new(4, 4, 6);
    let (ct, _) = s.seal("a", 5);
    assert_eq!(
        rshabe::ct_update(&s.pp, &ct, 4, UpdateMode::Minimal, &mut s.rng).err(),
        Some(Error::PeriodNotLater { from: 5, to: 4 })
    );
    assert!(matches!(
        rshabe::ct_update(&s.pp, &ct, 16, UpdateMode::Minimal, &mut s.rng),
        Err(Error::PeriodOutOfRange { period: 16, .. })
    ));
    let other = System::new(4, 5, 7);
    assert_eq!(
        rshabe::ct_update(&other.pp, &ct, 6, UpdateMode::Minimal, &mut s.rng).err(),
        Some(Error::ParamsMismatch)
    );
    let same = s.update_ct(&ct, 5, UpdateMode::Rerandomize);
    assert_ne!(same, ct, "re-randomisation changes every element");
}

#[test]
fn a_delegated_key_opens_only_what_its_subset_allows() {
    let mut s = System::new(4, 3, 8);
    let head = s.key(
        2,
        &[
            "org:st-mary",
            "dept:cardiology",
            "dept:oncology",
            "role:physician",
        ],
    );
    let cardio = rshabe::delegate(
        &s.pp,
        &head,
        &attrs(&["org:st-mary", "dept:cardiology", "role:physician"]),
        &mut s.rng,
    )
    .unwrap();
    let ward = rshabe::delegate(&s.pp, &cardio, &attrs(&["dept:cardiology"]), &mut s.rng).unwrap();
    assert_eq!(
        rshabe::delegate(&s.pp, &cardio, &attrs(&["dept:oncology"]), &mut s.rng).err(),
        Some(Error::AttributeNotHeld(
            Attribute::new("dept:oncology").unwrap()
        ))
    );
    assert_eq!(ward.leaf(), 2);
    assert_eq!(ward.attributes().count(), 1);

    let ku = s.update(0, &RevocationList::new());
    let (onc, onc_key) = s.seal("dept:oncology", 0);
    let (card, card_key) = s.seal("dept:cardiology and role:physician", 0);
    let (any, any_key) = s.seal("dept:cardiology", 0);
    let dk_head = s.dk(&head, &ku).unwrap();
    let dk_cardio = s.dk(&cardio, &ku).unwrap();
    let dk_ward = s.dk(&ward, &ku).unwrap();
    assert_eq!(rshabe::decrypt(&dk_head, &onc).unwrap(), onc_key);
    assert_eq!(rshabe::decrypt(&dk_cardio, &onc), Err(Error::Decryption));
    assert_eq!(rshabe::decrypt(&dk_cardio, &card).unwrap(), card_key);
    assert_eq!(rshabe::decrypt(&dk_ward, &card), Err(Error::Decryption));
    assert_eq!(rshabe::decrypt(&dk_ward, &any).unwrap(), any_key);

    // Delegation re-randomises: same attributes, different key.
    let again = rshabe::delegate(
        &s.pp,
        &head,
        &attrs(&["dept:cardiology", "org:st-mary", "role:physician"]),
        &mut s.rng,
    )
    .unwrap();
    assert_ne!(*again.to_bytes(), *cardio.to_bytes());

    // Revoking the delegator's leaf revokes every key below it.
    let mut rl = RevocationList::new();
    rl.revoke(s.pp.params(), 2, 1).unwrap();
    let ku1 = s.update(1, &rl);
    for key in [&head, &cardio, &ward] {
        assert_eq!(s.dk(key, &ku1).err(), Some(Error::Revoked));
    }
}

#[test]
fn decryption_keys_are_rerandomised_per_derivation() {
    let mut s = System::new(4, 3, 9);
    let key = s.key(1, &["a"]);
    let ku = s.update(0, &RevocationList::new());
    let d1 = s.dk(&key, &ku).unwrap();
    let d2 = s.dk(&key, &ku).unwrap();
    assert_ne!(*d1.to_bytes(), *d2.to_bytes());
    let (ct, dek) = s.seal("a", 0);
    assert_eq!(rshabe::decrypt(&d1, &ct).unwrap(), dek);
    assert_eq!(rshabe::decrypt(&d2, &ct).unwrap(), dek);
}

#[test]
fn element_counts_match_the_formulas_of_the_specification() {
    let (user_depth, time_depth) = (6u8, 5u8);
    let (big_l, small_l) = (usize::from(user_depth), usize::from(time_depth));
    let mut s = System::new(user_depth, time_depth, 10);
    let m = 4;
    let key = s.key(9, &["a", "b", "c", "d"]);
    assert_eq!(key.element_count(), (big_l + 1) * (2 + 2 * m));
    assert_eq!(
        key.to_bytes().len(),
        4 + 8 + 2 + 4 * (2 + 1) + 96 * (big_l + 1) * (2 + 2 * m)
    );
    let mut rl = RevocationList::new();
    rl.revoke(s.pp.params(), 0, 0).unwrap();
    let ku = s.update(0, &rl);
    assert_eq!(ku.node_count(), big_l, "one revoked leaf leaves L KUNodes");
    assert_eq!(
        ku.element_count(),
        ku.node_count() * (2 + 2 * (small_l + 1))
    );
    let dk = s.dk(&key, &ku).unwrap();
    assert_eq!(dk.element_count(), 3 + 2 * m + 2 * (small_l + 1));
    for (policy, n) in [
        ("a", 1),
        ("a and b and c", 3),
        ("2 of (a, b, c) or (d and a)", 5),
    ] {
        for period in [0u64, 5, 31] {
            let (ct, _) = s.seal(policy, period);
            let c = rshabe::tree::cover(time_depth, period).len();
            assert_eq!(ct.time_row_count(), c);
            assert_eq!(ct.g1_element_count(), 1 + 3 * n + 3 * c);
        }
    }
}

#[test]
fn continual_updates_grow_chains_as_the_exponent_model_predicts() {
    // shared/crypto/rsabe_model.py, chain_stats with ℓ = 6 from period 0 through 63:
    // time rows sum 649, at most 16; longest chain 6.
    let mut s = System::new(2, 6, 11);
    let (mut ct, _) = s.seal("a", 0);
    let (mut sum, mut most, mut longest) = (0, 0, 0);
    for period in 1..64 {
        ct = s.update_ct(&ct, period, UpdateMode::Minimal);
        sum += ct.time_row_count();
        most = most.max(ct.time_row_count());
        longest = longest.max(ct.longest_chain());
    }
    assert_eq!((sum, most, longest), (649, 16, 6));
}

#[test]
fn keys_refuse_out_of_range_input() {
    let mut s = System::new(3, 3, 12);
    assert!(matches!(
        rshabe::keygen(&s.pp, &s.msk, 8, &attrs(&["a"]), &mut s.rng),
        Err(Error::LeafOutOfRange { leaf: 8, depth: 3 })
    ));
    assert_eq!(
        rshabe::keygen(&s.pp, &s.msk, 1, &[], &mut s.rng).err(),
        Some(Error::AttributeCount { count: 0 })
    );
    assert!(matches!(
        rshabe::key_update(&s.pp, &s.msk, 8, &RevocationList::new(), &mut s.rng),
        Err(Error::PeriodOutOfRange { period: 8, .. })
    ));
    assert!(Params::new(0, 3).is_err() && Params::new(3, 33).is_err());
    let mut rl = RevocationList::new();
    assert!(rl.revoke(s.pp.params(), 8, 0).is_err());
    assert!(rl.is_empty());
}

#[test]
fn secret_debug_output_names_no_secret() {
    let mut s = System::new(3, 3, 13);
    let key = s.key(1, &["a"]);
    let ku = s.update(0, &RevocationList::new());
    let dk = s.dk(&key, &ku).unwrap();
    let (_, dek) = s.seal("a", 0);
    for text in [
        format!("{:?}", s.msk),
        format!("{key:?}"),
        format!("{dk:?}"),
        format!("{dek:?}"),
    ] {
        assert!(!text.contains("0x"), "{text}");
        assert!(text.len() < 200, "{text}");
    }
}

/// The counts that `model/counts.py` computes from the exponent-space model (RS-HABE.md §4 as
/// corrected) at the reference depths L = 20, ℓ = 10, for 10 and 100 attributes: the crate's
/// objects must have exactly these many group elements.
#[test]
fn element_counts_agree_with_the_model_at_10_and_100_attributes() {
    let mut s = System::new(20, 10, 12);
    let ku = s.update(700, &RevocationList::new());
    assert_eq!(ku.element_count(), 24, "one KUNode (the root): 2 + 2(ℓ+1)");
    for (m, sk_elements, dk_elements, ct_g1) in [(10, 462, 45, 46), (100, 4242, 225, 316)] {
        let names: Vec<String> = (0..m).map(|i| format!("a{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let key = s.key(77, &refs);
        assert_eq!(key.element_count(), sk_elements, "secret key, m = {m}");
        let dk = s.dk(&key, &ku).unwrap();
        assert_eq!(dk.element_count(), dk_elements, "decryption key, m = {m}");
        let (ct, dek) = s.seal(&names.join(" and "), 700);
        assert_eq!(
            ct.g1_element_count(),
            ct_g1,
            "ciphertext: 1 + 3n + 3|Cover(700)| with n = {m}, |Cover| = 5"
        );
        assert_eq!(rshabe::decrypt(&dk, &ct).unwrap(), dek);
    }
}
