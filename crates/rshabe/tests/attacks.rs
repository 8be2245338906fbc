//! Attacks on RS-HABE through the public API and the raw wire encodings, ported from the outside
//! audit of 2026-12-02 (`shared/crypto/audit/`) to the corrected layout (one independent RW13 key
//! per path node, RS-HABE.md §4 "Correction (2026-12-02)"); issue 13, "Attack tests in the crate".
//!
//! Every attack counts its attempts and asserts exactly how many open (none), and each comes
//! with an honest control: the same assembly, fed material that should open, does. Each test
//! was run against the flaw it guards against re-introduced in `src/` (the retired one-`r`
//! layout, one node secret everywhere, an AND leaf given the whole share, a zero split share in
//! CtUpdate, a decryption key not re-randomised) and fails on it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "attacks/malformed.rs"]
mod malformed;
#[path = "attacks/support.rs"]
mod support;

use blstrs::Scalar;
use ff::Field;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rshabe::{Ciphertext, DataKey, Error, RevocationList, UpdateMode};

use support::{
    Attempt, ELL, KuEntry, L, NamedRow, RawCt, RawDk, RawKu, RawNode, RawSk, System, Tally, comb,
    is_ancestor, opens, path_node, scalar, shift,
};

const MODES: [UpdateMode; 2] = [UpdateMode::Minimal, UpdateMode::Rerandomize];

// === revocation: a revoked user and a current user's long-term key ===

/// How a revoked user A moves a current user B's node φ onto its own key (the audit's exploit,
/// in the forms that make sense once every node has its own key).
#[derive(Clone, Copy, Debug)]
enum Transplant {
    /// `X_root(A) − X_root(B) + X_φ(B)` for X in K1 and K0, with A's rows.
    HeadShifted,
    /// Only `K0_root(A) − K0_root(B) + K0_φ(B)`; A's own K1 and rows.
    K0Shifted,
    /// A's rows under B's whole φ-node head `(K1_φ(B), K0_φ(B))`.
    HeadBorrowed,
}

impl Transplant {
    const ALL: [Self; 3] = [Self::HeadShifted, Self::K0Shifted, Self::HeadBorrowed];

    /// A's key with node `phi` replaced; the K1 and rows that A contributes come from its node
    /// `own` (the root in the attack; `phi` itself in the control, where the result is B's node).
    fn forge(self, a: &RawSk, b: &RawSk, phi: usize, own: usize) -> RawSk {
        let (a0, b0, bphi, mine) = (&a.nodes[0], &b.nodes[0], &b.nodes[phi], &a.nodes[own]);
        let (k1, k0) = match self {
            Self::HeadShifted => (shift(a0.k1, b0.k1, bphi.k1), shift(a0.k0, b0.k0, bphi.k0)),
            Self::K0Shifted => (mine.k1, shift(a0.k0, b0.k0, bphi.k0)),
            Self::HeadBorrowed => (bphi.k1, bphi.k0),
        };
        let mut forged = a.relabelled(b.leaf);
        forged.nodes[phi] = RawNode {
            k1,
            k0,
            rows: mine.rows.clone(),
        };
        forged
    }
}

/// Audit finding 1 (opened 45 of 45 on 11063a8): a revoked user A with two elements of any
/// current user B's key built a key for B's KUNode bound to A's rows.
#[test]
fn revoked_user_cannot_borrow_a_current_users_node() {
    let mut s = System::new(81);
    let policy = "role:physician and dept:cardiology";
    let holds = ["role:physician", "dept:cardiology"];
    let alice = s.key(5, &holds);
    let mut rl = RevocationList::new();
    let (ct_old, dek_old) = s.seal(policy, 1);
    let ku1 = s.update(1, &rl);
    assert!(opens(&s.dk(&alice, &ku1), &ct_old, &dek_old), "before");
    rl.revoke(s.params, 5, 3).unwrap();
    let (ct_new, dek_new) = s.seal(policy, 9);
    let ct_min = s.move_to(&ct_old, 9, UpdateMode::Minimal);
    let ct_rr = s.move_to(&ct_old, 9, UpdateMode::Rerandomize);
    let targets: [(&Ciphertext, &DataKey); 3] =
        [(&ct_new, &dek_new), (&ct_min, &dek_old), (&ct_rr, &dek_old)];
    let ku9 = s.update(9, &rl);
    assert_eq!(s.try_dk(&alice, &ku9).err(), Some(Error::Revoked));
    let rku = RawKu::of(&ku9);
    let depth_of = |leaf: u64| usize::from(rku.entry_for(leaf).unwrap().node.0);

    // Control: a current user with the same attributes; each assembly, given her own φ-node K1
    // and rows, rebuilds her φ node exactly, and the key opens all three.
    let carol = RawSk::of(&s.key(10, &holds));
    let mut control = Tally::default();
    for form in Transplant::ALL {
        let phi = depth_of(10);
        let dk = s.dk(&form.forge(&carol, &carol, phi, phi).key().unwrap(), &ku9);
        for (ct, dek) in targets {
            control.record("control", opens(&dk, ct, dek));
        }
    }
    assert_eq!(control.report("revocation collusion"), (9, 9));

    let a = RawSk::of(&alice);
    let mut tally = Tally::default();
    for bob_leaf in (0..16).filter(|&l| l != 5) {
        let bob = RawSk::of(&s.key(bob_leaf, &["role:clerk"]));
        for form in Transplant::ALL {
            let forged = form.forge(&a, &bob, depth_of(bob_leaf), 0);
            let dk = s.dk(&forged.key().unwrap(), &ku9);
            let section = match form {
                Transplant::HeadShifted => "K1 and K0 shifted, A's root rows",
                Transplant::K0Shifted => "K0 shifted, A's root K1 and rows",
                Transplant::HeadBorrowed => "A's root rows under B's φ head",
            };
            for (ct, dek) in targets {
                tally.record(section, opens(&dk, ct, dek));
            }
        }
    }
    assert_eq!(tally.report("revocation collusion"), (0, 135));
}

