//! Revocation bookkeeping and `KeyUpdate`: what the authority publishes each period.

use std::collections::BTreeMap;

use blstrs::{G2Affine, Scalar};
use ff::Field;
use rand_core::{CryptoRng, RngCore};

use crate::Error;
use crate::MasterSecret;
use crate::backend;
use crate::backend::G2Table;
use crate::key::{AttributeKey, G2Base, affine_pair, fresh_row};
use crate::params::{Params, PublicParams};
use crate::tree::{self, Node};

/// The revocation list `RL`: which leaves are revoked, and from which period on.
///
/// A leaf revoked at period `p` is left out of every key update for a period `t ≥ p`, so it gets
/// no decryption key for `p` or later (backward security); ciphertexts updated to `p` or later
/// are closed to its old decryption keys (forward security).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RevocationList {
    revoked: BTreeMap<u64, u64>,
}

impl RevocationList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Revoke `leaf` from `period` on. A leaf is revoked once: a second call is an error that
    /// names the first revocation's period, and leaves the list unchanged.
    pub fn revoke(&mut self, params: Params, leaf: u64, period: u64) -> Result<(), Error> {
        params.leaf(leaf)?;
        params.period(period)?;
        if let Some(&earlier) = self.revoked.get(&leaf) {
            return Err(Error::AlreadyRevoked {
                leaf,
                period: earlier,
            });
        }
        self.revoked.insert(leaf, period);
        Ok(())
    }

    /// Whether `leaf` is revoked for `period` (revoked at that period or earlier).
    pub fn is_revoked(&self, leaf: u64, period: u64) -> bool {
        self.revoked.get(&leaf).is_some_and(|&p| p <= period)
    }

    /// The period from which `leaf` is revoked, if it is.
    pub fn revoked_since(&self, leaf: u64) -> Option<u64> {
        self.revoked.get(&leaf).copied()
    }

    /// Every `(leaf, period)` on the list, by leaf.
    pub fn entries(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.revoked.iter().map(|(&l, &p)| (l, p))
    }

    /// How many leaves are on the list.
    pub fn len(&self) -> usize {
        self.revoked.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.revoked.is_empty()
    }

    fn revoked_at(&self, params: Params, period: u64) -> impl Iterator<Item = Node> + '_ {
        self.revoked
            .iter()
            .filter(move |&(_, &p)| p <= period)
            .filter_map(move |(&leaf, _)| params.leaf(leaf).ok())
    }
}

/// From how many KUNodes on `key_update` builds fixed-base tables for the period's time bases
/// (about 20 ms for ℓ = 10, against 0.1 ms saved per multiplication).
const TIME_TABLES_FROM: usize = 8;

/// The key update for one period: for each node θ of `KUNodes(BT, RL)`,
/// `(KU0_θ, KU1_θ)` and one row per time node on `Path(t)`. Public: it is broadcast.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyUpdate {
    pub(crate) params: Params,
    pub(crate) period: u64,
    pub(crate) nodes: BTreeMap<Node, NodeUpdate>,
}

/// The update of one KUNode θ: `KU0_θ = g₂^{α−α_θ}·w₂^{r'_θ}`, `KU1_θ = g₂^{r'_θ}`, and for each
/// `x ∈ Path(t)` by depth, `(g₂^{ρ_x}, (u_T₂^{H(x)}h_T₂)^{ρ_x}·v₂^{−r'_θ})`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct NodeUpdate {
    pub(crate) ku0: G2Affine,
    pub(crate) ku1: G2Affine,
    pub(crate) time: Vec<AttributeKey>,
}

/// KeyUpdate(MSK, t, RL) of RS-HABE.md §4: the key update for `period` under the revocation
/// list. Costs `2 + 2(ℓ+1)` G2 elements per KUNode (about 940 nodes for 2^16 users with 100
/// revoked).
pub fn key_update(
    pp: &PublicParams,
    msk: &MasterSecret,
    period: u64,
    revoked: &RevocationList,
    rng: &mut (impl CryptoRng + RngCore),
) -> Result<KeyUpdate, Error> {
    pp.params.ensure_same(msk.params)?;
    let t = pp.params.period(period)?;
    let kt = pp.key_tables();
    let ku = tree::ku_nodes(
        pp.params.user_depth(),
        revoked.revoked_at(pp.params, period),
    );
    // Every KUNode multiplies the same ℓ+1 time bases: past a few nodes, tables pay for themselves.
    let points: Vec<G2Affine> = t.path().map(|x| pp.time_base_g2(x)).collect();
    let tables: Vec<G2Table> = if ku.len() >= TIME_TABLES_FROM {
        points.iter().map(G2Table::new).collect()
    } else {
        Vec::new()
    };
    let time_bases: Vec<G2Base<'_>> = if tables.is_empty() {
        points.iter().map(|p| G2Base::Point(*p)).collect()
    } else {
        tables.iter().map(G2Base::Table).collect()
    };
    let mut nodes = BTreeMap::new();
    for theta in ku {
        let mut r = Scalar::random(&mut *rng);
        let mut alpha_theta = msk.node_secret(theta);
        let mut a = msk.alpha - alpha_theta;
        let mut head = [kt.g.mul(&a) + kt.w.mul(&r), kt.g.mul(&r)];
        let mut minus_vr = -kt.v.mul(&r);
        [&mut alpha_theta, &mut a, &mut r]
            .into_iter()
            .for_each(backend::wipe_scalar);
        let time = time_bases
            .iter()
            .map(|base| fresh_row(&kt.g, base, minus_vr, rng))
            .collect();
        backend::wipe_g2_projective(&mut minus_vr);
        let [ku0, ku1] = affine_pair(&mut head);
        nodes.insert(theta, NodeUpdate { ku0, ku1, time });
    }
    Ok(KeyUpdate {
        params: pp.params,
        period,
        nodes,
    })
}

// === impl KeyUpdate ===

impl KeyUpdate {
    /// The tree parameters.
    pub fn params(&self) -> Params {
        self.params
    }

    /// The period this update is for.
    pub fn period(&self) -> u64 {
        self.period
    }

    /// How many KUNodes it covers.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// How many G2 elements it holds: `(2 + 2(ℓ+1))` per KUNode.
    pub fn element_count(&self) -> usize {
        self.nodes.values().map(|n| 2 + 2 * n.time.len()).sum()
    }

    /// The KUNode on `leaf`'s path, if any: none means the leaf is revoked for this period.
    pub(crate) fn node_on_path(&self, leaf: Node) -> Option<(Node, &NodeUpdate)> {
        leaf.path()
            .find_map(|theta| self.nodes.get(&theta).map(|n| (theta, n)))
    }
}

impl std::fmt::Debug for KeyUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyUpdate")
            .field("period", &self.period)
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}
