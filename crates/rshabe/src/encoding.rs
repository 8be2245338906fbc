//! The versioned, canonical binary encoding of every object of the scheme.
//!
//! Layout (all integers big-endian; see [`crate::notes::wire_format`]):
//! `version (1) ‖ kind (1) ‖ L (1) ‖ ℓ (1) ‖ body`. Group elements are compressed (G1 48 bytes,
//! G2 96, GT 288) and decoded only with blstrs' subgroup-checking `from_compressed`; scalars are
//! 32 bytes and must be below the group order; strings are a u16 length and UTF-8 in NFC; sets
//! are strictly increasing. Decoding refuses truncated input, trailing bytes, unknown versions,
//! other kinds, counts that do not fit the input, and anything non-canonical, so that every
//! object has exactly one encoding.

use std::collections::BTreeMap;

use blstrs::{Compress, G1Affine, G2Affine, Gt, Scalar};
use group::Group;
use group::prime::PrimeCurveAffine;
use zeroize::Zeroizing;

use crate::access::{AccessStructure, Attribute};
use crate::ciphertext::{Ciphertext, Row, TimeRow};
use crate::decrypt_key::DecryptionKey;
use crate::key::{AttributeKey, NodeKey, SecretKey};
use crate::params::{Generators, MasterSecret, Params, PublicParams};
use crate::tree::{self, Node};
use crate::update::{KeyUpdate, NodeUpdate};
use crate::{DecodeError, Error, MAX_KEY_ATTRIBUTES};

/// The wire-format version of the public objects (public parameters, key updates, ciphertexts)
/// and of decryption keys: what this build writes and reads for them.
pub const VERSION: u8 = 1;

/// The wire-format version of long-term secret keys: 2 since every node of the user's path holds
/// an independent key (RS-HABE.md §4, "Correction (2026-12-02)"). Version 1 keys, which shared one
/// randomiser across the path, are refused with [`DecodeError::RetiredKeyLayout`].
pub const SECRET_KEY_VERSION: u8 = 2;

const G1_BYTES: usize = 48;
const G2_BYTES: usize = 96;
const GT_BYTES: usize = 288;

/// The object kinds, second byte of every encoding.
#[derive(Clone, Copy)]
enum Kind {
    PublicParams = 1,
    MasterSecret = 2,
    SecretKey = 3,
    KeyUpdate = 4,
    DecryptionKey = 5,
    Ciphertext = 6,
}

impl Kind {
    /// The format version this build writes for the kind and the only one it reads.
    fn version(self) -> u8 {
        match self {
            Self::SecretKey => SECRET_KEY_VERSION,
            _ => VERSION,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::PublicParams => "public parameters",
            Self::MasterSecret => "master secret",
            Self::SecretKey => "secret key",
            Self::KeyUpdate => "key update",
            Self::DecryptionKey => "decryption key",
            Self::Ciphertext => "ciphertext",
        }
    }
}

// === impl PublicParams ===

impl PublicParams {
    /// The canonical encoding (`4 + 7·48 + 7·96 + 288` bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(Kind::PublicParams, self.params);
        self.g1.as_array().iter().for_each(|p| w.g1(p));
        self.g2.as_array().iter().for_each(|p| w.g2(p));
        w.gt(&self.y);
        w.0
    }

    /// Decodes [`PublicParams::to_bytes`]'s output; every point is subgroup-checked.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let (mut r, params) = Reader::open(bytes, Kind::PublicParams)?;
        let mut g1 = [G1Affine::default(); 7];
        for p in &mut g1 {
            *p = r.g1()?;
        }
        let mut g2 = [G2Affine::default(); 7];
        for p in &mut g2 {
            *p = r.g2()?;
        }
        let y = r.gt()?;
        r.finish()?;
        Ok(Self::from_parts(
            params,
            Generators::from_array(g1),
            Generators::from_array(g2),
            y,
        ))
    }
}

