//! `Encrypt`, `CTUpdate` and `Decrypt`: the ciphertext side of the scheme.

use std::fmt;

use blstrs::{G1Affine, G1Projective, Gt, Scalar};
use ff::Field;
use group::{Curve, Group};
use rand_core::{CryptoRng, RngCore};

use crate::access::{AccessStructure, MAX_POLICY_BYTES, PolicyError, PolicyErrorKind};
use crate::backend::{self, Lines};
use crate::data_key::DataKey;
use crate::decrypt_key::{DecryptionKey, K0, K1, K1_T};
use crate::hash;
use crate::params::{EncryptionTables, Params, PublicParams};
use crate::secret_sharing::Lsss;
use crate::tree::{self, Node};
use crate::{DecodeError, Error};

/// An RS-HABE ciphertext: `C = m·Y^s`, `C0 = g₁^s`, three G1 elements per row of the access
/// structure's LSSS, and the time part, an OR over chains whose last nodes are `Cover(t)`.
/// `(1 + 3n + 3c)` G1 elements and one GT element, where `c` counts all time rows.
///
/// The message `m` is a random GT element and the 32-byte [`DataKey`] is derived from it, so the
/// data key survives every [`ct_update`], which re-randomises `s`.
#[derive(Clone, PartialEq, Eq)]
pub struct Ciphertext {
    pub(crate) params: Params,
    pub(crate) period: u64,
    pub(crate) policy: AccessStructure,
    pub(crate) c: Gt,
    pub(crate) c0: G1Affine,
    /// One row per LSSS row, in the access structure's leaf order.
    pub(crate) rows: Vec<Row>,
    /// One chain per node of `Cover(period)`, in that order; each is a list of time rows from an
    /// ancestor down to the cover node.
    pub(crate) chains: Vec<Vec<TimeRow>>,
}

/// `(C_{i,1}, C_{i,2}, C_{i,3}) = (w₁^{λ_i}v₁^{t_i}, (u₁^{H(ρ(i))}h₁)^{−t_i}, g₁^{t_i})`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Row {
    pub(crate) c1: G1Affine,
    pub(crate) c2: G1Affine,
    pub(crate) c3: G1Affine,
}

/// A row of a time chain and the time-tree node it is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimeRow {
    pub(crate) node: Node,
    pub(crate) row: Row,
}

/// How much [`ct_update`] re-randomises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum UpdateMode {
    /// Only what moving the period needs: split the chains whose cover node changes (about
    /// 1–2 ms). The policy rows and `s` are unchanged.
    #[default]
    Minimal,
    /// Also re-randomise everything: a fresh `s'` added to `s`, fresh LSSS shares of it on the
    /// policy rows, fresh additive shares along each chain, fresh `t` on every row. SSW12's
    /// argument needs this for the result to be distributed like a fresh encryption under
    /// "policy ∧ time ≥ t'".
    Rerandomize,
}

/// Encrypt(PP, policy, t) of RS-HABE.md §4: a ciphertext for `period` under `policy`, and the
/// data key it carries.
///
/// Picks `s`, a random GT element `m` and the data key `HKDF(m)`; sets `C = m·Y^s` and
/// `C0 = g₁^s`; one row per LSSS share `λ_i` of `s`; and for each `τ ∈ Cover(t)` a one-row chain
/// with share `s`. Every multiplication by a secret scalar is constant time.
pub fn encrypt(
    pp: &PublicParams,
    policy: &AccessStructure,
    period: u64,
    rng: &mut (impl CryptoRng + RngCore),
) -> Result<(Ciphertext, DataKey), Error> {
    pp.params.period(period)?;
    ensure_encodable(policy)?;
    let tab = pp.tables();
    let lsss = Lsss::new(policy);
    let mut m = random_message(rng);
    let mut s = Scalar::random(&mut *rng);
    let mut ys = tab.y.mul(&s);
    let c = m + ys;
    backend::wipe_gt(&mut ys);
    let c0 = tab.g1.g.mul(&s);
    let mut shares = lsss.share(&s, rng);
    let mut work = Vec::with_capacity(3 * (shares.len() + usize::from(pp.params.time_depth()) + 1));
    for (a, lambda) in policy.leaves().into_iter().zip(&shares) {
        work.extend(new_row(tab, tab.g1.w.mul(lambda), &Base::attribute(a), rng));
    }
    let mut ws = tab.g1.w.mul(&s);
    let cover = tree::cover(pp.params.time_depth(), period);
    for node in &cover {
        work.extend(new_row(tab, ws, &Base::time(*node), rng));
    }
    backend::wipe_g1_projective(&mut ws);
    backend::wipe_scalar(&mut s);
    shares.iter_mut().for_each(backend::wipe_scalar);
    work.push(c0);
    let mut points = normalize(&work);
    let c0 = points.pop().unwrap_or_default();
    let mut rows = points.chunks_exact(3).map(Row::from_chunk);
    let policy_rows = rows.by_ref().take(policy.leaf_count()).collect();
    let chains = cover
        .iter()
        .zip(rows)
        .map(|(node, row)| vec![TimeRow { node: *node, row }])
        .collect();
    let ct = Ciphertext {
        params: pp.params,
        period,
        policy: policy.clone(),
        c,
        c0,
        rows: policy_rows,
        chains,
    };
    let key = DataKey::derive(&m);
    backend::wipe_gt(&mut m);
    Ok((ct, key?))
}

