//! The attack suite's harness: a seeded system, raw parsers and writers for the wire format (so
//! an attack can splice group elements between objects with no access to the crate's
//! internals), and the decryption equation evaluated on arbitrary key material.
//!
//! Ported from the outside audit of 2026-12-02 (`shared/crypto/audit/audit_common`), with the
//! secret key read and written in format version 2: one independent RW13 key per path node.
#![allow(dead_code, unreachable_pub)]

use blstrs::{
    Bls12, Compress, G1Affine, G1Projective, G2Affine, G2Prepared, G2Projective, Gt, Scalar,
};
use group::{Curve, Group};
use hkdf::Hkdf;
use pairing::{MillerLoopResult, MultiMillerLoop};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rshabe::{
    AccessStructure, Attribute, Ciphertext, DataKey, DecryptionKey, Error, KeyUpdate, MasterSecret,
    Params, PublicParams, RevocationList, SecretKey, UpdateMode,
};
use sha2::Sha256;

/// The user tree's depth: 16 leaves, five nodes on every path.
pub const L: u8 = 4;
/// The time tree's depth: 16 periods.
pub const ELL: u8 = 4;

/// A tree node as the wire format writes it: `(depth, bits)`.
pub type TreeNode = (u8, u64);

/// An authority and a seeded RNG.
pub struct System {
    pub pp: PublicParams,
    pub msk: MasterSecret,
    pub params: Params,
    pub rng: ChaCha20Rng,
}

impl System {
    pub fn new(seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let params = Params::new(L, ELL).unwrap();
        let (pp, msk) = rshabe::setup(params, &mut rng);
        Self {
            pp,
            msk,
            params,
            rng,
        }
    }

    pub fn key(&mut self, leaf: u64, names: &[&str]) -> SecretKey {
        rshabe::keygen(&self.pp, &self.msk, leaf, &attrs(names), &mut self.rng).unwrap()
    }

    pub fn delegate(&mut self, key: &SecretKey, names: &[&str]) -> SecretKey {
        rshabe::delegate(&self.pp, key, &attrs(names), &mut self.rng).unwrap()
    }

    pub fn update(&mut self, period: u64, rl: &RevocationList) -> KeyUpdate {
        rshabe::key_update(&self.pp, &self.msk, period, rl, &mut self.rng).unwrap()
    }

    /// DKGen through the API; panics if it refuses (use [`System::try_dk`] to see why).
    pub fn dk(&mut self, key: &SecretKey, ku: &KeyUpdate) -> DecryptionKey {
        self.try_dk(key, ku).unwrap()
    }

    pub fn try_dk(&mut self, key: &SecretKey, ku: &KeyUpdate) -> Result<DecryptionKey, Error> {
        rshabe::decrypt_key(&self.pp, key, ku, &mut self.rng)
    }

    pub fn seal(&mut self, policy: &str, period: u64) -> (Ciphertext, DataKey) {
        let policy = AccessStructure::parse(policy).unwrap();
        rshabe::encrypt(&self.pp, &policy, period, &mut self.rng).unwrap()
    }

    pub fn move_to(&mut self, ct: &Ciphertext, period: u64, mode: UpdateMode) -> Ciphertext {
        rshabe::ct_update(&self.pp, ct, period, mode, &mut self.rng).unwrap()
    }
}

pub fn attrs(names: &[&str]) -> Vec<Attribute> {
    names.iter().map(|n| Attribute::new(n).unwrap()).collect()
}

/// Whether `dk` opens `ct` to exactly the data key `dek`.
pub fn opens(dk: &DecryptionKey, ct: &Ciphertext, dek: &DataKey) -> bool {
    matches!(rshabe::decrypt(dk, ct), Ok(k) if k == *dek)
}

/// The node at depth `d` on the path of `leaf` in a tree of depth `depth`.
pub fn path_node(depth: u8, leaf: u64, d: u8) -> TreeNode {
    (d, leaf >> (depth - d))
}

pub fn is_ancestor(node: TreeNode, depth: u8, leaf: u64) -> bool {
    node.0 <= depth && leaf >> (depth - node.0) == node.1
}

pub fn scalar(x: i64) -> Scalar {
    if x >= 0 {
        Scalar::from(x.unsigned_abs())
    } else {
        -Scalar::from(x.unsigned_abs())
    }
}

/// `x·P + y·Q` in G2.
pub fn comb(x: i64, p: G2Affine, y: i64, q: G2Affine) -> G2Affine {
    (p * scalar(x) + q * scalar(y)).to_affine()
}

