//! `KeyGen` and `Delegate`: long-term user keys and their hierarchical delegation.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use blstrs::{G2Affine, G2Projective, Scalar};
use ff::Field;
use group::Curve;
use rand_core::{CryptoRng, RngCore};

use crate::access::Attribute;
use crate::backend::{self, G2Table};
use crate::params::{MasterSecret, Params, PublicParams};
use crate::tree::Node;
use crate::{Error, MAX_KEY_ATTRIBUTES};

/// A user's long-term secret key `SK = (K1, {K0_θ}_{θ ∈ Path(η)}, {K_{A,2}, K_{A,3}}_{A ∈ S})`,
/// bound to a leaf `η` of the user tree and an attribute set `S`. `1 + (L+1) + 2m` G2 elements.
///
/// It decrypts nothing by itself: each period it is combined with the public key update into a
/// [`DecryptionKey`](crate::DecryptionKey). Zeroized on drop.
pub struct SecretKey {
    pub(crate) params: Params,
    pub(crate) leaf: Node,
    pub(crate) k1: G2Affine,
    /// `K0_θ` for θ ∈ Path(η), indexed by the node's depth.
    pub(crate) k0: Vec<G2Affine>,
    pub(crate) attributes: BTreeMap<Attribute, AttributeKey>,
}

/// The two G2 elements of one attribute (or time node) row of a key: `(g₂^{r_A},
/// (u₂^{H(A)}h₂)^{r_A}·v₂^{−r})`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct AttributeKey {
    pub(crate) k2: G2Affine,
    pub(crate) k3: G2Affine,
}

/// KeyGen(MSK, η, S) of RS-HABE.md §4: a key for the user at `leaf` holding `attributes`.
///
/// Picks `r` and one `r_A` per attribute and sets `K1 = g₂^r`, `K0_θ = g₂^{α_θ}·w₂^r` for every
/// node θ on the leaf's path, and `K_{A,2} = g₂^{r_A}`, `K_{A,3} = (u₂^{H(A)}h₂)^{r_A}·v₂^{−r}`.
/// Duplicate attributes count once.
pub fn keygen(
    pp: &PublicParams,
    msk: &MasterSecret,
    leaf: u64,
    attributes: &[Attribute],
    rng: &mut (impl CryptoRng + RngCore),
) -> Result<SecretKey, Error> {
    pp.params.ensure_same(msk.params)?;
    let leaf = pp.params.leaf(leaf)?;
    let set = attribute_set(attributes.iter())?;
    let kt = pp.key_tables();
    let mut r = Scalar::random(&mut *rng);
    let k1 = kt.g.mul(&r);
    let wr = kt.w.mul(&r);
    let k0: Vec<G2Projective> = leaf
        .path()
        .map(|theta| {
            let mut a = msk.node_secret(theta);
            let k = kt.g.mul(&a) + wr;
            backend::wipe_scalar(&mut a);
            k
        })
        .collect();
    let minus_vr = -kt.v.mul(&r);
    backend::wipe_scalar(&mut r);
    let attributes = set
        .into_iter()
        .map(|a| {
            let row = fresh_row(
                &kt.g,
                &G2Base::Point(pp.attribute_base_g2(a)),
                minus_vr,
                rng,
            );
            (a.clone(), row)
        })
        .collect();
    Ok(SecretKey {
        params: pp.params,
        leaf,
        k1: k1.to_affine(),
        k0: normalize(&k0),
        attributes,
    })
}

/// Delegate(SK, S' ⊆ S) of RS-HABE.md §4 (after BSW07): a key for the same leaf holding only
/// `subset`, re-randomised so that it is distributed like a fresh key for `(η, S')`.
///
/// Adds `δ` to `r` (`K1·g₂^δ`, every `K0_θ·w₂^δ`) and a fresh `δ_A` to each kept attribute row.
/// Needs only public values, so a sub-authority can run it. The delegatee inherits the leaf:
/// revoking the delegator revokes it too; a delegatee that must be revoked on its own needs a
/// key of its own from the authority.
pub fn delegate(
    pp: &PublicParams,
    key: &SecretKey,
    subset: &[Attribute],
    rng: &mut (impl CryptoRng + RngCore),
) -> Result<SecretKey, Error> {
    pp.params.ensure_same(key.params)?;
    let set = attribute_set(subset.iter())?;
    if let Some(missing) = set.iter().find(|a| !key.attributes.contains_key(a)) {
        return Err(Error::AttributeNotHeld((*missing).clone()));
    }
    let kt = pp.key_tables();
    let mut delta = Scalar::random(&mut *rng);
    let k1 = kt.g.mul(&delta) + key.k1;
    let w_delta = kt.w.mul(&delta);
    let k0: Vec<G2Projective> = key.k0.iter().map(|k| w_delta + k).collect();
    let minus_v_delta = -kt.v.mul(&delta);
    backend::wipe_scalar(&mut delta);
    let attributes = set
        .into_iter()
        .filter_map(|a| key.attributes.get(a).map(|row| (a, row)))
        .map(|(a, row)| {
            let base = G2Base::Point(pp.attribute_base_g2(a));
            let fresh = rerandomize_row(&kt.g, &base, minus_v_delta, row, rng);
            (a.clone(), fresh)
        })
        .collect();
    Ok(SecretKey {
        params: key.params,
        leaf: key.leaf,
        k1: k1.to_affine(),
        k0: normalize(&k0),
        attributes,
    })
}