/// Refuses a structure whose canonical text the decoder could not read back: longer than
/// [`MAX_POLICY_BYTES`] (the decoder's limit, far below the u16 length field), or not printing
/// back to itself. Checked before any work, so that no ciphertext is ever stored that nobody can
/// decode (the audit's silent data loss above 64 KiB).
fn ensure_encodable(policy: &AccessStructure) -> Result<(), Error> {
    let text = policy.to_string();
    if text.len() > MAX_POLICY_BYTES {
        return Err(Error::Policy(PolicyError {
            kind: PolicyErrorKind::CanonicalTooLong,
            position: 0,
        }));
    }
    if AccessStructure::parse(&text).as_ref() != Ok(policy) {
        return Err(Error::Policy(PolicyError {
            kind: PolicyErrorKind::NotCanonical,
            position: 0,
        }));
    }
    Ok(())
}

/// CTUpdate(PP, ct_t, t') of RS-HABE.md §4: the same ciphertext moved to the later `period`.
/// Public: the upstream server or the gateway can run it with the public parameters only.
///
/// For each `τ' ∈ Cover(t')` it takes the chain of the ancestor `τ ∈ Cover(t)`; if `τ' ≠ τ` it
/// AND-splits the chain's last row (share `λ` becomes `λ − z`, its `t` re-randomised) and appends
/// a row for `τ'` with share `z`. Chains no longer needed are dropped. After the update a
/// decryption key for a period before `t'` opens nothing, which is what makes revocation reach
/// data stored before it (forward security). `mode` says whether to re-randomise everything.
pub fn ct_update(
    pp: &PublicParams,
    ct: &Ciphertext,
    period: u64,
    mode: UpdateMode,
    rng: &mut (impl CryptoRng + RngCore),
) -> Result<Ciphertext, Error> {
    pp.params.ensure_same(ct.params)?;
    pp.params.period(period)?;
    if period < ct.period {
        return Err(Error::PeriodNotLater {
            from: ct.period,
            to: period,
        });
    }
    let tab = pp.tables();
    let mut chains = Vec::new();
    for tau in tree::cover(pp.params.time_depth(), period) {
        let old = ct
            .chains
            .iter()
            .find(|c| c.last().is_some_and(|r| r.node.is_ancestor_or_self_of(tau)))
            .ok_or(Error::Decode(DecodeError::InvalidNode))?;
        chains.push(extend_chain(tab, old, tau, rng)?);
    }
    let mut out = Ciphertext {
        chains,
        period,
        ..ct.clone()
    };
    if mode == UpdateMode::Rerandomize {
        rerandomize(tab, &mut out, rng);
    }
    Ok(out)
}

