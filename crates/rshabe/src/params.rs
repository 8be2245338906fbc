//! `Setup`: tree parameters, public parameters and the master secret.

use std::collections::HashMap;
use std::fmt;
use std::sync::{OnceLock, RwLock};

use blstrs::{G1Affine, G1Projective, G2Affine, G2Projective, Gt, Scalar, pairing};
use ff::Field;
use group::{Curve, Group};
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroize;

use crate::Error;
use crate::access::Attribute;
use crate::backend::{self, G1Table, G2Table, GtTable};
use crate::hash;
use crate::tree::{self, Node};

/// The shape of a system: the depth `L` of the user tree (2^L users) and the depth `ℓ` of the
/// time tree (2^ℓ periods).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Params {
    user_depth: u8,
    time_depth: u8,
}

impl Params {
    /// The reference parameters of RS-HABE.md §3.6: `L = 20` (about a million users) and
    /// `ℓ = 10` (1024 periods: 2.8 years of one-day periods).
    pub const DEFAULT: Self = Self {
        user_depth: 20,
        time_depth: 10,
    };

    /// Parameters with a user tree of depth `user_depth` and a time tree of depth `time_depth`,
    /// each in `1..=32`.
    pub fn new(user_depth: u8, time_depth: u8) -> Result<Self, Error> {
        for depth in [user_depth, time_depth] {
            if depth == 0 || depth > tree::MAX_DEPTH {
                return Err(Error::InvalidDepth { depth });
            }
        }
        Ok(Self {
            user_depth,
            time_depth,
        })
    }

    /// The user tree's depth `L`.
    pub fn user_depth(self) -> u8 {
        self.user_depth
    }

    /// The time tree's depth `ℓ`.
    pub fn time_depth(self) -> u8 {
        self.time_depth
    }

    /// How many users the tree holds: `2^L`.
    pub fn users(self) -> u64 {
        1 << self.user_depth
    }

    /// How many periods the time tree holds: `2^ℓ`.
    pub fn periods(self) -> u64 {
        1 << self.time_depth
    }

    pub(crate) fn leaf(self, leaf: u64) -> Result<Node, Error> {
        Node::leaf(self.user_depth, leaf)
            .filter(|_| leaf < self.users())
            .ok_or(Error::LeafOutOfRange {
                leaf,
                depth: self.user_depth,
            })
    }

    pub(crate) fn period(self, period: u64) -> Result<Node, Error> {
        Node::leaf(self.time_depth, period)
            .filter(|_| period < self.periods())
            .ok_or(Error::PeriodOutOfRange {
                period,
                depth: self.time_depth,
            })
    }

    pub(crate) fn ensure_same(self, other: Self) -> Result<(), Error> {
        if self == other {
            Ok(())
        } else {
            Err(Error::ParamsMismatch)
        }
    }
}

impl Default for Params {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One copy of the public generators in one group: `g, w, v, u, h, u_T, h_T` (RS-HABE.md §4,
/// Setup). The G1 and G2 copies have the same discrete logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Generators<P> {
    pub(crate) g: P,
    pub(crate) w: P,
    pub(crate) v: P,
    pub(crate) u: P,
    pub(crate) h: P,
    pub(crate) ut: P,
    pub(crate) ht: P,
}

impl<P: Copy> Generators<P> {
    pub(crate) fn as_array(&self) -> [P; 7] {
        [self.g, self.w, self.v, self.u, self.h, self.ut, self.ht]
    }
}

impl<P> Generators<P> {
    pub(crate) fn from_array(a: [P; 7]) -> Self {
        let [g, w, v, u, h, ut, ht] = a;
        Self {
            g,
            w,
            v,
            u,
            h,
            ut,
            ht,
        }
    }
}

/// The public parameters `PP = (g₁, w₁, v₁, u₁, h₁, u_T₁, h_T₁; g₂, …, h_T₂; Y = e(g₁, g₂)^α)`.
///
/// Also holds, built on first use and shared by every thread, the constant-time fixed-base tables
/// that `encrypt` and `ct_update` use for the seven G1 generators and `Y` (1.2 MiB), and a bounded
/// cache of the G2 bases `u₂^{H(A)}·h₂` per attribute and time node.
pub struct PublicParams {
    pub(crate) params: Params,
    pub(crate) g1: Generators<G1Affine>,
    pub(crate) g2: Generators<G2Affine>,
    pub(crate) y: Gt,
    tables: OnceLock<EncryptionTables>,
    key_tables: OnceLock<KeyTables>,
    bases: RwLock<HashMap<BaseKey, G2Affine>>,
}

/// The master secret `MSK = (α, k_PRF)`: the authority's, and nobody else's. Zeroized on drop.
pub struct MasterSecret {
    pub(crate) params: Params,
    pub(crate) alpha: Scalar,
    pub(crate) prf_key: [u8; 32],
}

/// Setup: fresh public parameters and master secret for `params`, from the injected RNG.
///
/// The exponents of `w, v, u, h, u_T, h_T` are drawn, used for both groups and wiped; `α` stays
/// in the master secret, and the per-node secrets `α_θ` are derived from `k_PRF`, so nothing is
/// stored per node.
pub fn setup(params: Params, rng: &mut (impl CryptoRng + RngCore)) -> (PublicParams, MasterSecret) {
    let mut exps: [Scalar; 6] = std::array::from_fn(|_| Scalar::random(&mut *rng));
    let mut alpha = Scalar::random(&mut *rng);
    let mut prf_key = [0u8; 32];
    rng.fill_bytes(&mut prf_key);
    let g1 = G1Projective::generator();
    let g2 = G2Projective::generator();
    let mut p1 = [g1.to_affine(); 7];
    let mut p2 = [g2.to_affine(); 7];
    for (i, e) in exps.iter().enumerate() {
        p1[i + 1] = (g1 * e).to_affine();
        p2[i + 1] = (g2 * e).to_affine();
    }
    let y = pairing(&(g1 * alpha).to_affine(), &p2[0]);
    let pp = PublicParams::from_parts(
        params,
        Generators::from_array(p1),
        Generators::from_array(p2),
        y,
    );
    let msk = MasterSecret {
        params,
        alpha,
        prf_key,
    };
    exps.iter_mut().for_each(backend::wipe_scalar);
    backend::wipe_scalar(&mut alpha);
    prf_key.zeroize();
    (pp, msk)
}

// === impl PublicParams ===

impl PublicParams {
    pub(crate) fn from_parts(
        params: Params,
        g1: Generators<G1Affine>,
        g2: Generators<G2Affine>,
        y: Gt,
    ) -> Self {
        Self {
            params,
            g1,
            g2,
            y,
            tables: OnceLock::new(),
            key_tables: OnceLock::new(),
            bases: RwLock::new(HashMap::new()),
        }
    }