// === collusion ===

/// Two users each missing one leaf of an AND pool their keys: spliced decryption keys, spliced
/// long-term keys, linear combinations on the raw equation, and the shared attribute's rows
/// used to move one user's row onto the other's randomness.
#[test]
fn colluders_each_missing_one_leaf_of_an_and_open_nothing() {
    let mut s = System::new(11);
    let (ct, dek) = s.seal("a and b", 0);
    let ku = s.update(0, &RevocationList::new());
    let (alice, bob, both) = (
        s.key(1, &["a", "c"]),
        s.key(2, &["b", "c"]),
        s.key(3, &["a", "b", "c"]),
    );
    let (alice_dk, bob_dk, both_dk) = (s.dk(&alice, &ku), s.dk(&bob, &ku), s.dk(&both, &ku));
    assert_eq!(rshabe::decrypt(&alice_dk, &ct), Err(Error::Decryption));
    assert_eq!(rshabe::decrypt(&bob_dk, &ct), Err(Error::Decryption));
    let rct = RawCt::of(&ct);
    let (ra, rb, rboth) = (
        RawDk::of(&alice_dk),
        RawDk::of(&bob_dk),
        RawDk::of(&both_dk),
    );
    let honest = Attempt::honest(&rct, &rboth).unwrap();
    let chain = honest.chain;
    let (sa, sb, sboth) = (RawSk::of(&alice), RawSk::of(&bob), RawSk::of(&both));
    let mut control = Tally::default();
    let mut tally = Tally::default();

    // (1) Decryption-key encodings: K0, K1, K1_T and the time rows each from Alice or Bob, row a
    // from Alice, row b from Bob, fed to the real `decrypt`.
    let splice = |from: [&RawDk; 4], a: &RawDk, b: &RawDk| {
        let heads = [from[0].el[0], from[1].el[1], from[2].el[2]];
        let rows = [("a", a.attr("a")), ("b", b.attr("b"))];
        RawDk::build(a.head, 0, heads, &rows, &from[3].times())
            .key()
            .unwrap()
    };
    control.record(
        "spliced DK",
        opens(&splice([&rboth; 4], &rboth, &rboth), &ct, &dek),
    );
    for mask in 0..16u8 {
        let from = [0, 1, 2, 3].map(|bit| if mask >> bit & 1 == 0 { &ra } else { &rb });
        tally.record("spliced DK", opens(&splice(from, &ra, &rb), &ct, &dek));
    }

    // (2) Long-term keys: every node's K1 and K0 from either, its rows a (Alice), b (Bob), c
    // (Alice), then the honest DKGen.
    let splice_sk = |k1: &RawSk, k0: &RawSk, a: &RawSk, b: &RawSk| {
        let nodes = (0..k0.nodes.len())
            .map(|d| RawNode {
                k1: k1.nodes[d].k1,
                k0: k0.nodes[d].k0,
                rows: vec![
                    a.nodes[d].row("a"),
                    b.nodes[d].row("b"),
                    a.nodes[d].row("c"),
                ],
            })
            .collect();
        RawSk {
            nodes,
            ..k0.clone()
        }
        .key()
        .unwrap()
    };
    let dk = s.dk(&splice_sk(&sboth, &sboth, &sboth, &sboth), &ku);
    control.record("spliced SK", opens(&dk, &ct, &dek));
    for (k1, k0) in [(&sa, &sa), (&sa, &sb), (&sb, &sa), (&sb, &sb)] {
        let dk = s.dk(&splice_sk(k1, k0, &sa, &sb), &ku);
        tally.record("spliced SK", opens(&dk, &ct, &dek));
    }

    // (3) x·Alice + y·Bob for every head and time row, the LSSS coefficients scaled.
    control.record("linear combination", honest.opens(&rct, &dek));
    let (a_row, b_row) = (ra.attr("a"), rb.attr("b"));
    for x in -2i64..=2 {
        for y in (-2i64..=2).filter(|&y| (x, y) != (0, 0)) {
            for (wa, wb) in [(1i64, 1i64), (2, 1), (1, 2), (-1, 1)] {
                let at = Attempt {
                    k0: comb(x, ra.el[0], y, rb.el[0]),
                    k1: comb(x, ra.el[1], y, rb.el[1]),
                    k1t: comb(x, ra.el[2], y, rb.el[2]),
                    policy: vec![
                        (0, scalar(wa), a_row.0, a_row.1),
                        (1, scalar(wb), b_row.0, b_row.1),
                    ],
                    chain,
                    time: rct.chains[chain]
                        .iter()
                        .map(|(n, _)| {
                            let (p, q) = (ra.time(usize::from(n.0)), rb.time(usize::from(n.0)));
                            Some((comb(x, p.0, y, q.0), comb(x, p.1, y, q.1)))
                        })
                        .collect(),
                };
                tally.record("linear combination", at.opens(&rct, &dek));
            }
        }
    }

    // (4) The shared attribute c: the difference of Alice's and Bob's c rows, added to Bob's b
    // row, to move it onto Alice's randomness.
    let (ac, bc) = (ra.attr("c"), rb.attr("c"));
    for (x, y) in [(1i64, -1i64), (-1, 1)] {
        let moved = (
            comb(1, b_row.0, 1, comb(x, ac.0, y, bc.0)),
            comb(1, b_row.1, 1, comb(x, ac.1, y, bc.1)),
        );
        let at = Attempt {
            k0: ra.el[0],
            k1: ra.el[1],
            k1t: ra.el[2],
            policy: vec![
                (0, Scalar::ONE, a_row.0, a_row.1),
                (1, Scalar::ONE, moved.0, moved.1),
            ],
            chain,
            time: rct.chains[chain]
                .iter()
                .map(|(n, _)| Some(ra.time(usize::from(n.0))))
                .collect(),
        };
        tally.record("shared attribute moves a row", at.opens(&rct, &dek));
    }
    assert_eq!(control.report("collusion"), (3, 3));
    assert_eq!(tally.report("collusion"), (0, 118));
}

