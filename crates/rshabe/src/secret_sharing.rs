//! Linear secret sharing (LSSS) for access structures: Lewko–Waters for AND and OR, the
//! generalised insertion method for `k of n` gates.
//!
//! Shares are computed by walking the tree rather than by a matrix product:
//!
//! - an AND of `n` children given share `λ` draws `y₁ … y_{n−1}`; children `1 … n−1` get `y_j`
//!   and the last child gets `λ − Σ y_j` (matrix rows `0…0‖e_j` and `v‖(−1,…,−1)`; for `n = 2`
//!   this is Lewko–Waters). No child of an AND receives the parent's share: that was Cloudflare
//!   CIRCL's TKN20 bug, where any key opened any ciphertext.
//! - an OR gives every child `λ` (the parent's row `v`);
//! - `k of n` draws a polynomial `q` of degree `k − 1` with `q(0) = λ` and gives child `j` the
//!   value `q(j)` (rows `v‖(j, j², …, j^{k−1})`).
//!
//! [`Lsss::matrix`] builds the matrix `M` these steps implement, with target vector
//! `(1, 0, …, 0)`, so that tests can check the algebra on it. Reconstruction coefficients are
//! 1 for AND and OR (decryption then needs only additions in G1) and public Lagrange
//! coefficients at 0 for thresholds.

use blstrs::Scalar;
use ff::Field;
use rand_core::{CryptoRng, RngCore};

use crate::access::{AccessStructure, Attribute, Node};
use crate::backend;

/// The LSSS of one access structure: one row per attribute occurrence, in leaf order.
#[derive(Debug)]
pub struct Lsss<'a> {
    policy: &'a AccessStructure,
    leaves: Vec<&'a Attribute>,
}

impl<'a> Lsss<'a> {
    /// The LSSS of `policy`.
    pub fn new(policy: &'a AccessStructure) -> Self {
        Lsss {
            policy,
            leaves: policy.leaves(),
        }
    }

    /// How many rows (attribute occurrences).
    pub fn rows(&self) -> usize {
        self.leaves.len()
    }

    /// The attribute that labels row `row`.
    pub fn row_attribute(&self, row: usize) -> Option<&'a Attribute> {
        self.leaves.get(row).copied()
    }

    /// The shares `λ_i` of `secret`, one per row in leaf order. Randomness comes only from `rng`;
    /// the intermediate random values are wiped.
    pub fn share(&self, secret: &Scalar, rng: &mut (impl CryptoRng + RngCore)) -> Vec<Scalar> {
        let mut out = Vec::with_capacity(self.leaves.len());
        share(self.policy.root(), *secret, rng, &mut out);
        out
    }

    /// Coefficients `ω_i` over rows whose attribute satisfies `has`, with `Σ ω_i λ_i = secret`,
    /// by ascending row, each row at most once; `None` if the attributes do not satisfy the
    /// structure. Among the ways to satisfy an OR or a
    /// threshold it picks those using the fewest rows (fewest pairings to decrypt).
    pub fn coefficients(&self, has: &dyn Fn(&Attribute) -> bool) -> Option<Vec<(usize, Scalar)>> {
        let mut w = solve(self.policy.root(), 0, has)?;
        w.sort_unstable_by_key(|(row, _)| *row);
        Some(w)
    }

    /// The share-generating matrix `M` (rows × columns) that [`Lsss::share`] implements: the
    /// shares are `M·(secret, y₂, …)` for the random `y` it draws.
    pub fn matrix(&self) -> Vec<Vec<Scalar>> {
        let mut rows = Vec::with_capacity(self.leaves.len());
        let mut width = 1;
        build(self.policy.root(), vec![Scalar::ONE], &mut width, &mut rows);
        for row in &mut rows {
            row.resize(width, Scalar::ZERO);
        }
        rows
    }
}