// === impl MasterSecret ===

impl MasterSecret {
    /// The canonical encoding, in a buffer that is zeroized on drop. Seal it before storing it.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::new(Kind::MasterSecret, self.params);
        w.0.extend_from_slice(&self.alpha.to_bytes_be());
        w.0.extend_from_slice(&self.prf_key);
        Zeroizing::new(w.0)
    }

    /// Decodes [`MasterSecret::to_bytes`]'s output.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let (mut r, params) = Reader::open(bytes, Kind::MasterSecret)?;
        let alpha = r.scalar()?;
        let mut prf_key = [0u8; 32];
        prf_key.copy_from_slice(r.take(32)?);
        r.finish()?;
        Ok(Self {
            params,
            alpha,
            prf_key,
        })
    }
}

// === impl SecretKey ===

impl SecretKey {
    /// The canonical encoding (format version 2), in a buffer that is zeroized on drop:
    /// `head ‖ leaf (8) ‖ m (2) ‖ m names ‖ for each of the L+1 path nodes, root first:
    /// K1_θ ‖ K0_θ ‖ m × (K_{θ,A,2} ‖ K_{θ,A,3})`.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::new(Kind::SecretKey, self.params);
        w.u64(self.leaf.bits());
        w.u16(self.attributes.len() as u16);
        self.attributes.iter().for_each(|a| w.string(a.as_str()));
        for node in &self.nodes {
            w.g2(&node.k1);
            w.g2(&node.k0);
            node.rows.iter().for_each(|row| w.row(row));
        }
        Zeroizing::new(w.0)
    }

    /// Decodes [`SecretKey::to_bytes`]'s output. A key of format version 1 (one randomiser for
    /// the whole path) is [`DecodeError::RetiredKeyLayout`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let (mut r, params) = Reader::open(bytes, Kind::SecretKey)?;
        let leaf = params
            .leaf(r.u64()?)
            .map_err(|_| DecodeError::InvalidNode)?;
        let attributes = r.attribute_names()?;
        let m = attributes.len();
        let depth = usize::from(params.user_depth());
        r.count(depth + 1, G2_BYTES * (2 + 2 * m))?;
        let nodes = (0..=depth)
            .map(|_| r.node_key(m))
            .collect::<Result<_, _>>()?;
        r.finish()?;
        Ok(Self {
            params,
            leaf,
            attributes,
            nodes,
        })
    }
}

// === impl KeyUpdate ===

impl KeyUpdate {
    /// The canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(Kind::KeyUpdate, self.params);
        w.u64(self.period);
        w.u32(self.nodes.len() as u32);
        for (node, n) in &self.nodes {
            w.node(*node);
            w.g2(&n.ku0);
            w.g2(&n.ku1);
            n.time.iter().for_each(|row| w.row(row));
        }
        w.0
    }

    /// Decodes [`KeyUpdate::to_bytes`]'s output.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let (mut r, params) = Reader::open(bytes, Kind::KeyUpdate)?;
        let period = r.u64()?;
        params
            .period(period)
            .map_err(|_| DecodeError::InvalidNode)?;
        let time_rows = usize::from(params.time_depth()) + 1;
        let count = r.u32()? as usize;
        let count = r.count(count, 9 + G2_BYTES * (2 + 2 * time_rows))?;
        let mut nodes = BTreeMap::new();
        let mut previous: Option<Node> = None;
        for _ in 0..count {
            let node = r.node(params.user_depth())?;
            if previous.is_some_and(|p| p >= node) {
                return Err(DecodeError::NonCanonical.into());
            }
            previous = Some(node);
            let ku0 = r.g2()?;
            let ku1 = r.g2()?;
            let time = (0..time_rows).map(|_| r.row()).collect::<Result<_, _>>()?;
            nodes.insert(node, NodeUpdate { ku0, ku1, time });
        }
        r.finish()?;
        Ok(Self {
            params,
            period,
            nodes,
        })
    }
}