/// Two delegatees of one parent share its leaf and node secrets and differ only by their
/// re-randomisers: the weakest collusion case.
#[test]
fn delegatees_of_one_parent_cannot_pool() {
    let mut s = System::new(12);
    let parent = s.key(4, &["a", "b"]);
    let (d1, d2) = (s.delegate(&parent, &["a"]), s.delegate(&parent, &["b"]));
    let (ct, dek) = s.seal("a and b", 0);
    let ku = s.update(0, &RevocationList::new());
    let parent_dk = s.dk(&parent, &ku);
    let (k1, k2) = (s.dk(&d1, &ku), s.dk(&d2, &ku));
    assert!(!opens(&k1, &ct, &dek) && !opens(&k2, &ct, &dek));
    let mut control = Tally::default();
    let mut tally = Tally::default();

    // Long-term keys: same leaf, so either's heads are valid for it; rows a (d1) and b (d2).
    let (r1, r2, rp) = (RawSk::of(&d1), RawSk::of(&d2), RawSk::of(&parent));
    let pool = |heads: &RawSk, k0: &RawSk, a: &RawSk, b: &RawSk| {
        let nodes = (0..heads.nodes.len())
            .map(|d| RawNode {
                k1: heads.nodes[d].k1,
                k0: k0.nodes[d].k0,
                rows: vec![a.nodes[d].row("a"), b.nodes[d].row("b")],
            })
            .collect();
        RawSk { nodes, ..a.clone() }.key().unwrap()
    };
    let dk = s.dk(&pool(&rp, &rp, &rp, &rp), &ku);
    control.record("pooled SK", opens(&dk, &ct, &dek));
    for (h, k) in [(&r1, &r1), (&r1, &r2), (&r2, &r1), (&r2, &r2)] {
        let dk = s.dk(&pool(h, k, &r1, &r2), &ku);
        tally.record("pooled SK", opens(&dk, &ct, &dek));
    }

    // The difference trick on the raw equation: K1(d1) − K1(d2) = g^{δ1−δ2} and so on, folded in.
    let rct = RawCt::of(&ct);
    let (x1, x2) = (RawDk::of(&k1), RawDk::of(&k2));
    let honest = Attempt::honest(&rct, &RawDk::of(&parent_dk)).unwrap();
    control.record("combined DK", honest.opens(&rct, &dek));
    for (x, y) in [(1i64, 0i64), (0, 1), (1, 1), (2, -1), (-1, 2)] {
        let at = Attempt {
            k0: comb(x, x1.el[0], y, x2.el[0]),
            k1: comb(x, x1.el[1], y, x2.el[1]),
            k1t: comb(x, x1.el[2], y, x2.el[2]),
            policy: vec![
                (0, Scalar::ONE, x1.attr("a").0, x1.attr("a").1),
                (1, Scalar::ONE, x2.attr("b").0, x2.attr("b").1),
            ],
            chain: honest.chain,
            time: rct.chains[honest.chain]
                .iter()
                .map(|(n, _)| {
                    let (p, q) = (x1.time(usize::from(n.0)), x2.time(usize::from(n.0)));
                    Some((comb(x, p.0, y, q.0), comb(x, p.1, y, q.1)))
                })
                .collect(),
        };
        tally.record("combined DK", at.opens(&rct, &dek));
    }
    assert_eq!(control.report("delegatees"), (2, 2));
    assert_eq!(tally.report("delegatees"), (0, 9));
}