/// Decrypt(DK, ct) of RS-HABE.md §4: the data key, if the key's attributes satisfy the access
/// structure and its period is at or after the ciphertext's.
///
/// Finds LSSS coefficients `ω` for the key's attributes and a chain whose nodes all lie on the
/// key period's path, then computes `e(g₁,g₂)^{αs}` as one multi-Miller loop and one final
/// exponentiation over `1 + 1 + 2|I| + 1 + 2·|chain|` pairs (the G1 side holds only sums and
/// public multiples of ciphertext elements; the loop's squarings are shared by all pairs and the
/// key's line tables are cached), and `m = C / e(g₁,g₂)^{αs}`. Every failure is the
/// same [`Error::Decryption`].
pub fn decrypt(key: &DecryptionKey, ct: &Ciphertext) -> Result<DataKey, Error> {
    key.params.ensure_same(ct.params)?;
    if key.period < ct.period {
        return Err(Error::Decryption);
    }
    let lsss = Lsss::new(&ct.policy);
    let omega = lsss
        .coefficients(&|a| key.attributes.contains_key(a))
        .ok_or(Error::Decryption)?;
    let chain = ct
        .chains
        .iter()
        .find(|c| c.iter().all(|r| key.time_row(r.node).is_some()))
        .ok_or(Error::Decryption)?;

    let mut g1 = vec![G1Projective::from(ct.c0), G1Projective::identity()];
    let mut g2 = vec![K0, K1];
    for (i, w) in &omega {
        let row = ct.rows.get(*i).ok_or(Error::Decryption)?;
        let a = lsss.row_attribute(*i).ok_or(Error::Decryption)?;
        let (k2, k3) = key.attribute_row(a).ok_or(Error::Decryption)?;
        let scale = |p: G1Affine| {
            if *w == Scalar::ONE {
                -G1Projective::from(p)
            } else {
                -(p * w)
            }
        };
        g1[1] += scale(row.c1);
        g1.extend([scale(row.c2), scale(row.c3)]);
        g2.extend([k2, k3]);
    }
    let mut chain_sum = G1Projective::identity();
    g2.push(K1_T);
    let sum_index = g1.len();
    g1.push(G1Projective::identity());
    for t in chain {
        let (k2, k3) = key.time_row(t.node).ok_or(Error::Decryption)?;
        chain_sum += t.row.c1;
        g1.extend([-G1Projective::from(t.row.c2), -G1Projective::from(t.row.c3)]);
        g2.extend([k2, k3]);
    }
    g1[sum_index] = -chain_sum;

    let points = normalize(&g1);
    let lines: Vec<&Lines> = g2
        .iter()
        .map(|&i| key.lines(i).ok_or(Error::Decryption))
        .collect::<Result<_, _>>()?;
    let terms: Vec<(G1Affine, &Lines)> = points.into_iter().zip(lines).collect();
    let mut blinding = backend::multi_pairing(&terms);
    let mut m = ct.c - blinding;
    backend::wipe_gt(&mut blinding);
    if bool::from(m.is_identity()) {
        return Err(Error::Decryption);
    }
    let key = DataKey::derive(&m);
    backend::wipe_gt(&mut m);
    key
}

// === impl Ciphertext ===

impl Ciphertext {
    /// The tree parameters.
    pub fn params(&self) -> Params {
        self.params
    }

    /// The period the ciphertext is currently for.
    pub fn period(&self) -> u64 {
        self.period
    }

    /// The access structure.
    pub fn policy(&self) -> &AccessStructure {
        &self.policy
    }

    /// How many G1 elements it holds: `1 + 3n + 3c` (it also holds one GT element).
    pub fn g1_element_count(&self) -> usize {
        1 + 3 * self.rows.len() + 3 * self.time_row_count()
    }

    /// How many time rows it holds, over all chains.
    pub fn time_row_count(&self) -> usize {
        self.chains.iter().map(Vec::len).sum()
    }

    /// The length of its longest chain.
    pub fn longest_chain(&self) -> usize {
        self.chains.iter().map(Vec::len).max().unwrap_or(0)
    }
}

impl fmt::Debug for Ciphertext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ciphertext")
            .field("period", &self.period)
            .field("policy", &self.policy.to_string())
            .field("time_rows", &self.time_row_count())
            .finish_non_exhaustive()
    }
}

impl Row {
    fn from_chunk(c: &[G1Affine]) -> Self {
        let at = |i: usize| c.get(i).copied().unwrap_or_default();
        Self {
            c1: at(0),
            c2: at(1),
            c3: at(2),
        }
    }

    fn projective(&self) -> [G1Projective; 3] {
        [self.c1, self.c2, self.c3].map(G1Projective::from)
    }
}

// === encryption arithmetic ===

/// The hashed exponent of a row's base `u^{H(x)}·h` and which pair of generators it uses.
struct Base {
    exponent: Scalar,
    time: bool,
}

impl Base {
    fn attribute(a: &crate::access::Attribute) -> Self {
        Self {
            exponent: hash::attribute(a),
            time: false,
        }
    }

    fn time(node: Node) -> Self {
        Self {
            exponent: hash::time_node(node),
            time: true,
        }
    }
}

/// A row with share part `share` (already `w₁^λ`): `(share·v₁^t, (u^{H}h)^{−t}, g₁^t)`.
fn new_row(
    tab: &EncryptionTables,
    share: G1Projective,
    base: &Base,
    rng: &mut (impl CryptoRng + RngCore),
) -> [G1Projective; 3] {
    let [b1, b2, b3] = blinding(tab, base, rng);
    [share + b1, b2, b3]
}