// === impl DecryptionKey ===

impl DecryptionKey {
    /// The canonical encoding, in a buffer that is zeroized on drop.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::new(Kind::DecryptionKey, self.params);
        w.u64(self.period);
        w.u16(self.attributes.len() as u16);
        for a in self.attributes.keys() {
            w.string(a.as_str());
        }
        self.elements.iter().for_each(|p| w.g2(p));
        Zeroizing::new(w.0)
    }

    /// Decodes [`DecryptionKey::to_bytes`]'s output.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let (mut r, params) = Reader::open(bytes, Kind::DecryptionKey)?;
        let period = r.u64()?;
        params
            .period(period)
            .map_err(|_| DecodeError::InvalidNode)?;
        let names = r.attribute_names()?;
        let count = 3 + 2 * names.len() + 2 * (usize::from(params.time_depth()) + 1);
        let elements = r.g2_vec(count)?;
        r.finish()?;
        let attributes = names.into_iter().enumerate().map(|(i, a)| (a, i)).collect();
        Ok(Self::from_parts(params, period, elements, attributes))
    }
}

// === impl Ciphertext ===

impl Ciphertext {
    /// The canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(Kind::Ciphertext, self.params);
        w.u64(self.period);
        w.string(&self.policy.to_string());
        w.gt(&self.c);
        w.g1(&self.c0);
        self.rows.iter().for_each(|row| w.ct_row(row));
        w.u8(self.chains.len() as u8);
        for chain in &self.chains {
            w.u8(chain.len() as u8);
            for t in chain {
                w.node(t.node);
                w.ct_row(&t.row);
            }
        }
        w.0
    }

    /// The period and the canonical policy text of an encoded ciphertext, read without decoding
    /// any group element (microseconds instead of milliseconds). Nothing else is checked: use
    /// it to find what an already-trusted key opens, never to trust the ciphertext.
    pub fn peek(bytes: &[u8]) -> Result<(u64, &str), Error> {
        let (mut r, _) = Reader::open(bytes, Kind::Ciphertext)?;
        let period = r.u64()?;
        let text = r.string()?;
        Ok((period, text))
    }

    /// Decodes [`Ciphertext::to_bytes`]'s output: the policy must be in canonical form, and the
    /// chains must end exactly at `Cover(period)`, each a line of descendants.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let (mut r, params) = Reader::open(bytes, Kind::Ciphertext)?;
        let period = r.u64()?;
        params
            .period(period)
            .map_err(|_| DecodeError::InvalidNode)?;
        let text = r.string()?;
        let policy = AccessStructure::parse(text).map_err(DecodeError::Policy)?;
        if policy.to_string() != text {
            return Err(DecodeError::NonCanonical.into());
        }
        let c = r.gt()?;
        let c0 = r.g1()?;
        let n = r.count(policy.leaf_count(), 3 * G1_BYTES)?;
        let rows = (0..n).map(|_| r.ct_row()).collect::<Result<_, _>>()?;
        let cover = tree::cover(params.time_depth(), period);
        if usize::from(r.u8()?) != cover.len() {
            return Err(DecodeError::InvalidNode.into());
        }
        let mut chains = Vec::with_capacity(cover.len());
        for end in cover {
            chains.push(r.chain(params.time_depth(), end)?);
        }
        r.finish()?;
        Ok(Self {
            params,
            period,
            policy,
            c,
            c0,
            rows,
            chains,
        })
    }
}

// === impl Writer ===

struct Writer(Vec<u8>);

impl Writer {
    fn new(kind: Kind, params: Params) -> Self {
        Self(vec![
            kind.version(),
            kind as u8,
            params.user_depth(),
            params.time_depth(),
        ])
    }

    fn u8(&mut self, x: u8) {
        self.0.push(x);
    }

    fn u16(&mut self, x: u16) {
        self.0.extend_from_slice(&x.to_be_bytes());
    }