/// `P − Q + R` in G2: moves `R` by the difference of `P` and `Q`.
pub fn shift(p: G2Affine, q: G2Affine, r: G2Affine) -> G2Affine {
    (G2Projective::from(p) - G2Projective::from(q) + G2Projective::from(r)).to_affine()
}

// === the raw wire format ===

pub struct Cursor<'a>(pub &'a [u8]);

impl<'a> Cursor<'a> {
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        head
    }

    pub fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take(2).try_into().unwrap())
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take(4).try_into().unwrap())
    }

    pub fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take(8).try_into().unwrap())
    }

    pub fn g1(&mut self) -> G1Affine {
        G1Affine::from_compressed(self.take(48).try_into().unwrap()).unwrap()
    }

    pub fn g2(&mut self) -> G2Affine {
        G2Affine::from_compressed(self.take(96).try_into().unwrap()).unwrap()
    }

    pub fn g2_pair(&mut self) -> (G2Affine, G2Affine) {
        (self.g2(), self.g2())
    }

    pub fn string(&mut self) -> String {
        let n = usize::from(self.u16());
        String::from_utf8(self.take(n).to_vec()).unwrap()
    }

    pub fn node(&mut self) -> TreeNode {
        (self.u8(), self.u64())
    }

    pub fn head(&mut self) -> [u8; 4] {
        self.take(4).try_into().unwrap()
    }
}

#[derive(Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    pub fn u8(&mut self, x: u8) {
        self.0.push(x);
    }

    pub fn u16(&mut self, x: u16) {
        self.0.extend_from_slice(&x.to_be_bytes());
    }

    pub fn u32(&mut self, x: u32) {
        self.0.extend_from_slice(&x.to_be_bytes());
    }

    pub fn u64(&mut self, x: u64) {
        self.0.extend_from_slice(&x.to_be_bytes());
    }

    pub fn g1(&mut self, p: &G1Affine) {
        self.0.extend_from_slice(&p.to_compressed());
    }

    pub fn g2(&mut self, p: &G2Affine) {
        self.0.extend_from_slice(&p.to_compressed());
    }

    pub fn g2_pair(&mut self, (a, b): &(G2Affine, G2Affine)) {
        self.g2(a);
        self.g2(b);
    }

    pub fn string(&mut self, s: &str) {
        self.u16(u16::try_from(s.len()).unwrap());
        self.0.extend_from_slice(s.as_bytes());
    }

    pub fn node(&mut self, (depth, bits): TreeNode) {
        self.u8(depth);
        self.u64(bits);
    }
}

/// A named attribute row `(K2, K3)`.
pub type NamedRow = (String, (G2Affine, G2Affine));

/// One path node's RW13 key in a secret key: `K1_θ`, `K0_θ` and one named row per attribute.
#[derive(Clone)]
pub struct RawNode {
    pub k1: G2Affine,
    pub k0: G2Affine,
    pub rows: Vec<NamedRow>,
}

impl RawNode {
    pub fn row(&self, name: &str) -> NamedRow {
        self.rows.iter().find(|r| r.0 == name).unwrap().clone()
    }
}

/// A secret key in format version 2: `version 2 ‖ kind 3 ‖ L ‖ ℓ ‖ leaf u64 ‖ u16 m ‖
/// m × (u16 len, name) ‖ for each of the L+1 path nodes root first: K1_θ ‖ K0_θ ‖
/// m × (K_{θ,A,2} ‖ K_{θ,A,3})`. The writer sorts each node's rows by name and takes the name
/// list from the root node, so a splice only has to say which row goes where.
#[derive(Clone)]
pub struct RawSk {
    pub head: [u8; 4],
    pub leaf: u64,
    /// By depth, the root first.
    pub nodes: Vec<RawNode>,
}

impl RawSk {
    pub fn parse(bytes: &[u8]) -> Self {
        let mut c = Cursor(bytes);
        let head = c.head();
        assert_eq!(head[..2], [2, 3], "a secret key of format version 2");
        let leaf = c.u64();
        let m = usize::from(c.u16());
        let names: Vec<String> = (0..m).map(|_| c.string()).collect();
        let nodes = (0..=head[2])
            .map(|_| RawNode {
                k1: c.g2(),
                k0: c.g2(),
                rows: names.iter().map(|n| (n.clone(), c.g2_pair())).collect(),
            })
            .collect();
        assert!(c.0.is_empty());
        Self { head, leaf, nodes }
    }

    pub fn of(key: &SecretKey) -> Self {
        Self::parse(&key.to_bytes())
    }

