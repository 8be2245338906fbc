//! Worked cases, written independently of the implementation (by a second engineer against the
//! API contract) and kept as a cross-check: Lewko–Waters rows, Lagrange coefficients, the cheapest
//! inputs, repeated attributes, RNG injection and the largest policy.

use blstrs::Scalar;
use ff::Field;
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::super::*;
use crate::access::{AccessStructure, Attribute, Node};

fn parse(s: &str) -> AccessStructure {
    AccessStructure::parse(s).unwrap()
}

fn holder(names: &[&str]) -> impl Fn(&Attribute) -> bool + use<> {
    let set: Vec<Attribute> = names.iter().map(|n| Attribute::new(n).unwrap()).collect();
    move |a| set.contains(a)
}

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

fn s(n: i64) -> Scalar {
    if n < 0 {
        -Scalar::from(n.unsigned_abs())
    } else {
        Scalar::from(n as u64)
    }
}

/// Rank of a matrix over the scalar field, by Gaussian elimination.
fn rank(mut rows: Vec<Vec<Scalar>>) -> usize {
    let width = rows.first().map_or(0, Vec::len);
    let mut rank = 0;
    for column in 0..width {
        let Some(pivot) = (rank..rows.len()).find(|&r| !bool::from(rows[r][column].is_zero()))
        else {
            continue;
        };
        rows.swap(rank, pivot);
        let inverse = rows[rank][column].invert().unwrap();
        let pivot_row: Vec<Scalar> = rows[rank].iter().map(|v| v * inverse).collect();
        for (r, row) in rows.iter_mut().enumerate() {
            if r != rank && !bool::from(row[column].is_zero()) {
                let factor = row[column];
                for (v, p) in row.iter_mut().zip(&pivot_row) {
                    *v -= factor * p;
                }
            }
        }
        rows[rank] = pivot_row;
        rank += 1;
    }
    rank
}

/// Whether e1 = (1, 0, …, 0) is a linear combination of the given rows of `m`.
fn e1_in_span(m: &[Vec<Scalar>], rows: &[usize]) -> bool {
    let chosen: Vec<Vec<Scalar>> = rows.iter().map(|&r| m[r].clone()).collect();
    let mut e1 = vec![Scalar::ZERO; m[0].len()];
    e1[0] = Scalar::ONE;
    let mut with_e1 = chosen.clone();
    with_e1.push(e1);
    rank(with_e1) == rank(chosen)
}

/// Whether `shares = M·y` has a solution y (shares in the column space of M).
fn shares_fit_matrix(m: &[Vec<Scalar>], shares: &[Scalar]) -> bool {
    let augmented: Vec<Vec<Scalar>> = m
        .iter()
        .zip(shares)
        .map(|(row, l)| row.iter().copied().chain([*l]).collect())
        .collect();
    rank(augmented) == rank(m.to_vec())
}

fn reconstruct(coefficients: &[(usize, Scalar)], shares: &[Scalar]) -> Scalar {
    coefficients.iter().map(|(row, w)| shares[*row] * w).sum()
}

fn combine_rows(coefficients: &[(usize, Scalar)], m: &[Vec<Scalar>]) -> Vec<Scalar> {
    let mut sum = vec![Scalar::ZERO; m[0].len()];
    for (row, w) in coefficients {
        for (acc, v) in sum.iter_mut().zip(&m[*row]) {
            *acc += v * w;
        }
    }
    sum
}

fn e1(width: usize) -> Vec<Scalar> {
    let mut e1 = vec![Scalar::ZERO; width];
    e1[0] = Scalar::ONE;
    e1
}

/// Rows of `lsss` whose attribute `has` accepts.
fn owned_rows(lsss: &Lsss<'_>, has: &dyn Fn(&Attribute) -> bool) -> Vec<usize> {
    (0..lsss.rows())
        .filter(|&r| has(lsss.row_attribute(r).unwrap()))
        .collect()
}