fn share(node: &Node, lambda: Scalar, rng: &mut (impl CryptoRng + RngCore), out: &mut Vec<Scalar>) {
    let (k, children) = match node {
        Node::Leaf(_) => return out.push(lambda),
        Node::Gate {
            threshold,
            children,
        } => (*threshold, children),
    };
    let n = children.len();
    if k == 1 {
        children.iter().for_each(|c| share(c, lambda, rng, out));
    } else if k == n {
        let mut rest = lambda;
        for (j, child) in children.iter().enumerate() {
            let mut y = if j + 1 == n {
                rest
            } else {
                Scalar::random(&mut *rng)
            };
            rest -= y;
            share(child, y, rng, out);
            backend::wipe_scalar(&mut y);
        }
        backend::wipe_scalar(&mut rest);
    } else {
        let mut coefficients: Vec<Scalar> = (1..k).map(|_| Scalar::random(&mut *rng)).collect();
        for (j, child) in children.iter().enumerate() {
            let x = Scalar::from(j as u64 + 1);
            // Horner: q(x) = λ + x·(a₁ + x·(a₂ + …)).
            let mut q = coefficients
                .iter()
                .rev()
                .fold(Scalar::ZERO, |acc, a| (acc + a) * x)
                + lambda;
            share(child, q, rng, out);
            backend::wipe_scalar(&mut q);
        }
        coefficients.iter_mut().for_each(backend::wipe_scalar);
    }
}

/// Coefficients relative to this node's share, for rows numbered from `first_row`.
fn solve(
    node: &Node,
    first_row: usize,
    has: &dyn Fn(&Attribute) -> bool,
) -> Option<Vec<(usize, Scalar)>> {
    let (k, children) = match node {
        Node::Leaf(a) => return has(a).then(|| vec![(first_row, Scalar::ONE)]),
        Node::Gate {
            threshold,
            children,
        } => (*threshold, children),
    };
    let mut row = first_row;
    let mut solved: Vec<(usize, Vec<(usize, Scalar)>)> = Vec::with_capacity(children.len());
    for (j, child) in children.iter().enumerate() {
        if let Some(s) = solve(child, row, has) {
            solved.push((j, s));
        } else if k == children.len() {
            return None;
        }
        row += leaf_count(child);
    }
    if solved.len() < k {
        return None;
    }
    if k == children.len() {
        return Some(solved.into_iter().flat_map(|(_, s)| s).collect());
    }
    solved.sort_by_key(|(_, s)| s.len());
    solved.truncate(k);
    if k == 1 {
        return solved.pop().map(|(_, s)| s);
    }
    let xs: Vec<Scalar> = solved
        .iter()
        .map(|(j, _)| Scalar::from(*j as u64 + 1))
        .collect();
    let mut out = Vec::new();
    for (i, (_, s)) in solved.into_iter().enumerate() {
        let l = lagrange_at_zero(&xs, i)?;
        out.extend(s.into_iter().map(|(r, w)| (r, w * l)));
    }
    Some(out)
}

/// `L_i(0) = Π_{m ≠ i} x_m / (x_m − x_i)` over distinct public points.
fn lagrange_at_zero(xs: &[Scalar], i: usize) -> Option<Scalar> {
    let xi = xs.get(i)?;
    let mut num = Scalar::ONE;
    let mut den = Scalar::ONE;
    for (m, xm) in xs.iter().enumerate() {
        if m != i {
            num *= xm;
            den *= *xm - xi;
        }
    }
    Option::<Scalar>::from(den.invert()).map(|inv| num * inv)
}

fn build(node: &Node, v: Vec<Scalar>, width: &mut usize, out: &mut Vec<Vec<Scalar>>) {
    let (k, children) = match node {
        Node::Leaf(_) => return out.push(v),
        Node::Gate {
            threshold,
            children,
        } => (*threshold, children),
    };
    let n = children.len();
    let base = *width;
    let padded = |v: &[Scalar]| {
        let mut p = v.to_vec();
        p.resize(base, Scalar::ZERO);
        p
    };
    if k == 1 {
        children
            .iter()
            .for_each(|c| build(c, v.clone(), width, out));
    } else if k == n {
        *width += n - 1;
        for (j, child) in children.iter().enumerate() {
            let row = if j + 1 == n {
                let mut r = padded(&v);
                r.extend(std::iter::repeat_n(-Scalar::ONE, n - 1));
                r
            } else {
                let mut r = vec![Scalar::ZERO; base + j];
                r.push(Scalar::ONE);
                r
            };
            build(child, row, width, out);
        }
    } else {
        *width += k - 1;
        for (j, child) in children.iter().enumerate() {
            let x = Scalar::from(j as u64 + 1);
            let mut r = padded(&v);
            let mut power = x;
            for _ in 1..k {
                r.push(power);
                power *= x;
            }
            build(child, r, width, out);
        }
    }
}

fn leaf_count(node: &Node) -> usize {
    match node {
        Node::Leaf(_) => 1,
        Node::Gate { children, .. } => children.iter().map(leaf_count).sum(),
    }
}

#[cfg(test)]
mod tests;
