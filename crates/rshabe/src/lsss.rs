//! Linear secret sharing over an [`AccessStructure`]: one share per leaf, in leaf order.
//!
//! AND and OR gates follow Lewko–Waters ("Decentralizing Attribute-Based Encryption",
//! EUROCRYPT 2011, appendix G), generalised to n inputs; `k of n` gates use the insertion method
//! with Shamir sharing at the points `x = 1..=n` (the child's 1-based position). Sharing walks the
//! tree instead of multiplying by a matrix; [`Lsss::matrix`] returns the matrix `M` that the walk
//! implements, so that `λ = M·y` for `y = (secret, y_2, …, y_width)`:
//!
//! * AND of `n` (share λ, parent row vector `v`): draw `y_1..y_{n-1}` and give child `j < n` the
//!   share `y_j` (row `0…0 ‖ e_j` in `n − 1` new columns) and the last child
//!   `λ − Σ y_j` (row `v ‖ (−1, …, −1)`). No input alone holds any information on λ; the parent
//!   share is never handed to one input (the bug of CIRCL's TKN20).
//! * OR: every child gets λ (row `v`).
//! * `k of n`, `1 < k < n`: a random `q` of degree `k − 1` with `q(0) = λ`; child `j` gets
//!   `q(j)` (row `v ‖ (j, j², …, j^{k−1})` in `k − 1` new columns).
//!
//! Column 0 carries the secret; an authorised set reconstructs with `Σ ω_i M_i = (1, 0, …, 0)`.

use blstrs::Scalar;
use ff::Field;
use rand_core::{CryptoRng, RngCore};

use crate::policy::{AccessStructure, Attribute, Node};

/// The linear secret-sharing scheme of one access structure. Row `i` belongs to the `i`-th leaf
/// of [`AccessStructure::leaves`].
#[derive(Clone, Debug)]
pub struct Lsss<'a> {
    policy: &'a AccessStructure,
    rows: Vec<&'a Attribute>,
}

/// A sparse row vector: `(column, value)` pairs with distinct columns.
type SparseRow = Vec<(usize, Scalar)>;

impl<'a> Lsss<'a> {
    /// The scheme for `policy`.
    pub fn new(policy: &'a AccessStructure) -> Self {
        Self {
            policy,
            rows: policy.leaves(),
        }
    }

    /// The number of rows, equal to `policy.leaf_count()`.
    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// The attribute ρ(`row`) of a row, or `None` past the last row.
    pub fn row_attribute(&self, row: usize) -> Option<&'a Attribute> {
        self.rows.get(row).copied()
    }

    /// Shares λ_i of `secret`, one per row, in leaf order. Randomness from the injected RNG only.
    ///
    /// The shares are secret (with an authorised set they give `secret`), and `blstrs::Scalar`
    /// does not zeroize: callers should consume them promptly.
    pub fn share(&self, secret: &Scalar, rng: &mut (impl RngCore + CryptoRng)) -> Vec<Scalar> {
        let mut shares = Vec::with_capacity(self.rows.len());
        share_node(self.policy.root(), *secret, rng, &mut shares);
        shares
    }

    /// Reconstruction coefficients ω_i for rows whose attribute satisfies `has`, such that
    /// Σ ω_i λ_i = secret; None if not satisfied.
    ///
    /// Rows come in ascending order, each at most once, and every ω_i is non-zero. Unused rows
    /// are absent. An OR uses its satisfied input with the fewest rows, a `k of n` its `k`
    /// satisfied inputs with the fewest rows (leftmost on ties); an AND/OR-only policy has all
    /// ω_i = 1, so decryption needs no scalar multiplications.
    pub fn coefficients(&self, has: &dyn Fn(&Attribute) -> bool) -> Option<Vec<(usize, Scalar)>> {
        let mut next_row = 0;
        let mut plan = plan_node(self.policy.root(), has, &mut next_row)?;
        plan.sort_unstable_by_key(|&(row, _)| row);
        Some(plan)
    }

    /// The share-generating matrix M (rows × width) that `share` implements, for tests and docs.
    ///
    /// Dense: up to [`crate::policy::MAX_LEAVES`] rows by about as many columns. Not for the hot
    /// path.
    pub fn matrix(&self) -> Vec<Vec<Scalar>> {
        let mut sparse = Vec::with_capacity(self.rows.len());
        let mut width = 1;
        matrix_node(
            self.policy.root(),
            &[(0, Scalar::ONE)],
            &mut width,
            &mut sparse,
        );
        sparse
            .into_iter()
            .map(|row| {
                let mut dense = vec![Scalar::ZERO; width];
                for (column, value) in row {
                    // Every column was allocated below `width` by `matrix_node`.
                    if let Some(slot) = dense.get_mut(column) {
                        *slot = value;
                    }
                }
                dense
            })
            .collect()
    }
}