// === impl SecretKey ===

impl SecretKey {
    /// The tree parameters the key was made under.
    pub fn params(&self) -> Params {
        self.params
    }

    /// The user's leaf in the user tree.
    pub fn leaf(&self) -> u64 {
        self.leaf.bits()
    }

    /// The attributes the key holds, in canonical order.
    pub fn attributes(&self) -> impl Iterator<Item = &Attribute> {
        self.attributes.keys()
    }

    /// How many G2 elements the key holds: `1 + (L+1) + 2m`.
    pub fn element_count(&self) -> usize {
        1 + self.k0.len() + 2 * self.attributes.len()
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        backend::wipe_g2(&mut self.k1);
        self.k0.iter_mut().for_each(backend::wipe_g2);
        for row in self.attributes.values_mut() {
            row.wipe();
        }
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("leaf", &self.leaf.bits())
            .field("attributes", &self.attributes.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

// === impl AttributeKey ===

impl AttributeKey {
    pub(crate) fn wipe(&mut self) {
        backend::wipe_g2(&mut self.k2);
        backend::wipe_g2(&mut self.k3);
    }
}

/// The base `F` of a key row: a point (multiplied with blst's constant-time ladder), or a
/// fixed-base table when many rows share it.
pub(crate) enum G2Base<'a> {
    Point(G2Affine),
    Table(&'a G2Table),
}

impl G2Base<'_> {
    fn mul(&self, k: &Scalar) -> G2Projective {
        match self {
            G2Base::Point(p) => p * k,
            G2Base::Table(t) => t.mul(k),
        }
    }
}

/// A fresh row `(g₂^{ρ}, F^{ρ}·V)` where `V` is the caller's `v₂^{−r}` term.
pub(crate) fn fresh_row(
    g: &G2Table,
    base: &G2Base<'_>,
    minus_vr: G2Projective,
    rng: &mut (impl CryptoRng + RngCore),
) -> AttributeKey {
    affine_row(row_terms(g, base, minus_vr, rng))
}

/// `(g₂^{ρ}, F^{ρ}·V)` for a fresh secret `ρ`, before normalisation.
fn row_terms(
    g: &G2Table,
    base: &G2Base<'_>,
    minus_vr: G2Projective,
    rng: &mut (impl CryptoRng + RngCore),
) -> [G2Projective; 2] {
    let mut rho = Scalar::random(&mut *rng);
    let terms = [g.mul(&rho), base.mul(&rho) + minus_vr];
    backend::wipe_scalar(&mut rho);
    terms
}

fn affine_row(terms: [G2Projective; 2]) -> AttributeKey {
    let mut pair = [G2Affine::default(); 2];
    G2Projective::batch_normalize(&terms, &mut pair);
    AttributeKey {
        k2: pair[0],
        k3: pair[1],
    }
}

/// `(K2·g₂^{δ_A}, K3·F^{δ_A}·V)` with a fresh `δ_A`, where `V` is the caller's `v₂^{−δ}` term.
pub(crate) fn rerandomize_row(
    g: &G2Table,
    base: &G2Base<'_>,
    minus_v_delta: G2Projective,
    row: &AttributeKey,
    rng: &mut (impl CryptoRng + RngCore),
) -> AttributeKey {
    let [k2, k3] = row_terms(g, base, minus_v_delta, rng);
    affine_row([k2 + row.k2, k3 + row.k3])
}

pub(crate) fn normalize(points: &[G2Projective]) -> Vec<G2Affine> {
    let mut out = vec![G2Affine::default(); points.len()];
    G2Projective::batch_normalize(points, &mut out);
    out
}

/// The canonical attribute set of a key: 1 to [`MAX_KEY_ATTRIBUTES`] distinct attributes.
pub(crate) fn attribute_set<'a>(
    attributes: impl Iterator<Item = &'a Attribute>,
) -> Result<BTreeSet<&'a Attribute>, Error> {
    let set: BTreeSet<&Attribute> = attributes.collect();
    if set.is_empty() || set.len() > MAX_KEY_ATTRIBUTES {
        return Err(Error::AttributeCount { count: set.len() });
    }
    Ok(set)
}