    fn u32(&mut self, x: u32) {
        self.0.extend_from_slice(&x.to_be_bytes());
    }

    fn u64(&mut self, x: u64) {
        self.0.extend_from_slice(&x.to_be_bytes());
    }

    fn string(&mut self, s: &str) {
        self.u16(s.len() as u16);
        self.0.extend_from_slice(s.as_bytes());
    }

    fn node(&mut self, n: Node) {
        self.u8(n.depth());
        self.u64(n.bits());
    }

    fn g1(&mut self, p: &G1Affine) {
        self.0.extend_from_slice(&p.to_compressed());
    }

    fn g2(&mut self, p: &G2Affine) {
        self.0.extend_from_slice(&p.to_compressed());
    }

    fn gt(&mut self, x: &Gt) {
        // Every GT value we hold is a non-identity element (checked where it is made), which is
        // the one case in which blstrs' compression would panic.
        let _ = x.write_compressed(&mut self.0);
    }

    fn row(&mut self, row: &AttributeKey) {
        self.g2(&row.k2);
        self.g2(&row.k3);
    }

    fn ct_row(&mut self, row: &Row) {
        self.g1(&row.c1);
        self.g1(&row.c2);
        self.g1(&row.c3);
    }
}

// === impl Reader ===

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn open(bytes: &'a [u8], kind: Kind) -> Result<(Self, Params), Error> {
        let mut r = Reader { bytes };
        let version = r.u8()?;
        let found = r.u8()?;
        if found != kind as u8 {
            return Err(DecodeError::WrongKind {
                expected: kind.name(),
                found,
            }
            .into());
        }
        if version != kind.version() {
            return Err(match kind {
                Kind::SecretKey if version == 1 => DecodeError::RetiredKeyLayout,
                _ => DecodeError::UnknownVersion(version),
            }
            .into());
        }
        let (l, t) = (r.u8()?, r.u8()?);
        let params = Params::new(l, t).map_err(|_| DecodeError::InvalidLength)?;
        Ok((r, params))
    }

    fn finish(self) -> Result<(), DecodeError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.bytes.len()))
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.bytes.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// `n` items of at least `size` bytes each must fit in what is left, so that a forged count
    /// cannot make us allocate more than the input's size.
    fn count(&self, n: usize, size: usize) -> Result<usize, DecodeError> {
        match n.checked_mul(size) {
            Some(total) if total <= self.bytes.len() => Ok(n),
            Some(_) => Err(DecodeError::Truncated),
            None => Err(DecodeError::InvalidLength),
        }
    }

    fn string(&mut self) -> Result<&'a str, DecodeError> {
        let len = usize::from(self.u16()?);
        std::str::from_utf8(self.take(len)?).map_err(|_| DecodeError::NonCanonical)
    }

    fn scalar(&mut self) -> Result<Scalar, DecodeError> {
        Option::from(Scalar::from_bytes_be(&self.array()?)).ok_or(DecodeError::InvalidScalar)
    }

    /// A G1 element of the prime-order subgroup, never the identity: no object of the scheme
    /// holds one except with negligible probability, and an identity where a random element
    /// belongs is how forged ciphertexts pin their data key (the audit's all-identity header).
    fn g1(&mut self) -> Result<G1Affine, DecodeError> {
        let p: G1Affine = Option::from(G1Affine::from_compressed(&self.array::<G1_BYTES>()?))
            .ok_or(DecodeError::InvalidPoint)?;
        if bool::from(p.is_identity()) {
            return Err(DecodeError::IdentityPoint);
        }
        Ok(p)
    }

    /// A G2 element of the prime-order subgroup, never the identity (as for [`Reader::g1`]).
    fn g2(&mut self) -> Result<G2Affine, DecodeError> {
        let p: G2Affine = Option::from(G2Affine::from_compressed(&self.array::<G2_BYTES>()?))
            .ok_or(DecodeError::InvalidPoint)?;
        if bool::from(p.is_identity()) {
            return Err(DecodeError::IdentityPoint);
        }
        Ok(p)
    }

    /// A GT element, never the identity (`C = m·Y^s` with `m ≠ 1` random).
    fn gt(&mut self) -> Result<Gt, DecodeError> {
        let bytes = self.take(GT_BYTES)?;
        let x = Gt::read_compressed(bytes).map_err(|_| DecodeError::InvalidPoint)?;
        if bool::from(x.is_identity()) {
            return Err(DecodeError::IdentityPoint);
        }
        Ok(x)
    }

    fn g2_vec(&mut self, n: usize) -> Result<Vec<G2Affine>, DecodeError> {
        let n = self.count(n, G2_BYTES)?;
        (0..n).map(|_| self.g2()).collect()
    }

    fn row(&mut self) -> Result<AttributeKey, DecodeError> {
        Ok(AttributeKey {
            k2: self.g2()?,
            k3: self.g2()?,
        })
    }

    fn ct_row(&mut self) -> Result<Row, DecodeError> {
        Ok(Row {
            c1: self.g1()?,
            c2: self.g1()?,
            c3: self.g1()?,
        })
    }

    fn node(&mut self, max_depth: u8) -> Result<Node, DecodeError> {
        let depth = self.u8()?;
        let bits = self.u64()?;
        Node::new(depth, bits)
            .filter(|n| n.depth() <= max_depth)
            .ok_or(DecodeError::InvalidNode)
    }

    /// A canonical attribute name: valid, already in NFC.
    fn attribute(&mut self) -> Result<Attribute, DecodeError> {
        let text = self.string()?;
        let a = Attribute::new(text).map_err(DecodeError::Policy)?;
        if a.as_str() != text {
            return Err(DecodeError::NonCanonical);
        }
        Ok(a)
    }

    /// A strictly increasing list of 1 to `MAX_KEY_ATTRIBUTES` attribute names.
    fn attribute_names(&mut self) -> Result<Vec<Attribute>, DecodeError> {
        let n = usize::from(self.u16()?);
        if n == 0 || n > MAX_KEY_ATTRIBUTES {
            return Err(DecodeError::InvalidLength);
        }
        let n = self.count(n, 2)?;
        let mut out: Vec<Attribute> = Vec::with_capacity(n);
        for _ in 0..n {
            let a = self.attribute()?;
            if out.last().is_some_and(|p| *p >= a) {
                return Err(DecodeError::NonCanonical);
            }
            out.push(a);
        }
        Ok(out)
    }

    /// One path node's key of a secret key holding `m` attributes.
    fn node_key(&mut self, m: usize) -> Result<NodeKey, DecodeError> {
        let k1 = self.g2()?;
        let k0 = self.g2()?;
        let rows = (0..m).map(|_| self.row()).collect::<Result<_, _>>()?;
        Ok(NodeKey { k1, k0, rows })
    }

    /// A chain ending at `end`: 1 to ℓ+1 rows whose nodes go strictly down one line of the tree.
    fn chain(&mut self, time_depth: u8, end: Node) -> Result<Vec<TimeRow>, DecodeError> {
        let len = usize::from(self.u8()?);
        if len == 0 || len > usize::from(time_depth) + 1 {
            return Err(DecodeError::InvalidLength);
        }
        let mut chain: Vec<TimeRow> = Vec::with_capacity(len);
        for _ in 0..len {
            let node = self.node(time_depth)?;
            if let Some(prev) = chain.last()
                && (prev.node.depth() >= node.depth() || !prev.node.is_ancestor_or_self_of(node))
            {
                return Err(DecodeError::InvalidNode);
            }
            chain.push(TimeRow {
                node,
                row: self.ct_row()?,
            });
        }
        if chain.last().map(|t| t.node) != Some(end) {
            return Err(DecodeError::InvalidNode);
        }
        Ok(chain)
    }
}