// === revocation: the revoked user alone ===

/// A revoked user with its own key and every public key update: the API refuses, and neither
/// relabelling, forged key updates, spliced updates, relabelled decryption keys nor the raw
/// equation at any depth opens data sealed after the revocation or updated past it.
#[test]
fn revoked_user_alone_opens_nothing_after_revocation() {
    let mut s = System::new(21);
    let victim = 5u64; // 0101
    let sk = s.key(victim, &["a"]);
    let mut rl = RevocationList::new();
    let ku2 = s.update(2, &rl);
    let dk2 = s.dk(&sk, &ku2);
    let (ct0, dek0) = s.seal("a", 0);
    assert!(opens(&dk2, &ct0, &dek0), "before the revocation");
    rl.revoke(s.params, victim, 3).unwrap();
    let (ct3, dek3) = s.seal("a", 3);
    let ct0_min = s.move_to(&ct0, 3, UpdateMode::Minimal);
    let ct0_rr = s.move_to(&ct0, 3, UpdateMode::Rerandomize);
    let targets: [(&Ciphertext, &DataKey); 3] =
        [(&ct3, &dek3), (&ct0_min, &dek0), (&ct0_rr, &dek0)];
    let mut control = Tally::default();
    let mut tally = Tally::default();
    let record = |tally: &mut Tally, section, dk: &rshabe::DecryptionKey| {
        targets
            .iter()
            .for_each(|(ct, dek)| tally.record(section, opens(dk, ct, dek)));
    };

    // (a) the API refuses every later period
    for p in 3..16 {
        let ku = s.update(p, &rl);
        assert_eq!(s.try_dk(&sk, &ku).err(), Some(Error::Revoked), "period {p}");
    }
    let ku3 = s.update(3, &rl);
    let rku3 = RawKu::of(&ku3);
    let other = s.key(4, &["a"]); // 0100: its KUNode is its own leaf
    let neighbour = s.key(0, &["a"]); // 0000: KUNode 00, shared with leaf 1
    record(&mut control, "current user", &s.dk(&other, &ku3));

    // (b) the key relabelled to every other leaf: DKGen takes that leaf's KUNode and the
    // victim's node at the same depth. Control: a current user's key relabelled within its
    // KUNode's subtree still opens.
    let dk = s.dk(&RawSk::of(&neighbour).relabelled(1).key().unwrap(), &ku3);
    record(&mut control, "relabelled leaf", &dk);
    let raw = RawSk::of(&sk);
    for leaf in (0..16).filter(|&l| l != victim) {
        let dk = s.dk(&raw.relabelled(leaf).key().unwrap(), &ku3);
        record(&mut tally, "relabelled leaf", &dk);
    }

    // (c) every KUNode's entry moved onto every node of the victim's path. Control: a current
    // user's own entry, re-encoded.
    let moved = |e: &KuEntry, node| RawKu {
        nodes: vec![KuEntry { node, ..e.clone() }],
        ..rku3.clone()
    };
    let own = rku3.entry_for(4).unwrap();
    let dk = s.dk(&other, &moved(own, own.node).key_update().unwrap());
    record(&mut control, "KU entry moved", &dk);
    for e in &rku3.nodes {
        for d in 0..=L {
            let ku = moved(e, path_node(L, victim, d)).key_update().unwrap();
            let dk = s.dk(&sk, &ku);
            record(&mut tally, "KU entry moved onto the path", &dk);
        }
    }

    // (d) the last pre-revocation update (the root, on the victim's path) spliced with period 3's
    // public parts: new KU1, new time rows, mixed depths (Path(2) and Path(3) share depths 0..3).
    let rku2 = RawKu::of(&ku2);
    assert_eq!(rku2.nodes.len(), 1);
    let root2 = rku2.nodes[0].clone();
    let spliced = |ku1, time: Vec<_>| RawKu {
        nodes: vec![KuEntry {
            node: (0, 0),
            ku0: root2.ku0,
            ku1,
            time,
        }],
        ..rku3.clone()
    };
    let genuine = RawKu {
        period: 2,
        nodes: vec![root2.clone()],
        ..rku3.clone()
    };
    let dk = s.dk(&sk, &genuine.key_update().unwrap());
    control.record("spliced KU", opens(&dk, &ct0, &dek0));
    for e in &rku3.nodes {
        let mixed: Vec<_> = (0..=usize::from(ELL))
            .map(|d| if d < 4 { root2.time[d] } else { e.time[d] })
            .collect();
        for (ku1, time) in [
            (root2.ku1, e.time.clone()),
            (e.ku1, e.time.clone()),
            (root2.ku1, mixed.clone()),
            (e.ku1, mixed),
        ] {
            let dk = s.dk(&sk, &spliced(ku1, time).key_update().unwrap());
            record(&mut tally, "pre- and post-revocation KU spliced", &dk);
        }
    }

    // (e) the pre-revocation decryption key relabelled to every later period. Control: relabelled
    // to its own period, it still opens.
    let rdk2 = RawDk::of(&dk2);
    let relabel = |p| {
        RawDk {
            period: p,
            ..rdk2.clone()
        }
        .key()
        .unwrap()
    };
    control.record("DK relabelled", opens(&relabel(2), &ct0, &dek0));
    for p in 3..16 {
        record(&mut tally, "DK relabelled to a later period", &relabel(p));
    }

    // (f) the raw equation: K0 = K0_d + KU0_φ (+ the old root KU0), K1_d, KU1_φ, φ's time rows,
    // node d's row, for every depth d and KUNode φ. Control: the same for a current user's node.
    let equation = |node: &RawNode, e: &KuEntry, extra: Option<_>, rct: &RawCt| {
        let mut k0 = comb(1, node.k0, 1, e.ku0);
        if let Some(x) = extra {
            k0 = comb(1, k0, 1, x);
        }
        let (_, (a2, a3)) = node.row("a");
        let chain = rct.chain_for(3).unwrap();
        Attempt {
            k0,
            k1: node.k1,
            k1t: e.ku1,
            policy: vec![(0, Scalar::ONE, a2, a3)],
            chain,
            time: rct.chains[chain]
                .iter()
                .map(|(n, _)| Some(e.time[usize::from(n.0)]))
                .collect(),
        }
    };
    let other_raw = RawSk::of(&other);
    for (ct, dek) in targets {
        let rct = RawCt::of(ct);
        let at = equation(&other_raw.nodes[usize::from(own.node.0)], own, None, &rct);
        control.record("raw equation", at.opens(&rct, dek));
        for e in &rku3.nodes {
            for node in &raw.nodes {
                for extra in [None, Some(root2.ku0)] {
                    let at = equation(node, e, extra, &rct);
                    tally.record("raw equation, every depth and KUNode", at.opens(&rct, dek));
                }
            }
        }
    }
    assert_eq!(control.report("revoked alone"), (14, 14));
    assert_eq!(tally.report("revoked alone"), (0, 312));
}

