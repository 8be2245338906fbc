//! Attacks written on the group elements: what a coalition or a revoked user would compute,
//! checked first against honest keys (the computation is faithful) and then with the keys an
//! attacker actually holds (it fails).

use blstrs::{Bls12, G1Affine, G1Projective, G2Affine, G2Prepared, Scalar};
use ff::Field;
use group::Group;
use pairing::{MillerLoopResult, MultiMillerLoop};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::*;
use crate::key::AttributeKey;
use crate::{Attribute, RevocationList};

/// The key rows an attacker assembles: `K0, K1, K1_T`, a key row and coefficient per policy row it
/// uses, and a key row per node of the chain it uses.
struct Assembly {
    heads: [G2Affine; 3],
    policy_rows: Vec<(usize, Scalar, AttributeKey)>,
    chain: usize,
    time_rows: Vec<AttributeKey>,
}

/// The decryption equation of RS-HABE.md §4 on arbitrary key material, without any of
/// `decrypt`'s checks.
fn attempt(ct: &Ciphertext, a: &Assembly) -> Option<DataKey> {
    let mut g1 = vec![G1Projective::from(ct.c0), G1Projective::identity()];
    let mut g2 = a.heads[..2].to_vec();
    for (i, w, k) in &a.policy_rows {
        let row = ct.rows[*i];
        g1[1] -= row.c1 * w;
        g1.extend([-(row.c2 * w), -(row.c3 * w)]);
        g2.extend([k.k2, k.k3]);
    }
    let chain = &ct.chains[a.chain];
    g1.push(
        -chain
            .iter()
            .map(|t| G1Projective::from(t.row.c1))
            .sum::<G1Projective>(),
    );
    g2.push(a.heads[2]);
    for (t, k) in chain.iter().zip(&a.time_rows) {
        g1.extend([-G1Projective::from(t.row.c2), -G1Projective::from(t.row.c3)]);
        g2.extend([k.k2, k.k3]);
    }
    let p1 = normalize(&g1);
    let p2: Vec<G2Prepared> = g2.into_iter().map(G2Prepared::from).collect();
    let terms: Vec<(&G1Affine, &G2Prepared)> = p1.iter().zip(&p2).collect();
    let m = ct.c - Bls12::multi_miller_loop(&terms).final_exponentiation();
    DataKey::derive(&m).ok()
}

fn heads(dk: &DecryptionKey) -> [G2Affine; 3] {
    [dk.elements[K0], dk.elements[K1], dk.elements[K1_T]]
}

fn attribute_row(dk: &DecryptionKey, name: &str) -> AttributeKey {
    let a = Attribute::new(name).unwrap();
    dk.row(dk.attribute_row(&a).unwrap()).unwrap()
}

/// The key's time row at the depth of `node`, whether or not `node` is on the key's path: the
/// closest thing a key of another period has.
fn time_row_at_depth(dk: &DecryptionKey, node: Node) -> AttributeKey {
    let base = 3 + 2 * dk.attributes.len() + 2 * usize::from(node.depth());
    dk.row((base, base + 1)).unwrap()
}

fn chain_rows(dk: &DecryptionKey, ct: &Ciphertext, chain: usize) -> Vec<AttributeKey> {
    ct.chains[chain]
        .iter()
        .map(|t| time_row_at_depth(dk, t.node))
        .collect()
}

/// Index of a chain the key's period can use.
fn usable_chain(dk: &DecryptionKey, ct: &Ciphertext) -> usize {
    ct.chains
        .iter()
        .position(|c| c.iter().all(|r| dk.time_row(r.node).is_some()))
        .unwrap()
}

struct Fixture {
    pp: PublicParams,
    msk: crate::MasterSecret,
    rng: ChaCha20Rng,
}

impl Fixture {
    fn new(seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let (pp, msk) = crate::setup(Params::new(4, 4).unwrap(), &mut rng);
        Self { pp, msk, rng }
    }

    fn dk(&mut self, leaf: u64, names: &[&str], period: u64) -> DecryptionKey {
        let attributes: Vec<Attribute> = names.iter().map(|n| Attribute::new(n).unwrap()).collect();
        let sk = crate::keygen(&self.pp, &self.msk, leaf, &attributes, &mut self.rng).unwrap();
        let ku = crate::key_update(
            &self.pp,
            &self.msk,
            period,
            &RevocationList::new(),
            &mut self.rng,
        )
        .unwrap();
        crate::decrypt_key(&self.pp, &sk, &ku, &mut self.rng).unwrap()
    }

    fn seal(&mut self, policy: &str, period: u64) -> (Ciphertext, DataKey) {
        let policy = AccessStructure::parse(policy).unwrap();
        encrypt(&self.pp, &policy, period, &mut self.rng).unwrap()
    }
}