    pub fn encode(&self) -> Vec<u8> {
        let sorted = |node: &RawNode| {
            let mut rows = node.rows.clone();
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            rows
        };
        let names = sorted(&self.nodes[0]);
        let mut w = Writer(self.head.to_vec());
        w.u64(self.leaf);
        w.u16(u16::try_from(names.len()).unwrap());
        names.iter().for_each(|(n, _)| w.string(n));
        for node in &self.nodes {
            w.g2(&node.k1);
            w.g2(&node.k0);
            sorted(node).iter().for_each(|(_, row)| w.g2_pair(row));
        }
        w.0
    }

    pub fn key(&self) -> Result<SecretKey, Error> {
        SecretKey::from_bytes(&self.encode())
    }

    /// The same key under another leaf label, every node unchanged.
    pub fn relabelled(&self, leaf: u64) -> Self {
        Self {
            leaf,
            ..self.clone()
        }
    }

    /// Every node keeps its head; its rows are `pick(depth)`.
    pub fn with_rows(&self, pick: impl Fn(usize) -> Vec<NamedRow>) -> Self {
        let nodes = self
            .nodes
            .iter()
            .enumerate()
            .map(|(d, n)| RawNode {
                rows: pick(d),
                ..n.clone()
            })
            .collect();
        Self {
            nodes,
            ..self.clone()
        }
    }
}

/// A decryption key: `K0 K1 K1_T`, `(K2, K3)` per attribute (sorted), `(K2, K3)` per time depth.
#[derive(Clone)]
pub struct RawDk {
    pub head: [u8; 4],
    pub period: u64,
    pub names: Vec<String>,
    pub el: Vec<G2Affine>,
}

impl RawDk {
    pub fn parse(bytes: &[u8]) -> Self {
        let mut c = Cursor(bytes);
        let head = c.head();
        let period = c.u64();
        let m = usize::from(c.u16());
        let names: Vec<String> = (0..m).map(|_| c.string()).collect();
        let n = 3 + 2 * m + 2 * (usize::from(head[3]) + 1);
        let el = (0..n).map(|_| c.g2()).collect();
        assert!(c.0.is_empty());
        Self {
            head,
            period,
            names,
            el,
        }
    }

    pub fn of(dk: &DecryptionKey) -> Self {
        Self::parse(&dk.to_bytes())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(self.head.to_vec());
        w.u64(self.period);
        w.u16(u16::try_from(self.names.len()).unwrap());
        self.names.iter().for_each(|n| w.string(n));
        self.el.iter().for_each(|p| w.g2(p));
        w.0
    }

    pub fn key(&self) -> Result<DecryptionKey, Error> {
        DecryptionKey::from_bytes(&self.encode())
    }

    pub fn attr(&self, name: &str) -> (G2Affine, G2Affine) {
        let i = self.names.iter().position(|n| n == name).unwrap();
        (self.el[3 + 2 * i], self.el[4 + 2 * i])
    }

    pub fn time(&self, depth: usize) -> (G2Affine, G2Affine) {
        let b = 3 + 2 * self.names.len() + 2 * depth;
        (self.el[b], self.el[b + 1])
    }

    pub fn times(&self) -> Vec<(G2Affine, G2Affine)> {
        (0..=usize::from(self.head[3]))
            .map(|d| self.time(d))
            .collect()
    }

    /// A decryption key from parts; the rows are sorted by name.
    pub fn build(
        head: [u8; 4],
        period: u64,
        heads: [G2Affine; 3],
        rows: &[(&str, (G2Affine, G2Affine))],
        times: &[(G2Affine, G2Affine)],
    ) -> Self {
        let mut rows = rows.to_vec();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        let mut el = heads.to_vec();
        rows.iter().for_each(|(_, (a, b))| el.extend([*a, *b]));
        times.iter().for_each(|(a, b)| el.extend([*a, *b]));
        Self {
            head,
            period,
            names: rows.iter().map(|r| r.0.to_string()).collect(),
            el,
        }
    }
}

/// A ciphertext row `(C1, C2, C3)`.
pub type CtRow = [G1Affine; 3];

#[derive(Clone)]
pub struct RawCt {
    pub head: [u8; 4],
    pub period: u64,
    pub policy: String,
    pub c: Vec<u8>,
    pub c0: G1Affine,
    pub rows: Vec<CtRow>,
    pub chains: Vec<Vec<(TreeNode, CtRow)>>,
}

