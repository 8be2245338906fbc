//! `KeyGen` and `Delegate`: long-term user keys and their hierarchical delegation.

use std::collections::BTreeSet;
use std::fmt;

use blstrs::{G2Affine, G2Projective, Scalar};
use ff::Field;
use group::Curve;
use rand_core::{CryptoRng, RngCore};

use crate::access::Attribute;
use crate::backend::{self, G2Table};
use crate::params::{KeyTables, MasterSecret, Params, PublicParams};
use crate::tree::Node;
use crate::{Error, MAX_KEY_ATTRIBUTES};

/// A user's long-term secret key, bound to a leaf `η` of the user tree and an attribute set `S`:
/// for every node θ of `Path(η)` an independent RW13 key
/// `(K1_θ, K0_θ, {K_{θ,A,2}, K_{θ,A,3}}_{A ∈ S})`, `(L+1)(2 + 2m)` G2 elements.
///
/// Every node has its own randomiser `r_θ` and its own attribute rows (RS-HABE.md §4, after the
/// correction of 2026-12-02): with one randomiser shared across the path, a revoked user could
/// move a current user's node components onto its own key. It decrypts nothing by itself: each
/// period it is combined with the public key update into a
/// [`DecryptionKey`](crate::DecryptionKey), from the one node of its path that the update covers.
/// Zeroized on drop; neither `Clone` nor `Copy`.
pub struct SecretKey {
    pub(crate) params: Params,
    pub(crate) leaf: Node,
    /// `S`, canonical and strictly increasing; each node's rows follow this order.
    pub(crate) attributes: Vec<Attribute>,
    /// The key of θ ∈ Path(η), indexed by the node's depth (the root first).
    pub(crate) nodes: Vec<NodeKey>,
}

/// The RW13 key of one node θ of a user's path: `K1_θ = g₂^{r_θ}`, `K0_θ = g₂^{α_θ}·w₂^{r_θ}`
/// and one row per attribute of the key, in the key's attribute order.
pub(crate) struct NodeKey {
    pub(crate) k1: G2Affine,
    pub(crate) k0: G2Affine,
    pub(crate) rows: Vec<AttributeKey>,
}

/// The two G2 elements of one attribute (or time node) row of a key: `(g₂^{r_A},
/// (u₂^{H(A)}h₂)^{r_A}·v₂^{−r})`. Secret in a user's key: no `Copy`, wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AttributeKey {
    pub(crate) k2: G2Affine,
    pub(crate) k3: G2Affine,
}

/// KeyGen(MSK, η, S) of RS-HABE.md §4: a key for the user at `leaf` holding `attributes`.
///
/// "For each θ ∈ Path(η), independently: pick r_θ and r_{θ,A} for A ∈ S, and set
/// K1_θ = g₂^{r_θ}, K0_θ = g₂^{α_θ}·w₂^{r_θ}; for A ∈ S: (K_{θ,A,2} = g₂^{r_{θ,A}},
/// K_{θ,A,3} = (u₂^{H(A)}h₂)^{r_{θ,A}}·v₂^{−r_θ})." Duplicate attributes count once.
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
    let bases: Vec<G2Base<'_>> = set
        .iter()
        .map(|a| G2Base::Point(pp.attribute_base_g2(a)))
        .collect();
    let nodes = leaf
        .path()
        .map(|theta| {
            let mut alpha_theta = msk.node_secret(theta);
            let node = node_key(kt, &alpha_theta, &bases, rng);
            backend::wipe_scalar(&mut alpha_theta);
            node
        })
        .collect();
    Ok(SecretKey {
        params: pp.params,
        leaf,
        attributes: set.into_iter().cloned().collect(),
        nodes,
    })
}

/// Delegate(SK, S' ⊆ S) of RS-HABE.md §4 (after BSW07): a key for the same leaf holding only
/// `subset`, distributed like a fresh key for `(η, S')`.
///
/// "For each θ ∈ Path(η), independently re-randomise that node's key (own δ_θ, own δ_{θ,A}), and
/// drop the attributes not in S': K1_θ·g₂^{δ_θ}, K0_θ·w₂^{δ_θ}; for each A ∈ S':
/// K_{θ,A,2}·g₂^{δ_{θ,A}} and K_{θ,A,3}·(u₂^{H(A)}h₂)^{δ_{θ,A}}·v₂^{−δ_θ}." Needs only public
/// values, so a sub-authority can run it. The delegatee inherits the leaf: revoking the
/// delegator revokes it too; a delegatee that must be revoked on its own needs a key of its own
/// from the authority.
pub fn delegate(
    pp: &PublicParams,
    key: &SecretKey,
    subset: &[Attribute],
    rng: &mut (impl CryptoRng + RngCore),
) -> Result<SecretKey, Error> {
    pp.params.ensure_same(key.params)?;
    let set = attribute_set(subset.iter())?;
    let mut kept = Vec::with_capacity(set.len());
    for a in &set {
        let index = key
            .attributes
            .binary_search(a)
            .map_err(|_| Error::AttributeNotHeld((*a).clone()))?;
        kept.push((index, G2Base::Point(pp.attribute_base_g2(a))));
    }
    let kt = pp.key_tables();
    let nodes = key
        .nodes
        .iter()
        .map(|node| rerandomize_node(kt, node, &kept, rng))
        .collect();
    Ok(SecretKey {
        params: key.params,
        leaf: key.leaf,
        attributes: set.into_iter().cloned().collect(),
        nodes,
    })
}