// === stale decryption keys ===

/// A decryption key of period t against ciphertexts moved past it by CtUpdate (both modes):
/// relabelled to every later period, and on the raw equation with every chain, with and
/// without the rows whose node is off its path; and against two updated copies spliced.
#[test]
fn stale_decryption_keys_open_no_updated_ciphertext() {
    let mut s = System::new(31);
    let sk = s.key(6, &["a", "b"]);
    let rl = RevocationList::new();
    let mut control = Tally::default();
    let mut tally = Tally::default();
    // (sealed at t0, stale key of t, updated to t1): several split an ancestor of the stale key's
    // path (0→3 splits 001, 0→7 splits 01, 0→10 splits 1 for t = 9).
    for (t0, t, t1) in [
        (0, 0, 1),
        (0, 2, 3),
        (0, 6, 7),
        (0, 7, 8),
        (4, 5, 6),
        (0, 9, 10),
        (0, 14, 15),
        (0, 3, 12),
    ] {
        let (ct, dek) = s.seal("a and b", t0);
        let ku_t = s.update(t, &rl);
        let stale = s.dk(&sk, &ku_t);
        control.record("stale key before the update", opens(&stale, &ct, &dek));
        let ku_t1 = s.update(t1, &rl);
        let fresh = s.dk(&sk, &ku_t1);
        let rs = RawDk::of(&stale);
        for mode in MODES {
            let ctu = s.move_to(&ct, t1, mode);
            control.record("fresh key after the update", opens(&fresh, &ctu, &dek));
            tally.record("stale key", opens(&stale, &ctu, &dek));
            for p in t1..16 {
                let f = RawDk {
                    period: p,
                    ..rs.clone()
                }
                .key()
                .unwrap();
                tally.record(
                    "stale key relabelled to a later period",
                    opens(&f, &ctu, &dek),
                );
            }
            let rct = RawCt::of(&ctu);
            let honest = Attempt::honest(&rct, &RawDk::of(&fresh)).unwrap();
            control.record("raw equation", honest.opens(&rct, &dek));
            for chain in 0..rct.chains.len() {
                for skip_off_path in [false, true] {
                    let at = Attempt {
                        k0: rs.el[0],
                        k1: rs.el[1],
                        k1t: rs.el[2],
                        policy: honest
                            .policy
                            .iter()
                            .map(|(i, w, _, _)| {
                                let (k2, k3) = rs.attr(&rct.row_attribute(*i));
                                (*i, *w, k2, k3)
                            })
                            .collect(),
                        chain,
                        time: rct.chains[chain]
                            .iter()
                            .map(|(n, _)| {
                                let off = skip_off_path && !is_ancestor(*n, ELL, t);
                                (!off).then(|| rs.time(usize::from(n.0)))
                            })
                            .collect(),
                    };
                    let section = if skip_off_path {
                        "raw equation, the chain's rows on the stale path only"
                    } else {
                        "raw equation, whole chain"
                    };
                    tally.record(section, at.opens(&rct, &dek));
                }
            }
        }
    }
    // Two independently updated copies of one ciphertext (the cloud may keep both): a chain of
    // one copy with its split row taken from the other.
    let (ct, dek) = s.seal("a", 0);
    let sk7 = s.key(7, &["a"]);
    let ku2 = s.update(2, &rl);
    let stale = s.dk(&sk7, &ku2);
    control.record("stale key before the update", opens(&stale, &ct, &dek));
    let u1 = RawCt::of(&s.move_to(&ct, 3, UpdateMode::Minimal));
    let u2 = RawCt::of(&s.move_to(&ct, 3, UpdateMode::Minimal));
    for chain in (0..u1.chains.len()).filter(|&c| u1.chains[c].len() >= 2) {
        let mut f = u1.clone();
        f.chains[chain][0] = u2.chains[chain][0];
        tally.record(
            "two updated copies spliced",
            opens(&stale, &f.ct().unwrap(), &dek),
        );
    }
    assert_eq!(control.report("stale keys"), (41, 41));
    assert_eq!(tally.report("stale keys"), (0, 241));
}