impl RawCt {
    pub fn parse(bytes: &[u8]) -> Self {
        let mut c = Cursor(bytes);
        let head = c.head();
        let period = c.u64();
        let policy = c.string();
        let n = AccessStructure::parse(&policy).unwrap().leaf_count();
        let gt = c.take(288).to_vec();
        let c0 = c.g1();
        let row = |c: &mut Cursor<'_>| [c.g1(), c.g1(), c.g1()];
        let rows = (0..n).map(|_| row(&mut c)).collect();
        let count = usize::from(c.u8());
        let chains = (0..count)
            .map(|_| {
                let len = usize::from(c.u8());
                (0..len).map(|_| (c.node(), row(&mut c))).collect()
            })
            .collect();
        assert!(c.0.is_empty());
        Self {
            head,
            period,
            policy,
            c: gt,
            c0,
            rows,
            chains,
        }
    }

    pub fn of(ct: &Ciphertext) -> Self {
        Self::parse(&ct.to_bytes())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(self.head.to_vec());
        w.u64(self.period);
        w.string(&self.policy);
        w.0.extend_from_slice(&self.c);
        w.g1(&self.c0);
        self.rows.iter().flatten().for_each(|p| w.g1(p));
        w.u8(u8::try_from(self.chains.len()).unwrap());
        for chain in &self.chains {
            w.u8(u8::try_from(chain.len()).unwrap());
            for (node, row) in chain {
                w.node(*node);
                row.iter().for_each(|p| w.g1(p));
            }
        }
        w.0
    }

    pub fn ct(&self) -> Result<Ciphertext, Error> {
        Ciphertext::from_bytes(&self.encode())
    }

    /// The first chain whose every node lies on `period`'s path.
    pub fn chain_for(&self, period: u64) -> Option<usize> {
        self.chains
            .iter()
            .position(|c| c.iter().all(|(n, _)| is_ancestor(*n, ELL, period)))
    }

    pub fn row_attribute(&self, i: usize) -> String {
        let p = AccessStructure::parse(&self.policy).unwrap();
        p.leaves()[i].as_str().to_string()
    }

    /// Honest LSSS coefficients for `held` over the policy.
    pub fn coefficients(&self, held: &[&str]) -> Option<Vec<(usize, Scalar)>> {
        let p = AccessStructure::parse(&self.policy).unwrap();
        rshabe::secret_sharing::Lsss::new(&p).coefficients(&|a| held.contains(&a.as_str()))
    }
}

/// One KUNode's entry in a key update.
#[derive(Clone)]
pub struct KuEntry {
    pub node: TreeNode,
    pub ku0: G2Affine,
    pub ku1: G2Affine,
    pub time: Vec<(G2Affine, G2Affine)>,
}

#[derive(Clone)]
pub struct RawKu {
    pub head: [u8; 4],
    pub period: u64,
    pub nodes: Vec<KuEntry>,
}

impl RawKu {
    pub fn parse(bytes: &[u8]) -> Self {
        let mut c = Cursor(bytes);
        let head = c.head();
        let period = c.u64();
        let n = c.u32() as usize;
        let rows = usize::from(head[3]) + 1;
        let nodes = (0..n)
            .map(|_| KuEntry {
                node: c.node(),
                ku0: c.g2(),
                ku1: c.g2(),
                time: (0..rows).map(|_| c.g2_pair()).collect(),
            })
            .collect();
        assert!(c.0.is_empty());
        Self {
            head,
            period,
            nodes,
        }
    }

    pub fn of(ku: &KeyUpdate) -> Self {
        Self::parse(&ku.to_bytes())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut nodes = self.nodes.clone();
        nodes.sort_by_key(|e| e.node);
        let mut w = Writer(self.head.to_vec());
        w.u64(self.period);
        w.u32(u32::try_from(nodes.len()).unwrap());
        for e in &nodes {
            w.node(e.node);
            w.g2(&e.ku0);
            w.g2(&e.ku1);
            e.time.iter().for_each(|row| w.g2_pair(row));
        }
        w.0
    }

    pub fn key_update(&self) -> Result<KeyUpdate, Error> {
        KeyUpdate::from_bytes(&self.encode())
    }

    /// The KUNode on `leaf`'s path.
    pub fn entry_for(&self, leaf: u64) -> Option<&KuEntry> {
        self.nodes.iter().find(|e| is_ancestor(e.node, L, leaf))
    }
}

// === the decryption equation ===

/// Key material assembled by an attacker, fed to the decryption equation directly.
#[derive(Clone)]
pub struct Attempt {
    pub k0: G2Affine,
    pub k1: G2Affine,
    pub k1t: G2Affine,
    /// (policy row, coefficient, K2, K3)
    pub policy: Vec<(usize, Scalar, G2Affine, G2Affine)>,
    pub chain: usize,
    /// One (K2, K3) per row of the chain; `None` leaves that row out (a partial chain).
    pub time: Vec<Option<(G2Affine, G2Affine)>>,
}