#[test]
fn two_users_cannot_pool_their_key_rows() {
    let mut f = Fixture::new(1);
    let (ct, dek) = f.seal("a and b", 0);
    let both = f.dk(1, &["a", "b"], 0);
    let alice = f.dk(2, &["a"], 0);
    let bob = f.dk(3, &["b"], 0);
    let chain = usable_chain(&both, &ct);
    let honest = Assembly {
        heads: heads(&both),
        policy_rows: vec![
            (0, Scalar::ONE, attribute_row(&both, "a")),
            (1, Scalar::ONE, attribute_row(&both, "b")),
        ],
        chain,
        time_rows: chain_rows(&both, &ct, chain),
    };
    assert_eq!(
        attempt(&ct, &honest),
        Some(dek.clone()),
        "the attempt is the real equation"
    );
    for (lead, other) in [(&alice, &bob), (&bob, &alice)] {
        let pooled = Assembly {
            heads: heads(lead),
            policy_rows: vec![
                (0, Scalar::ONE, attribute_row(&alice, "a")),
                (1, Scalar::ONE, attribute_row(&bob, "b")),
            ],
            chain,
            time_rows: chain_rows(lead, &ct, chain),
        };
        assert_ne!(attempt(&ct, &pooled), Some(dek.clone()));
        // Mixing the time rows in as well does not help.
        let mixed = Assembly {
            time_rows: chain_rows(other, &ct, chain),
            ..pooled
        };
        assert_ne!(attempt(&ct, &mixed), Some(dek.clone()));
    }
}

#[test]
fn no_single_leaf_of_an_and_opens_it() {
    let mut f = Fixture::new(2);
    let (ct, dek) = f.seal("a and b", 0);
    let alice = f.dk(1, &["a"], 0);
    let both = f.dk(2, &["a", "b"], 0);
    let chain = usable_chain(&alice, &ct);
    let honest = Assembly {
        heads: heads(&both),
        policy_rows: vec![
            (0, Scalar::ONE, attribute_row(&both, "a")),
            (1, Scalar::ONE, attribute_row(&both, "b")),
        ],
        chain,
        time_rows: chain_rows(&both, &ct, chain),
    };
    assert_eq!(attempt(&ct, &honest), Some(dek.clone()));
    let mut rng = ChaCha20Rng::seed_from_u64(20);
    for w in [
        Scalar::ONE,
        -Scalar::ONE,
        Scalar::from(2u64),
        Scalar::random(&mut rng),
    ] {
        let alone = Assembly {
            heads: heads(&alice),
            policy_rows: vec![(0, w, attribute_row(&alice, "a"))],
            chain,
            time_rows: chain_rows(&alice, &ct, chain),
        };
        assert_ne!(attempt(&ct, &alone), Some(dek.clone()));
    }
    assert_eq!(decrypt(&alice, &ct), Err(Error::Decryption));
}

#[test]
fn an_old_periods_key_cannot_use_the_new_chains() {
    let mut f = Fixture::new(3);
    let (ct0, dek) = f.seal("a", 0);
    for (old, new) in [(2u64, 3u64), (4, 9), (7, 8), (0, 15)] {
        let ct = ct_update(&f.pp, &ct0, new, UpdateMode::Minimal, &mut f.rng).unwrap();
        let current = f.dk(5, &["a"], new);
        let stale = f.dk(5, &["a"], old);
        let chain = usable_chain(&current, &ct);
        let honest = Assembly {
            heads: heads(&current),
            policy_rows: vec![(0, Scalar::ONE, attribute_row(&current, "a"))],
            chain,
            time_rows: chain_rows(&current, &ct, chain),
        };
        assert_eq!(attempt(&ct, &honest), Some(dek.clone()), "{old} -> {new}");
        // Forward security: the stale key tries every chain with its own rows at each depth.
        for chain in 0..ct.chains.len() {
            let forged = Assembly {
                heads: heads(&stale),
                policy_rows: vec![(0, Scalar::ONE, attribute_row(&stale, "a"))],
                chain,
                time_rows: chain_rows(&stale, &ct, chain),
            };
            assert_ne!(
                attempt(&ct, &forged),
                Some(dek.clone()),
                "{old} -> {new}, chain {chain}"
            );
        }
        // Backward security: nor a ciphertext sealed fresh at the new period.
        let (fresh, fresh_dek) = f.seal("a", new);
        for chain in 0..fresh.chains.len() {
            let forged = Assembly {
                heads: heads(&stale),
                policy_rows: vec![(0, Scalar::ONE, attribute_row(&stale, "a"))],
                chain,
                time_rows: chain_rows(&stale, &fresh, chain),
            };
            assert_ne!(attempt(&fresh, &forged), Some(fresh_dek.clone()));
        }
    }
}

#[test]
fn the_split_rows_of_an_update_do_not_open_alone() {
    // After an update the old chain's last row carries λ − z; a key for the old node cannot drop
    // the new row and still reconstruct.
    let mut f = Fixture::new(4);
    let (ct0, dek) = f.seal("a", 0);
    let ct = ct_update(&f.pp, &ct0, 2, UpdateMode::Minimal, &mut f.rng).unwrap();
    let key = f.dk(6, &["a"], 2);
    let chain = usable_chain(&key, &ct);
    assert!(ct.chains[chain].len() >= 2);
    let truncated = {
        let mut ct = ct;
        ct.chains[chain].pop();
        ct
    };
    let forged = Assembly {
        heads: heads(&key),
        policy_rows: vec![(0, Scalar::ONE, attribute_row(&key, "a"))],
        chain,
        time_rows: chain_rows(&key, &truncated, chain),
    };
    assert_ne!(attempt(&truncated, &forged), Some(dek));
}