// === decryption-key exposure ===

/// A leaked decryption key of period t, with the public key updates, must give nothing for a
/// later period: DKGen's re-randomisers `d1, d2` are what hide `K0_θ·KU0_θ(t)`. Control: a
/// decryption key assembled from the long-term key without them, moved to each later period the
/// same way, does open; so the forgery is faithful and would work on an unblinded key.
#[test]
fn a_leaked_decryption_key_gives_no_later_period() {
    let mut s = System::new(91);
    let rl = RevocationList::new();
    let sk = s.key(6, &["a"]);
    let ku2 = s.update(2, &rl);
    let leaked = RawDk::of(&s.dk(&sk, &ku2));
    let k2 = RawKu::of(&ku2).nodes[0].clone();
    let node = RawSk::of(&sk).nodes[0].clone();
    let unblinded = RawDk::build(
        leaked.head,
        2,
        [comb(1, node.k0, 1, k2.ku0), node.k1, k2.ku1],
        &[("a", node.row("a").1)],
        &k2.time,
    );
    let (ct2, dek2) = s.seal("a", 2);
    assert!(
        opens(&unblinded.key().unwrap(), &ct2, &dek2),
        "the unblinded key is a key"
    );
    let mut control = Tally::default();
    let mut tally = Tally::default();
    for t in 3..16 {
        let (ct, dek) = s.seal("a", t);
        let kt = RawKu::of(&s.update(t, &rl)).nodes[0].clone();
        // Swap period 2's KU0/KU1 and time rows for period t's.
        let moved = |dk: &RawDk| {
            let k0 = shift(dk.el[0], k2.ku0, kt.ku0);
            let rows = [("a", dk.attr("a"))];
            let with_new_k1t = RawDk::build(dk.head, t, [k0, dk.el[1], kt.ku1], &rows, &kt.time);
            let k1t = shift(dk.el[2], k2.ku1, kt.ku1);
            let times: Vec<_> = (0..=usize::from(ELL))
                .map(|d| {
                    let (p, q, r) = (dk.time(d), k2.time[d], kt.time[d]);
                    (shift(p.0, q.0, r.0), shift(p.1, q.1, r.1))
                })
                .collect();
            let shifted = RawDk::build(dk.head, t, [k0, dk.el[1], k1t], &rows, &times);
            [with_new_k1t, shifted]
        };
        for f in &moved(&unblinded) {
            control.record("unblinded key moved", opens(&f.key().unwrap(), &ct, &dek));
        }
        for (f, section) in moved(&leaked)
            .iter()
            .zip(["new KU1 and time rows", "KU differences"])
        {
            tally.record(section, opens(&f.key().unwrap(), &ct, &dek));
        }
    }
    assert_eq!(control.report("decryption-key exposure"), (26, 26));
    assert_eq!(tally.report("decryption-key exposure"), (0, 26));
}