    /// The tree parameters.
    pub fn params(&self) -> Params {
        self.params
    }

    /// The fixed-base tables, built on first use (about 10 ms, once per process).
    pub(crate) fn tables(&self) -> &EncryptionTables {
        self.tables.get_or_init(|| EncryptionTables {
            g1: Generators::from_array(self.g1.as_array().map(|p| G1Table::new(&p))),
            y: GtTable::new(&self.y),
        })
    }

    /// The fixed-base tables of `g₂, w₂, v₂` for the key algorithms, built on first use (about 6 ms,
    /// once per process, 576 KiB).
    pub(crate) fn key_tables(&self) -> &KeyTables {
        self.key_tables.get_or_init(|| KeyTables {
            g: G2Table::new(&self.g2.g),
            w: G2Table::new(&self.g2.w),
            v: G2Table::new(&self.g2.v),
        })
    }

    /// `u₂^{H(A)}·h₂` for a user attribute, cached.
    pub(crate) fn attribute_base_g2(&self, a: &Attribute) -> G2Affine {
        self.base_g2(BaseKey::Attribute(a.clone()), || {
            (self.g2.u * hash::attribute(a) + self.g2.h).to_affine()
        })
    }

    /// `u_T₂^{H(τ)}·h_T₂` for a time node, cached.
    pub(crate) fn time_base_g2(&self, node: Node) -> G2Affine {
        self.base_g2(BaseKey::Time(node), || {
            (self.g2.ut * hash::time_node(node) + self.g2.ht).to_affine()
        })
    }

    fn base_g2(&self, key: BaseKey, compute: impl FnOnce() -> G2Affine) -> G2Affine {
        if let Some(b) = self
            .bases
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return *b;
        }
        let b = compute();
        let mut cache = self.bases.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= BASE_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(key, b);
        b
    }
}

impl Clone for PublicParams {
    fn clone(&self) -> Self {
        Self::from_parts(self.params, self.g1, self.g2, self.y)
    }
}

impl PartialEq for PublicParams {
    fn eq(&self, other: &Self) -> bool {
        self.params == other.params
            && self.g1 == other.g1
            && self.g2 == other.g2
            && self.y == other.y
    }
}

impl Eq for PublicParams {}

impl fmt::Debug for PublicParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicParams")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

// === impl MasterSecret ===

impl MasterSecret {
    /// The tree parameters.
    pub fn params(&self) -> Params {
        self.params
    }

    /// The same `α` with a fresh node-secret key `k_PRF`: every long-term key issued under
    /// `self` stops combining with the key updates made under the result, while the public
    /// parameters (`Y = e(g₁, g₂)^α`) and therefore every stored ciphertext stay valid.
    ///
    /// This is how an authority retires all its long-term keys at once (after RS-HABE.md §4's
    /// correction, every key must be re-issued): a key update made with the new secret gives
    /// `KU0_θ = g₂^{α − α'_θ}·w₂^{r'}`, and an old key's `K0_θ = g₂^{α_θ}·w₂^{r}` carries the old
    /// `α_θ`, so their product is not `g₂^{α}` times a `w₂` term. Decryption keys already
    /// derived for past periods still open ciphertexts of those periods until the stored
    /// ciphertexts are updated past them: advance the period and run `ct_update`.
    pub fn with_new_node_secrets(&self, rng: &mut (impl CryptoRng + RngCore)) -> Self {
        let mut prf_key = [0u8; 32];
        rng.fill_bytes(&mut prf_key);
        Self {
            params: self.params,
            alpha: self.alpha,
            prf_key,
        }
    }

    /// α_θ = PRF_k(θ), the secret of a user-tree node.
    pub(crate) fn node_secret(&self, node: Node) -> Scalar {
        hash::node_secret(&self.prf_key, node)
    }
}

impl Drop for MasterSecret {
    fn drop(&mut self) {
        backend::wipe_scalar(&mut self.alpha);
        self.prf_key.zeroize();
    }
}

impl fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterSecret")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// The constant-time fixed-base tables of the G2 generators that keys are built from.
pub(crate) struct KeyTables {
    pub(crate) g: G2Table,
    pub(crate) w: G2Table,
    pub(crate) v: G2Table,
}

/// The constant-time fixed-base tables of the G1 generators and of `Y`.
pub(crate) struct EncryptionTables {
    pub(crate) g1: Generators<G1Table>,
    pub(crate) y: GtTable,
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum BaseKey {
    Attribute(Attribute),
    Time(Node),
}

/// Entries of the G2 base cache before it is cleared (96 bytes each, plus the key).
const BASE_CACHE_ENTRIES: usize = 4096;
