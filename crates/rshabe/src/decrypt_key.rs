//! `DKGen`: the per-period decryption key, from a long-term key and the public key update.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use blstrs::{G2Affine, G2Projective, Scalar};
use ff::Field;
use group::Curve;
use rand_core::{CryptoRng, RngCore};

use crate::Error;
use crate::access::Attribute;
use crate::backend::{self, Lines};
use crate::key::{G2Base, SecretKey, rerandomize_row};
use crate::params::{Params, PublicParams};
use crate::tree::Node;
use crate::update::KeyUpdate;

/// A decryption key for one period: `(K0, K1, K1_T, {K_{A,2}, K_{A,3}}_{A ∈ S}, {time rows}_{x ∈
/// Path(t)})`, `3 + 2m + 2(ℓ+1)` G2 elements.
///
/// Opens ciphertexts of its period, and ciphertexts of earlier periods, whose access structure its
/// attributes satisfy. Each G2 element's Miller-loop line table (18 KiB, the "prepared" form) is
/// computed the first time a decryption pairs with it and kept in the key, so later decryptions
/// skip it. Elements and line tables are zeroized on drop.
pub struct DecryptionKey {
    pub(crate) params: Params,
    pub(crate) period: u64,
    /// `K0, K1, K1_T`, then `(K_{A,2}, K_{A,3})` per attribute in canonical order, then the two
    /// elements of each time row by depth.
    pub(crate) elements: Vec<G2Affine>,
    pub(crate) attributes: BTreeMap<Attribute, usize>,
    lines: Vec<OnceLock<Lines>>,
}

/// Index of `K0` in [`DecryptionKey::elements`].
pub(crate) const K0: usize = 0;
/// Index of `K1`.
pub(crate) const K1: usize = 1;
/// Index of `K1_T`.
pub(crate) const K1_T: usize = 2;

/// DKGen(SK, KU_t) of RS-HABE.md §4: the decryption key of `key`'s holder for the update's period.
///
/// "Take θ ∈ Path(η) ∩ KUNodes. If there is none, the user is revoked. From node θ's key only:
/// K0 = K0_θ·KU0_θ·w₂^{d1+d2}, K1 = K1_θ·g₂^{d1}, K1_T = KU1_θ·g₂^{d2}. Re-randomise node θ's
/// attribute rows with d1 (and fresh per-row randomness) and every time row with d2."
/// The re-randomisation hides `α_θ` and the long-term key, which is what makes a leaked
/// decryption key useless for any other period (decryption-key-exposure resistance).
/// Fails with [`Error::Revoked`] when no KUNode lies on the user's path.
pub fn decrypt_key(
    pp: &PublicParams,
    key: &SecretKey,
    update: &KeyUpdate,
    rng: &mut (impl CryptoRng + RngCore),
) -> Result<DecryptionKey, Error> {
    pp.params.ensure_same(key.params)?;
    pp.params.ensure_same(update.params)?;
    let (theta, node) = update.node_on_path(key.leaf).ok_or(Error::Revoked)?;
    let own = key.node(theta.depth()).ok_or(Error::ParamsMismatch)?;
    let kt = pp.key_tables();
    let mut d1 = Scalar::random(&mut *rng);
    let mut d2 = Scalar::random(&mut *rng);
    let mut d = d1 + d2;
    let mut heads = [
        kt.w.mul(&d) + own.k0 + node.ku0,
        kt.g.mul(&d1) + own.k1,
        kt.g.mul(&d2) + node.ku1,
    ];
    let mut minus_v_d1 = -kt.v.mul(&d1);
    let mut minus_v_d2 = -kt.v.mul(&d2);
    [&mut d1, &mut d2, &mut d]
        .into_iter()
        .for_each(backend::wipe_scalar);
    let mut affine = [G2Affine::default(); 3];
    G2Projective::batch_normalize(&heads, &mut affine);
    heads.iter_mut().for_each(backend::wipe_g2_projective);
    let mut elements = affine.to_vec();
    affine.iter_mut().for_each(backend::wipe_g2);
    let mut attributes = BTreeMap::new();
    for (i, (a, row)) in key.attributes.iter().zip(&own.rows).enumerate() {
        let base = G2Base::Point(pp.attribute_base_g2(a));
        let fresh = rerandomize_row(&kt.g, &base, minus_v_d1, row, rng);
        elements.extend([fresh.k2, fresh.k3]);
        attributes.insert(a.clone(), i);
    }
    let t = pp.params.period(update.period)?;
    for (x, row) in t.path().zip(&node.time) {
        let base = G2Base::Point(pp.time_base_g2(x));
        let fresh = rerandomize_row(&kt.g, &base, minus_v_d2, row, rng);
        elements.extend([fresh.k2, fresh.k3]);
    }
    backend::wipe_g2_projective(&mut minus_v_d1);
    backend::wipe_g2_projective(&mut minus_v_d2);
    Ok(DecryptionKey::from_parts(
        pp.params,
        update.period,
        elements,
        attributes,
    ))
}

// === impl DecryptionKey ===

impl DecryptionKey {
    pub(crate) fn from_parts(
        params: Params,
        period: u64,
        elements: Vec<G2Affine>,
        attributes: BTreeMap<Attribute, usize>,
    ) -> Self {
        let lines = (0..elements.len()).map(|_| OnceLock::new()).collect();
        Self {
            params,
            period,
            elements,
            attributes,
            lines,
        }
    }

    /// The tree parameters.
    pub fn params(&self) -> Params {
        self.params
    }

    /// The period the key is for.
    pub fn period(&self) -> u64 {
        self.period
    }

    /// The attributes the key holds, in canonical order.
    pub fn attributes(&self) -> impl Iterator<Item = &Attribute> {
        self.attributes.keys()
    }

    /// How many G2 elements the key holds: `3 + 2m + 2(ℓ+1)`.
    pub fn element_count(&self) -> usize {
        self.elements.len()
    }

    /// Indices of the attribute row of `a`, if the key holds it.
    pub(crate) fn attribute_row(&self, a: &Attribute) -> Option<(usize, usize)> {
        self.attributes.get(a).map(|&i| (3 + 2 * i, 4 + 2 * i))
    }

    /// Indices of the time row for `node`, if it lies on the key period's path.
    pub(crate) fn time_row(&self, node: Node) -> Option<(usize, usize)> {
        let leaf = self.params.period(self.period).ok()?;
        if !node.is_ancestor_or_self_of(leaf) {
            return None;
        }
        let base = 3 + 2 * self.attributes.len() + 2 * usize::from(node.depth());
        Some((base, base + 1))
    }

    /// The line table of element `i`, computed on first use.
    pub(crate) fn lines(&self, i: usize) -> Option<&Lines> {
        let element = self.elements.get(i)?;
        let cell = self.lines.get(i)?;
        Some(cell.get_or_init(|| Lines::new(element)))
    }

    #[cfg(test)]
    pub(crate) fn row(&self, (a, b): (usize, usize)) -> Option<crate::key::AttributeKey> {
        Some(crate::key::AttributeKey {
            k2: *self.elements.get(a)?,
            k3: *self.elements.get(b)?,
        })
    }
}

impl Drop for DecryptionKey {
    fn drop(&mut self) {
        self.elements.iter_mut().for_each(backend::wipe_g2);
    }
}

impl fmt::Debug for DecryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptionKey")
            .field("period", &self.period)
            .field("attributes", &self.attributes.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}