/// One node's fresh RW13 key for `α_θ`: own `r_θ`, own row randomness.
fn node_key(
    kt: &KeyTables,
    alpha_theta: &Scalar,
    bases: &[G2Base<'_>],
    rng: &mut (impl CryptoRng + RngCore),
) -> NodeKey {
    let mut r = Scalar::random(&mut *rng);
    let mut head = [kt.g.mul(&r), kt.g.mul(alpha_theta) + kt.w.mul(&r)];
    let mut minus_vr = -kt.v.mul(&r);
    backend::wipe_scalar(&mut r);
    let rows = bases
        .iter()
        .map(|base| fresh_row(&kt.g, base, minus_vr, rng))
        .collect();
    backend::wipe_g2_projective(&mut minus_vr);
    let [k1, k0] = affine_pair(&mut head);
    NodeKey { k1, k0, rows }
}

/// One node's key re-randomised with a fresh `δ_θ`, keeping the rows at `kept` (index into the
/// node's rows, and that attribute's base).
fn rerandomize_node(
    kt: &KeyTables,
    node: &NodeKey,
    kept: &[(usize, G2Base<'_>)],
    rng: &mut (impl CryptoRng + RngCore),
) -> NodeKey {
    let mut delta = Scalar::random(&mut *rng);
    let mut head = [kt.g.mul(&delta) + node.k1, kt.w.mul(&delta) + node.k0];
    let mut minus_v_delta = -kt.v.mul(&delta);
    backend::wipe_scalar(&mut delta);
    let rows = kept
        .iter()
        .filter_map(|(i, base)| node.rows.get(*i).map(|row| (row, base)))
        .map(|(row, base)| rerandomize_row(&kt.g, base, minus_v_delta, row, rng))
        .collect();
    backend::wipe_g2_projective(&mut minus_v_delta);
    let [k1, k0] = affine_pair(&mut head);
    NodeKey { k1, k0, rows }
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
        self.attributes.iter()
    }

    /// How many G2 elements the key holds: `(L+1)(2 + 2m)`.
    pub fn element_count(&self) -> usize {
        self.nodes.iter().map(|n| 2 + 2 * n.rows.len()).sum()
    }

    /// The key of the path node at `depth`.
    pub(crate) fn node(&self, depth: u8) -> Option<&NodeKey> {
        self.nodes.get(usize::from(depth))
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.nodes.iter_mut().for_each(NodeKey::wipe);
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("leaf", &self.leaf.bits())
            .field("attributes", &self.attributes)
            .finish_non_exhaustive()
    }
}

// === impl NodeKey ===

impl NodeKey {
    fn wipe(&mut self) {
        backend::wipe_g2(&mut self.k1);
        backend::wipe_g2(&mut self.k0);
    }
}

// === impl AttributeKey ===

impl Drop for AttributeKey {
    fn drop(&mut self) {
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

fn affine_row(mut terms: [G2Projective; 2]) -> AttributeKey {
    let [k2, k3] = affine_pair(&mut terms);
    AttributeKey { k2, k3 }
}

/// Two secret points in affine form; the projective inputs are wiped.
pub(crate) fn affine_pair(terms: &mut [G2Projective; 2]) -> [G2Affine; 2] {
    let mut pair = [G2Affine::default(); 2];
    G2Projective::batch_normalize(terms, &mut pair);
    terms.iter_mut().for_each(backend::wipe_g2_projective);
    pair
}

/// `(K2·g₂^{δ_A}, K3·F^{δ_A}·V)` with a fresh `δ_A`, where `V` is the caller's `v₂^{−δ}` term.
pub(crate) fn rerandomize_row(
    g: &G2Table,
    base: &G2Base<'_>,
    minus_v_delta: G2Projective,
    row: &AttributeKey,
    rng: &mut (impl CryptoRng + RngCore),
) -> AttributeKey {
    let [mut k2, mut k3] = row_terms(g, base, minus_v_delta, rng);
    k2 += row.k2;
    k3 += row.k3;
    affine_row([k2, k3])
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