/// `(v₁^t, (u^{H}h)^{−t}, g₁^t)` for a fresh secret `t`, in constant time.
fn blinding(
    tab: &EncryptionTables,
    base: &Base,
    rng: &mut (impl CryptoRng + RngCore),
) -> [G1Projective; 3] {
    let (u, h) = if base.time {
        (&tab.g1.ut, &tab.g1.ht)
    } else {
        (&tab.g1.u, &tab.g1.h)
    };
    let mut t = Scalar::random(&mut *rng);
    let mut ht = base.exponent * t;
    let out = [
        tab.g1.v.mul(&t),
        -(u.mul(&ht) + h.mul(&t)),
        tab.g1.g.mul(&t),
    ];
    backend::wipe_scalar(&mut t);
    backend::wipe_scalar(&mut ht);
    out
}

/// The chain of `tau` from the chain `old` of its ancestor (or itself).
fn extend_chain(
    tab: &EncryptionTables,
    old: &[TimeRow],
    tau: Node,
    rng: &mut (impl CryptoRng + RngCore),
) -> Result<Vec<TimeRow>, Error> {
    let mut chain = old.to_vec();
    let Some(last) = chain.last_mut() else {
        return Err(Error::Decode(DecodeError::InvalidNode));
    };
    if last.node == tau {
        return Ok(chain);
    }
    let mut z = Scalar::random(&mut *rng);
    let mut wz = tab.g1.w.mul(&z);
    let [d1, d2, d3] = blinding(tab, &Base::time(last.node), rng);
    let [c1, c2, c3] = last.row.projective();
    let split = [c1 - wz + d1, c2 + d2, c3 + d3];
    let appended = new_row(tab, wz, &Base::time(tau), rng);
    backend::wipe_g1_projective(&mut wz);
    backend::wipe_scalar(&mut z);
    let points = normalize(&[split, appended].concat());
    last.row = Row::from_chunk(&points[..3]);
    chain.push(TimeRow {
        node: tau,
        row: Row::from_chunk(&points[3..]),
    });
    Ok(chain)
}

/// The full re-randomisation of [`UpdateMode::Rerandomize`], in place.
fn rerandomize(tab: &EncryptionTables, ct: &mut Ciphertext, rng: &mut (impl CryptoRng + RngCore)) {
    let mut s = Scalar::random(&mut *rng);
    let mut ys = tab.y.mul(&s);
    ct.c += ys;
    backend::wipe_gt(&mut ys);
    let mut work = vec![G1Projective::from(ct.c0) + tab.g1.g.mul(&s)];
    let mut shares = Lsss::new(&ct.policy).share(&s, rng);
    for ((row, a), mu) in ct.rows.iter().zip(ct.policy.leaves()).zip(&shares) {
        work.extend(add_share(
            tab,
            row,
            tab.g1.w.mul(mu),
            &Base::attribute(a),
            rng,
        ));
    }
    for chain in &ct.chains {
        let mut rest = s;
        for (j, t) in chain.iter().enumerate() {
            let mut sigma = if j + 1 == chain.len() {
                rest
            } else {
                Scalar::random(&mut *rng)
            };
            rest -= sigma;
            work.extend(add_share(
                tab,
                &t.row,
                tab.g1.w.mul(&sigma),
                &Base::time(t.node),
                rng,
            ));
            backend::wipe_scalar(&mut sigma);
        }
        backend::wipe_scalar(&mut rest);
    }
    backend::wipe_scalar(&mut s);
    shares.iter_mut().for_each(backend::wipe_scalar);
    let points = normalize(&work);
    ct.c0 = points.first().copied().unwrap_or_default();
    let mut rows = points
        .get(1..)
        .unwrap_or_default()
        .chunks_exact(3)
        .map(Row::from_chunk);
    for row in &mut ct.rows {
        *row = rows.next().unwrap_or(*row);
    }
    for chain in &mut ct.chains {
        for t in chain {
            t.row = rows.next().unwrap_or(t.row);
        }
    }
}

/// `row` with `share` (already `w₁^σ`) added to its first element and a fresh `t` blinding.
fn add_share(
    tab: &EncryptionTables,
    row: &Row,
    share: G1Projective,
    base: &Base,
    rng: &mut (impl CryptoRng + RngCore),
) -> [G1Projective; 3] {
    let [c1, c2, c3] = row.projective();
    let [b1, b2, b3] = blinding(tab, base, rng);
    [c1 + share + b1, c2 + b2, c3 + b3]
}

fn random_message(rng: &mut (impl CryptoRng + RngCore)) -> Gt {
    loop {
        let m = Gt::random(&mut *rng);
        if !bool::from(m.is_identity()) {
            return m;
        }
    }
}

fn normalize(points: &[G1Projective]) -> Vec<G1Affine> {
    let mut out = vec![G1Affine::default(); points.len()];
    G1Projective::batch_normalize(points, &mut out);
    out
}

#[cfg(test)]
mod tests;