#[test]
fn no_single_leaf_of_an_and_reconstructs() {
    /// Attribute sets: each inner slice is one holder's attributes.
    type Sets = &'static [&'static [&'static str]];
    let cases: &[(&str, Sets, Sets)] = &[
        ("a and b", &[&["a"], &["b"]], &[&["a", "b"]]),
        (
            "a and b and c",
            &[
                &["a"],
                &["b"],
                &["c"],
                &["a", "b"],
                &["a", "c"],
                &["b", "c"],
            ],
            &[&["a", "b", "c"]],
        ),
        (
            "2 of (a, b, c)",
            &[&["a"], &["b"], &["c"]],
            &[&["a", "b"], &["a", "c"], &["b", "c"]],
        ),
    ];
    let secret = Scalar::random(rng(1));
    for (formula, denied, allowed) in cases {
        let policy = parse(formula);
        let lsss = Lsss::new(&policy);
        let m = lsss.matrix();
        let shares = lsss.share(&secret, &mut rng(2));
        for set in *denied {
            let has = holder(set);
            assert!(lsss.coefficients(&has).is_none(), "{formula} with {set:?}");
            assert!(
                !e1_in_span(&m, &owned_rows(&lsss, &has)),
                "{formula} with {set:?}"
            );
        }
        for share in &shares {
            assert_ne!(
                *share, secret,
                "{formula}: a single share equals the secret"
            );
        }
        for set in *allowed {
            let has = holder(set);
            let coefficients = lsss.coefficients(&has).unwrap();
            assert_eq!(
                reconstruct(&coefficients, &shares),
                secret,
                "{formula} with {set:?}"
            );
            assert!(e1_in_span(&m, &owned_rows(&lsss, &has)));
        }
    }
}

#[test]
fn two_input_and_is_lewko_waters() {
    let policy = parse("a and b");
    let m = Lsss::new(&policy).matrix();
    assert_eq!(m, vec![vec![s(0), s(1)], vec![s(1), s(-1)]]);
    let policy = parse("a or b");
    assert_eq!(Lsss::new(&policy).matrix(), vec![vec![s(1)], vec![s(1)]]);
    let policy = parse("2 of (a, b, c)");
    let m = Lsss::new(&policy).matrix();
    assert_eq!(
        m,
        vec![vec![s(1), s(1)], vec![s(1), s(2)], vec![s(1), s(3)]]
    );
}

/// Regression (found by the property test): an AND's last child must get −1 only in the AND's
/// own columns, not in columns its earlier children allocated.
#[test]
fn and_last_row_uses_only_its_own_columns() {
    let policy = parse("2 of (a, b, c) and d");
    let lsss = Lsss::new(&policy);
    let m = lsss.matrix();
    let expected = [[0, 1, 1], [0, 1, 2], [0, 1, 3], [1, -1, 0]];
    let expected: Vec<Vec<Scalar>> = expected.iter().map(|r| r.map(s).to_vec()).collect();
    assert_eq!(m, expected);
    let coefficients = lsss.coefficients(&holder(&["a", "b", "d"])).unwrap();
    assert_eq!(combine_rows(&coefficients, &m), e1(3));
}

#[test]
fn threshold_coefficients_are_lagrange_at_zero() {
    let policy = parse("2 of (a, b, c)");
    let lsss = Lsss::new(&policy);
    // Points 2 and 3: L_2(0) = 3 / (3 − 2) = 3, L_3(0) = 2 / (2 − 3) = −2.
    assert_eq!(
        lsss.coefficients(&holder(&["b", "c"])),
        Some(vec![(1, s(3)), (2, s(-2))])
    );
    // All three held: the two leftmost are used.
    assert_eq!(
        lsss.coefficients(&holder(&["a", "b", "c"])),
        Some(vec![(0, s(2)), (1, s(-1))])
    );
}

#[test]
fn and_or_policies_use_coefficient_one() {
    let policy = parse("(a and b) or (c and (d or e))");
    let lsss = Lsss::new(&policy);
    let coefficients = lsss.coefficients(&holder(&["c", "e"])).unwrap();
    assert_eq!(coefficients, vec![(2, Scalar::ONE), (4, Scalar::ONE)]);
}

#[test]
fn cheapest_inputs_are_chosen() {
    let policy = parse("(a and b and c) or d");
    let lsss = Lsss::new(&policy);
    assert_eq!(
        lsss.coefficients(&holder(&["a", "b", "c", "d"])),
        Some(vec![(3, Scalar::ONE)])
    );
    let policy = parse("2 of (a and b, c, d and e)");
    let lsss = Lsss::new(&policy);
    let used = lsss
        .coefficients(&holder(&["a", "b", "c", "d", "e"]))
        .unwrap();
    let rows: Vec<usize> = used.iter().map(|(r, _)| *r).collect();
    assert_eq!(rows, [0, 1, 2]);
}

#[test]
fn repeated_attributes_work() {
    let policy = parse("(a and b) or (a and c)");
    let lsss = Lsss::new(&policy);
    let names: Vec<&str> = (0..lsss.rows())
        .map(|r| lsss.row_attribute(r).unwrap().as_str())
        .collect();
    assert_eq!(names, ["a", "b", "a", "c"]);
    assert_eq!(lsss.row_attribute(4), None);
    let secret = Scalar::random(rng(3));
    let shares = lsss.share(&secret, &mut rng(4));
    let coefficients = lsss.coefficients(&holder(&["a", "c"])).unwrap();
    assert_eq!(
        coefficients.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
        [2, 3]
    );
    assert_eq!(reconstruct(&coefficients, &shares), secret);
    assert!(lsss.coefficients(&holder(&["a"])).is_none());
    assert!(!e1_in_span(&lsss.matrix(), &[0, 2]));

    let policy = parse("2 of (a, a and b, c)");
    let lsss = Lsss::new(&policy);
    let shares = lsss.share(&secret, &mut rng(5));
    let coefficients = lsss.coefficients(&holder(&["a", "b"])).unwrap();
    assert_eq!(reconstruct(&coefficients, &shares), secret);
}

#[test]
fn sharing_depends_only_on_the_injected_rng() {
    let policy = parse("a and 2 of (b, c, d or e)");
    let lsss = Lsss::new(&policy);
    let secret = s(42);
    assert_eq!(
        lsss.share(&secret, &mut rng(7)),
        lsss.share(&secret, &mut rng(7))
    );
    assert_ne!(
        lsss.share(&secret, &mut rng(7)),
        lsss.share(&secret, &mut rng(8))
    );
    assert_eq!(lsss.rows(), policy.leaf_count());
}

#[test]
fn largest_policy_shares_and_reconstructs() {
    let names: Vec<String> = (0..256).map(|i| format!("x{i}")).collect();
    let group = format!("({})", names.join(" and "));
    let policy = parse(&[group.as_str(); 4].join(" or "));
    let lsss = Lsss::new(&policy);
    assert_eq!(lsss.rows(), crate::access::MAX_LEAVES);
    let secret = Scalar::random(rng(9));
    let shares = lsss.share(&secret, &mut rng(10));
    let coefficients = lsss.coefficients(&|_| true).unwrap();
    assert_eq!(coefficients.len(), 256);
    assert_eq!(reconstruct(&coefficients, &shares), secret);
}

// === property tests ===

const NAMES: &[&str] = &["a", "b", "c", "d", "e"];

/// Random access structures with thresholds: depth up to 4, up to 12 leaves, repeated names.
fn arb_policy() -> impl Strategy<Value = AccessStructure> {
    let leaf = prop::sample::select(NAMES).prop_map(|n| Node::Leaf(Attribute::new(n).unwrap()));
    leaf.prop_recursive(4, 24, 4, |inner| {
        (
            prop::collection::vec(inner, 1..5),
            any::<prop::sample::Index>(),
        )
            .prop_map(|(children, k)| Node::Gate {
                threshold: 1 + k.index(children.len()),
                children,
            })
    })
    .prop_map(|node| AccessStructure::from_node(node).unwrap())
    .prop_filter("at most 12 leaves", |p| p.leaf_count() <= 12)
}

proptest! {
    #[test]
    fn coefficients_exist_iff_satisfied_and_reconstruct(
        policy in arb_policy(),
        mask in 0u8..32,
        seed in any::<u64>(),
    ) {
        let lsss = Lsss::new(&policy);
        let has = |a: &Attribute| {
            NAMES.iter().position(|n| *n == a.as_str()).is_some_and(|i| mask & (1 << i) != 0)
        };
        let m = lsss.matrix();
        let mut rng = rng(seed);
        let secret = Scalar::random(&mut rng);
        let shares = lsss.share(&secret, &mut rng);
        prop_assert_eq!(m.len(), lsss.rows());
        prop_assert_eq!(shares.len(), lsss.rows());
        prop_assert!(shares_fit_matrix(&m, &shares));

        let coefficients = lsss.coefficients(&has);
        prop_assert_eq!(coefficients.is_some(), policy.is_satisfied_by(&has));
        match coefficients {
            Some(coefficients) => {
                prop_assert_eq!(reconstruct(&coefficients, &shares), secret);
                prop_assert_eq!(combine_rows(&coefficients, &m), e1(m[0].len()), "{} {} {:?}", policy, mask, coefficients);
                prop_assert!(coefficients.windows(2).all(|w| w[0].0 < w[1].0));
                for (row, w) in &coefficients {
                    prop_assert!(has(lsss.row_attribute(*row).unwrap()));
                    prop_assert!(!bool::from(w.is_zero()));
                }
            }
            None => prop_assert!(!e1_in_span(&m, &owned_rows(&lsss, &has))),
        }
    }
}