impl Attempt {
    /// What an honest holder of `dk` computes: its own rows, the first chain on its path.
    pub fn honest(ct: &RawCt, dk: &RawDk) -> Option<Self> {
        let held: Vec<&str> = dk.names.iter().map(String::as_str).collect();
        let w = ct.coefficients(&held)?;
        let chain = ct.chain_for(dk.period)?;
        Some(Self {
            k0: dk.el[0],
            k1: dk.el[1],
            k1t: dk.el[2],
            policy: w
                .iter()
                .map(|(i, c)| {
                    let (k2, k3) = dk.attr(&ct.row_attribute(*i));
                    (*i, *c, k2, k3)
                })
                .collect(),
            chain,
            time: ct.chains[chain]
                .iter()
                .map(|(n, _)| Some(dk.time(usize::from(n.0))))
                .collect(),
        })
    }

    /// Whether the equation recovers exactly `dek` from `ct`.
    pub fn opens(&self, ct: &RawCt, dek: &DataKey) -> bool {
        data_key_from_blinding(ct, self.blinding(ct)) == Some(*dek.as_bytes())
    }

    /// `e(C0,K0) / [e(Σω C1, K1) Π e(ω C2, K2) e(ω C3, K3) · e(Σ chain C1, K1_T) Π …]`.
    fn blinding(&self, ct: &RawCt) -> Gt {
        let mut g1: Vec<G1Projective> = vec![G1Projective::from(ct.c0), G1Projective::identity()];
        let mut g2: Vec<G2Affine> = vec![self.k0, self.k1];
        for (i, w, k2, k3) in &self.policy {
            let r = ct.rows[*i];
            g1[1] -= G1Projective::from(r[0]) * w;
            g1.push(-(G1Projective::from(r[1]) * w));
            g1.push(-(G1Projective::from(r[2]) * w));
            g2.extend([*k2, *k3]);
        }
        let mut sum = G1Projective::identity();
        let mut rest = Vec::new();
        for ((_, r), k) in ct.chains[self.chain].iter().zip(&self.time) {
            if let Some((k2, k3)) = k {
                sum += G1Projective::from(r[0]);
                rest.push((-G1Projective::from(r[1]), *k2));
                rest.push((-G1Projective::from(r[2]), *k3));
            }
        }
        g1.push(-sum);
        g2.push(self.k1t);
        for (p, q) in rest {
            g1.push(p);
            g2.push(q);
        }
        let p1: Vec<G1Affine> = g1.iter().map(Curve::to_affine).collect();
        let p2: Vec<G2Prepared> = g2.into_iter().map(G2Prepared::from).collect();
        let terms: Vec<(&G1Affine, &G2Prepared)> = p1.iter().zip(p2.iter()).collect();
        Bls12::multi_miller_loop(&terms).final_exponentiation()
    }
}

/// The data key `HKDF(C / blinding)` (`notes::wire_format`), or `None` on the identity.
fn data_key_from_blinding(ct: &RawCt, blinding: Gt) -> Option<[u8; 32]> {
    let c = Gt::read_compressed(&ct.c[..]).unwrap();
    let m = c - blinding;
    if bool::from(m.is_identity()) {
        return None;
    }
    let mut ikm = Vec::new();
    m.write_compressed(&mut ikm).unwrap();
    let mut k = [0u8; 32];
    Hkdf::<Sha256>::new(Some(b"fhirseal rshabe v1"), &ikm)
        .expand(b"data key", &mut k)
        .unwrap();
    Some(k)
}

// === counting ===

/// Attempts by kind, and how many of them opened; printed, so that a run against a mutant says
/// which attacks got through and how often.
#[derive(Default)]
pub struct Tally {
    sections: Vec<(&'static str, usize, usize)>,
}

impl Tally {
    pub fn record(&mut self, section: &'static str, opened: bool) {
        let i = match self.sections.iter().position(|s| s.0 == section) {
            Some(i) => i,
            None => {
                self.sections.push((section, 0, 0));
                self.sections.len() - 1
            }
        };
        self.sections[i].1 += usize::from(opened);
        self.sections[i].2 += 1;
    }

    /// Prints every section's count and returns the total `(opened, attempts)`.
    pub fn report(&self, test: &str) -> (usize, usize) {
        for (section, opened, tried) in &self.sections {
            eprintln!("{test}: {section}: opened {opened} of {tried}");
        }
        let opened = self.sections.iter().map(|s| s.1).sum();
        let tried = self.sections.iter().map(|s| s.2).sum();
        eprintln!("{test}: total: opened {opened} of {tried}");
        (opened, tried)
    }
}