// === delegation ===

/// A delegated key cannot be widened (a row relabelled, held twice, or algebraically varied),
/// re-targeted to another attribute's ciphertext row, moved to another leaf after its parent's
/// revocation, or moved to a later period.
#[test]
fn delegated_keys_cannot_be_widened_or_unbound() {
    let mut s = System::new(41);
    let parent = s.key(9, &["a", "b"]);
    let child = s.delegate(&parent, &["a"]);
    assert_eq!(
        rshabe::delegate(&s.pp, &child, &support::attrs(&["a", "b"]), &mut s.rng).err(),
        Some(Error::AttributeNotHeld(
            rshabe::Attribute::new("b").unwrap()
        ))
    );
    let mut rl = RevocationList::new();
    let ku0 = s.update(0, &rl);
    let (ct_ab, dek_ab) = s.seal("a and b", 0);
    let (ct_b, dek_b) = s.seal("b", 0);
    let (ct_a, dek_a) = s.seal("a", 0);
    let mut control = Tally::default();
    let mut tally = Tally::default();
    control.record("parent", opens(&s.dk(&parent, &ku0), &ct_ab, &dek_ab));
    let child_dk = s.dk(&child, &ku0);
    control.record("child", opens(&child_dk, &ct_a, &dek_a));

    // (1) in every node: the a row relabelled b, held under both names, K2/K3 swapped,
    // negated, doubled.
    let rc = RawSk::of(&child);
    type Variant = fn(NamedRow) -> Vec<NamedRow>;
    let variants: [Variant; 5] = [
        |(_, r)| vec![("b".into(), r)],
        |(_, r)| vec![("a".into(), r), ("b".into(), r)],
        |(_, r)| vec![("a".into(), r), ("b".into(), (r.1, r.0))],
        |(_, r)| {
            vec![
                ("a".into(), r),
                ("b".into(), (comb(-1, r.0, 0, r.0), comb(-1, r.1, 0, r.1))),
            ]
        },
        |(_, r)| {
            vec![
                ("a".into(), r),
                ("b".into(), (comb(2, r.0, 0, r.0), comb(2, r.1, 0, r.1))),
            ]
        },
    ];
    for variant in variants {
        let f = rc.with_rows(|d| variant(rc.nodes[d].row("a")));
        let dk = s.dk(&f.key().unwrap(), &ku0);
        let opened = opens(&dk, &ct_ab, &dek_ab) || opens(&dk, &ct_b, &dek_b);
        tally.record("widened rows", opened);
    }

    // (2) the a row paired with the b ciphertext's row, under public re-scalings. Control: the
    // same on the a ciphertext opens.
    let dkc = RawDk::of(&child_dk);
    let retarget = |rct: &RawCt, w| {
        let chain = rct.chain_for(0).unwrap();
        let (k2, k3) = dkc.attr("a");
        Attempt {
            k0: dkc.el[0],
            k1: dkc.el[1],
            k1t: dkc.el[2],
            policy: vec![(0, w, k2, k3)],
            chain,
            time: rct.chains[chain]
                .iter()
                .map(|(n, _)| Some(dkc.time(usize::from(n.0))))
                .collect(),
        }
    };
    let (ra, rb) = (RawCt::of(&ct_a), RawCt::of(&ct_b));
    control.record(
        "re-targeted row",
        retarget(&ra, Scalar::ONE).opens(&ra, &dek_a),
    );
    let random = Scalar::random(ChaCha20Rng::seed_from_u64(1));
    for w in [Scalar::ONE, -Scalar::ONE, Scalar::from(2u64), random] {
        tally.record("re-targeted row", retarget(&rb, w).opens(&rb, &dek_b));
    }

    // (3) the parent's leaf revoked: the delegatee relabels its leaf to each other leaf.
    rl.revoke(s.params, 9, 1).unwrap();
    let ku1 = s.update(1, &rl);
    assert_eq!(s.try_dk(&child, &ku1).err(), Some(Error::Revoked));
    let (ct1, dek1) = s.seal("a", 1);
    for leaf in (0..16).filter(|&l| l != 9) {
        let dk = s.dk(&rc.relabelled(leaf).key().unwrap(), &ku1);
        tally.record(
            "relabelled leaf after the parent's revocation",
            opens(&dk, &ct1, &dek1),
        );
    }

    // (4) the delegatee's period-0 decryption key relabelled to periods 1 to 15.
    for p in 1..16 {
        let f = RawDk {
            period: p,
            ..dkc.clone()
        };
        tally.record(
            "DK relabelled to a later period",
            opens(&f.key().unwrap(), &ct1, &dek1),
        );
    }
    assert_eq!(control.report("delegation"), (3, 3));
    assert_eq!(tally.report("delegation"), (0, 39));
}

// === ciphertext mix-and-match ===

