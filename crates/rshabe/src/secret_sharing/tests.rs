use ff::Field;
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::*;

fn leaf(name: &str) -> Node {
    Node::Leaf(Attribute::new(name).unwrap())
}

/// Whether `e1 = (1, 0, …, 0)` lies in the span of `rows` (Gaussian elimination over `Z_r`).
fn spans_target(rows: &[Vec<Scalar>]) -> bool {
    let Some(width) = rows.first().map(Vec::len) else {
        return false;
    };
    // Solve Mᵀ·w = e1: columns of the augmented system are the rows.
    let mut a: Vec<Vec<Scalar>> = (0..width)
        .map(|c| {
            let mut eq: Vec<Scalar> = rows.iter().map(|r| r[c]).collect();
            eq.push(if c == 0 { Scalar::ONE } else { Scalar::ZERO });
            eq
        })
        .collect();
    let n = rows.len();
    let mut pivot_row = 0;
    for col in 0..n {
        let Some(p) = (pivot_row..width).find(|&r| !bool::from(a[r][col].is_zero())) else {
            continue;
        };
        a.swap(pivot_row, p);
        let inv = a[pivot_row][col].invert().unwrap();
        for x in a[pivot_row].iter_mut() {
            *x *= inv;
        }
        for r in 0..width {
            if r != pivot_row && !bool::from(a[r][col].is_zero()) {
                let f = a[r][col];
                let pr = a[pivot_row].clone();
                for (x, y) in a[r].iter_mut().zip(pr) {
                    *x -= f * y;
                }
            }
        }
        pivot_row += 1;
    }
    (pivot_row..width).all(|r| bool::from(a[r][n].is_zero()))
}

fn rows_held(lsss: &Lsss<'_>, m: &[Vec<Scalar>], held: &[&str]) -> Vec<Vec<Scalar>> {
    (0..lsss.rows())
        .filter(|&i| held.contains(&lsss.row_attribute(i).unwrap().as_str()))
        .map(|i| m[i].clone())
        .collect()
}

#[test]
fn no_single_leaf_of_an_and_reconstructs() {
    for (formula, insufficient) in [
        ("a and b", vec![vec!["a"], vec!["b"]]),
        (
            "a and b and c",
            vec![
                vec!["a"],
                vec!["b"],
                vec!["c"],
                vec!["a", "b"],
                vec!["b", "c"],
                vec!["a", "c"],
            ],
        ),
        ("2 of (a, b, c)", vec![vec!["a"], vec!["b"], vec!["c"]]),
        (
            "(a or b) and c",
            vec![vec!["a"], vec!["b"], vec!["c"], vec!["a", "b"]],
        ),
    ] {
        let p = AccessStructure::parse(formula).unwrap();
        let lsss = Lsss::new(&p);
        let m = lsss.matrix();
        for held in insufficient {
            assert!(
                !spans_target(&rows_held(&lsss, &m, &held)),
                "{formula} with {held:?}"
            );
            assert!(lsss.coefficients(&|a| held.contains(&a.as_str())).is_none());
        }
        let all = ["a", "b", "c"];
        assert!(spans_target(&rows_held(&lsss, &m, &all)), "{formula}");
    }
}

#[test]
fn and_or_coefficients_are_all_one() {
    let p = AccessStructure::parse("(a and b) or (c and d and e)").unwrap();
    let lsss = Lsss::new(&p);
    let w = lsss.coefficients(&|_| true).unwrap();
    assert_eq!(
        w.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
        [0, 1],
        "the cheaper branch"
    );
    assert!(w.iter().all(|(_, c)| *c == Scalar::ONE));
}

#[test]
fn repeated_attributes_reconstruct() {
    let p = AccessStructure::parse("(a and b) or (a and c)").unwrap();
    let lsss = Lsss::new(&p);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let s = Scalar::random(&mut rng);
    let shares = lsss.share(&s, &mut rng);
    let w = lsss.coefficients(&|x| x.as_str() != "b").unwrap();
    assert_eq!(w.iter().map(|(r, c)| shares[*r] * c).sum::<Scalar>(), s);
    assert_eq!(w.iter().map(|(r, _)| *r).collect::<Vec<_>>(), [2, 3]);
}

fn trees() -> impl Strategy<Value = Node> {
    prop::sample::select(vec!["a", "b", "c", "d", "e"])
        .prop_map(leaf)
        .prop_recursive(4, 12, 4, |inner| {
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
    #[test]
    fn shares_reconstruct_exactly_for_satisfying_sets(
        root in trees(),
        held in prop::collection::btree_set(prop::sample::select(vec!["a", "b", "c", "d", "e"]), 0..=5),
        seed in any::<u64>(),
    ) {
        let p = AccessStructure::from_node(root).unwrap();
        let lsss = Lsss::new(&p);
        let has = |a: &Attribute| held.contains(a.as_str());
        let m = lsss.matrix();
        prop_assert_eq!(m.len(), lsss.rows());
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let s = Scalar::random(&mut rng);
        let shares = lsss.share(&s, &mut rng);
        prop_assert_eq!(shares.len(), lsss.rows());
        let held_rows: Vec<&str> = held.iter().copied().collect();
        match lsss.coefficients(&has) {
            Some(w) => {
                prop_assert!(p.is_satisfied_by(&has));
                prop_assert!(w.iter().all(|(r, _)| has(lsss.row_attribute(*r).unwrap())));
                prop_assert_eq!(w.iter().map(|(r, c)| shares[*r] * c).sum::<Scalar>(), s);
                let mut combined = vec![Scalar::ZERO; m[0].len()];
                for (r, c) in &w {
                    for (acc, x) in combined.iter_mut().zip(&m[*r]) {
                        *acc += *x * c;
                    }
                }
                prop_assert!(combined[0] == Scalar::ONE);
                prop_assert!(combined[1..].iter().all(|x| bool::from(x.is_zero())));
            }
            None => {
                prop_assert!(!p.is_satisfied_by(&has));
                prop_assert!(!spans_target(&rows_held(&lsss, &m, &held_rows)));
            }
        }
    }
}

mod cases;