/// Shares `share` among the leaves under `node`, appending to `out` in leaf order.
fn share_node<R: RngCore + CryptoRng>(
    node: &Node,
    share: Scalar,
    rng: &mut R,
    out: &mut Vec<Scalar>,
) {
    let (threshold, children) = match node {
        Node::Leaf(_) => return out.push(share),
        Node::Gate {
            threshold,
            children,
        } => (*threshold, children),
    };
    if threshold == children.len() {
        // AND: additive sharing; the last input gets the remainder.
        let Some((last, first)) = children.split_last() else {
            return;
        };
        let mut rest = share;
        for child in first {
            let part = Scalar::random(&mut *rng);
            rest -= part;
            share_node(child, part, rng, out);
        }
        share_node(last, rest, rng, out);
    } else if threshold == 1 {
        for child in children {
            share_node(child, share, rng, out);
        }
    } else {
        // Shamir: q(x) = share + a_1 x + … + a_{k-1} x^{k-1}, child j gets q(j).
        let coefficients: Vec<Scalar> = (1..threshold).map(|_| Scalar::random(&mut *rng)).collect();
        for (child, x) in children.iter().zip(points()) {
            let tail = coefficients
                .iter()
                .rev()
                .fold(Scalar::ZERO, |acc, a| (acc + a) * x);
            share_node(child, share + tail, rng, out);
        }
    }
}

/// Coefficients, relative to `node`'s share, of the cheapest way to reconstruct it; `next_row` is
/// the row of `node`'s first leaf and is advanced past all of them.
fn plan_node(
    node: &Node,
    has: &dyn Fn(&Attribute) -> bool,
    next_row: &mut usize,
) -> Option<SparseRow> {
    let (threshold, children) = match node {
        Node::Leaf(attribute) => {
            let row = *next_row;
            *next_row += 1;
            return has(attribute).then(|| vec![(row, Scalar::ONE)]);
        }
        Node::Gate {
            threshold,
            children,
        } => (*threshold, children),
    };
    // Plan every child, even after a failure, so that row numbers stay right.
    let plans: Vec<Option<SparseRow>> = children
        .iter()
        .map(|child| plan_node(child, has, next_row))
        .collect();
    if threshold == children.len() {
        return plans
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .map(|p| p.concat());
    }
    let mut usable: Vec<(Scalar, SparseRow)> = points()
        .zip(plans)
        .filter_map(|(x, plan)| plan.map(|plan| (x, plan)))
        .collect();
    if usable.len() < threshold {
        return None;
    }
    usable.sort_by_key(|(_, plan)| plan.len()); // stable: leftmost wins ties
    usable.truncate(threshold);
    if threshold == 1 {
        return usable.pop().map(|(_, plan)| plan);
    }
    let xs: Vec<Scalar> = usable.iter().map(|&(x, _)| x).collect();
    let mut out = Vec::new();
    for (x, plan) in usable {
        let weight = lagrange_at_zero(x, &xs)?;
        out.extend(plan.into_iter().map(|(row, c)| (row, c * weight)));
    }
    Some(out)
}

/// Appends the rows under `node`, whose share has row vector `vector`, allocating new columns
/// from `width` onwards.
fn matrix_node(
    node: &Node,
    vector: &[(usize, Scalar)],
    width: &mut usize,
    out: &mut Vec<SparseRow>,
) {
    let (threshold, children) = match node {
        Node::Leaf(_) => return out.push(vector.to_vec()),
        Node::Gate {
            threshold,
            children,
        } => (*threshold, children),
    };
    let n = children.len();
    let first_column = *width;
    if threshold == n {
        // Columns are fixed before recursing: the children allocate theirs after these.
        let columns = first_column..first_column + n - 1;
        *width = columns.end;
        for (j, child) in children.iter().enumerate() {
            let row = if j + 1 < n {
                vec![(first_column + j, Scalar::ONE)]
            } else {
                let minus_one = -Scalar::ONE;
                vector
                    .iter()
                    .copied()
                    .chain(columns.clone().map(|c| (c, minus_one)))
                    .collect()
            };
            matrix_node(child, &row, width, out);
        }
    } else if threshold == 1 {
        for child in children {
            matrix_node(child, vector, width, out);
        }
    } else {
        *width += threshold - 1;
        for (child, x) in children.iter().zip(points()) {
            let powers = (first_column..first_column + threshold - 1).scan(Scalar::ONE, |p, c| {
                *p *= x;
                Some((c, *p))
            });
            let row: SparseRow = vector.iter().copied().chain(powers).collect();
            matrix_node(child, &row, width, out);
        }
    }
}

/// The Shamir evaluation points 1, 2, 3, … of a gate's children.
fn points() -> impl Iterator<Item = Scalar> {
    (1u64..).map(Scalar::from)
}

/// L_x(0) = Π_{m ≠ x} m / (m − x) over the points `xs`. The points are distinct and at most
/// `MAX_CHILDREN`, far below the group order, so the denominator is never zero; the `None` branch
/// of the inversion fails closed rather than panicking.
fn lagrange_at_zero(x: Scalar, xs: &[Scalar]) -> Option<Scalar> {
    let (numerator, denominator) = xs
        .iter()
        .filter(|&&m| m != x)
        .fold((Scalar::ONE, Scalar::ONE), |(num, den), &m| {
            (num * m, den * (m - x))
        });
    Option::<Scalar>::from(denominator.invert()).map(|inverse| numerator * inverse)
}

#[cfg(test)]
mod tests;