/// Components spliced between ciphertexts, and policies relabelled over the same rows: no
/// single leaf of an AND reconstructs the secret (the bug class of an AND leaf given the whole
/// share), and no part of one ciphertext opens another. Control: an OR relabelled to one of its
/// leaves opens, as it must (each OR leaf carries the whole secret).
#[test]
fn ciphertext_components_cannot_be_spliced() {
    let mut s = System::new(51);
    let rl = RevocationList::new();
    let only_a = s.key(1, &["a"]);
    let (ku0, ku5) = (s.update(0, &rl), s.update(5, &rl));
    let (dk0, dk5) = (s.dk(&only_a, &ku0), s.dk(&only_a, &ku5));
    let (ct_and, dek_and) = s.seal("a and b", 0);
    let (ct_or, dek_or) = s.seal("a or b", 0);
    let (ct_a, _) = s.seal("a", 0);
    let (ct_thr, dek_thr) = s.seal("2 of (a, b, c)", 0);
    let (ct_a5, dek_a5) = s.seal("a", 5);
    let [r_and, r_or, r_a, r_thr, r_a5] = [&ct_and, &ct_or, &ct_a, &ct_thr, &ct_a5].map(RawCt::of);
    let mut control = Tally::default();
    let mut tally = Tally::default();
    let check = |tally: &mut Tally, section, f: RawCt, dek: &DataKey| {
        // A splice the decoder refuses is a refusal too; it counts as an attempt that did not open.
        let opened = f
            .ct()
            .is_ok_and(|ct| opens(&dk0, &ct, dek) || opens(&dk5, &ct, dek));
        tally.record(section, opened);
    };
    let relabel = |r: &RawCt, policy: &str, rows: Vec<usize>| RawCt {
        policy: policy.into(),
        rows: rows.iter().map(|&i| r.rows[i]).collect(),
        ..r.clone()
    };
    check(
        &mut control,
        "policy relabelled",
        relabel(&r_or, "a", vec![0]),
        &dek_or,
    );
    let and = "an AND relabelled to one leaf, an OR or swapped";
    check(&mut tally, and, relabel(&r_and, "a", vec![0]), &dek_and);
    check(&mut tally, and, relabel(&r_and, "a", vec![1]), &dek_and);
    check(
        &mut tally,
        and,
        relabel(&r_and, "a or b", vec![0, 1]),
        &dek_and,
    );
    check(
        &mut tally,
        and,
        relabel(&r_and, "a or b", vec![1, 0]),
        &dek_and,
    );
    check(
        &mut tally,
        and,
        relabel(&r_and, "b and a", vec![1, 0]),
        &dek_and,
    );
    let thr = "a threshold relabelled";
    check(&mut tally, thr, relabel(&r_thr, "a", vec![0]), &dek_thr);
    check(
        &mut tally,
        thr,
        relabel(&r_thr, "a or b or c", vec![0, 1, 2]),
        &dek_thr,
    );
    let mixed = "parts of two ciphertexts";
    check(
        &mut tally,
        mixed,
        RawCt {
            c: r_and.c.clone(),
            ..r_a.clone()
        },
        &dek_and,
    );
    check(
        &mut tally,
        mixed,
        RawCt {
            c: r_and.c.clone(),
            c0: r_and.c0,
            ..r_a.clone()
        },
        &dek_and,
    );
    let f = RawCt {
        c: r_and.c.clone(),
        c0: r_and.c0,
        chains: r_and.chains,
        ..r_a.clone()
    };
    check(&mut tally, mixed, f, &dek_and);
    let periods = "period 5 with period 0's parts";
    let f = RawCt {
        period: 0,
        chains: r_a.chains.clone(),
        ..r_a5.clone()
    };
    check(&mut tally, periods, f, &dek_a5);
    let f = RawCt {
        period: 0,
        chains: r_a.chains.clone(),
        c0: r_a.c0,
        ..r_a5.clone()
    };
    check(&mut tally, periods, f, &dek_a5);
    let f = RawCt {
        period: 0,
        chains: r_a.chains,
        rows: r_a.rows,
        ..r_a5
    };
    check(&mut tally, periods, f, &dek_a5);
    // An updated ciphertext with a foreign period-0 ciphertext's chains.
    let (ct_x, dek_x) = s.seal("a", 0);
    let upd = RawCt::of(&s.move_to(&ct_x, 5, UpdateMode::Rerandomize));
    control.record(
        "updated ciphertext",
        opens(&dk5, &upd.ct().unwrap(), &dek_x),
    );
    let (ct_y, _) = s.seal("a", 0);
    let f = RawCt {
        period: 0,
        chains: RawCt::of(&ct_y).chains,
        ..upd
    };
    check(
        &mut tally,
        "updated ciphertext with foreign chains",
        f,
        &dek_x,
    );
    assert_eq!(control.report("mix-and-match"), (2, 2));
    assert_eq!(tally.report("mix-and-match"), (0, 14));
}
