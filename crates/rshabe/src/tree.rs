//! The two binary trees of the scheme: the user tree (leaves are users) and the time tree
//! (leaves are periods), with `Path`, `KUNodes` and `Cover` of RS-HABE.md §4.

use std::collections::BTreeSet;

/// A node of a complete binary tree: its depth (0 is the root) and the `depth` high bits of the
/// path from the root (0 = left). The root is `Node { depth: 0, bits: 0 }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Node {
    depth: u8,
    bits: u64,
}

impl Node {
    /// The root of any tree.
    pub const ROOT: Self = Self { depth: 0, bits: 0 };

    /// A node at `depth` whose path bits are `bits`; `None` if `bits` has more than `depth` bits
    /// or `depth` exceeds [`MAX_DEPTH`].
    pub fn new(depth: u8, bits: u64) -> Option<Self> {
        if depth > MAX_DEPTH || (depth < 64 && bits >> depth != 0) {
            return None;
        }
        Some(Self { depth, bits })
    }

    /// The leaf `index` of a tree of depth `depth`.
    pub fn leaf(depth: u8, index: u64) -> Option<Self> {
        Self::new(depth, index)
    }

    /// Depth from the root.
    pub fn depth(self) -> u8 {
        self.depth
    }

    /// The path bits (the `depth` high bits of any leaf below this node).
    pub fn bits(self) -> u64 {
        self.bits
    }

    /// Whether `self` is `other` or one of its ancestors.
    pub fn is_ancestor_or_self_of(self, other: Self) -> bool {
        self.depth <= other.depth && other.bits >> (other.depth - self.depth) == self.bits
    }

    /// `Path(x)`: every prefix of this node, from the root down to the node itself.
    pub fn path(self) -> impl Iterator<Item = Self> {
        (0..=self.depth).map(move |d| Self {
            depth: d,
            bits: self.bits >> (self.depth - d),
        })
    }

    fn child(self, bit: u64) -> Self {
        Self {
            depth: self.depth + 1,
            bits: (self.bits << 1) | bit,
        }
    }

    /// Nine bytes that name the node unambiguously: depth, then bits big-endian.
    pub(crate) fn to_bytes(self) -> [u8; 9] {
        let mut out = [0u8; 9];
        out[0] = self.depth;
        out[1..].copy_from_slice(&self.bits.to_be_bytes());
        out
    }
}

/// The deepest tree supported: 32 levels (4·10⁹ users or periods).
pub const MAX_DEPTH: u8 = 32;

/// `KUNodes(BT, RL)` of Boldyreva–Goyal–Kumar 2008: the minimal set of nodes whose subtrees
/// cover every non-revoked leaf and no revoked one. With no revoked leaf it is `{root}`; when
/// every leaf is revoked it is empty. `revoked` must hold leaves of a tree of depth `depth`.
pub fn ku_nodes(depth: u8, revoked: impl IntoIterator<Item = Node>) -> BTreeSet<Node> {
    let mut x = BTreeSet::new();
    for leaf in revoked {
        x.extend(leaf.path());
    }
    if x.is_empty() {
        return BTreeSet::from([Node::ROOT]);
    }
    let mut y = BTreeSet::new();
    for node in &x {
        if node.depth < depth {
            for bit in [0, 1] {
                let c = node.child(bit);
                if !x.contains(&c) {
                    y.insert(c);
                }
            }
        }
    }
    y
}

/// `Cover(t)`: the minimal set of time-tree nodes whose subtrees are exactly the periods
/// `[t, 2^depth − 1]`, i.e. `{t[0..k)‖1 : t_k = 0} ∪ {t}`, shallowest first.
pub fn cover(depth: u8, period: u64) -> Vec<Node> {
    let leaf = Node {
        depth,
        bits: period,
    };
    let mut out: Vec<Node> = (0..depth)
        .filter(|&k| (period >> (depth - 1 - k)) & 1 == 0)
        .map(|k| {
            Node {
                depth: k,
                bits: period >> (depth - k),
            }
            .child(1)
        })
        .collect();
    out.push(leaf);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves_under(n: Node, depth: u8) -> std::ops::Range<u64> {
        let shift = depth - n.depth;
        (n.bits << shift)..((n.bits + 1) << shift)
    }

    #[test]
    fn cover_is_exactly_the_later_periods() {
        for depth in 1..=6u8 {
            for t in 0..(1u64 << depth) {
                let mut covered: Vec<u64> = cover(depth, t)
                    .into_iter()
                    .flat_map(|n| leaves_under(n, depth))
                    .collect();
                covered.sort_unstable();
                assert_eq!(covered, (t..(1 << depth)).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn ku_nodes_cover_exactly_the_non_revoked() {
        let depth = 5u8;
        for mask in [
            0u64,
            1,
            0b1010_0000_0001,
            0xffff_ffff,
            0x8000_0000,
            0x0f0f_f0f0,
        ] {
            let revoked: Vec<Node> = (0..32)
                .filter(|i| mask >> i & 1 == 1)
                .map(|i| Node { depth, bits: i })
                .collect();
            let ku = ku_nodes(depth, revoked.iter().copied());
            let mut covered: Vec<u64> = ku.iter().flat_map(|n| leaves_under(*n, depth)).collect();
            covered.sort_unstable();
            let expect: Vec<u64> = (0..32).filter(|i| mask >> i & 1 == 0).collect();
            assert_eq!(covered, expect, "mask {mask:#x}");
        }
    }

    #[test]
    fn path_and_ancestry() {
        let leaf = Node::leaf(4, 0b1011).unwrap();
        let path: Vec<Node> = leaf.path().collect();
        assert_eq!(path.len(), 5);
        assert_eq!(path[0], Node::ROOT);
        assert!(path.iter().all(|p| p.is_ancestor_or_self_of(leaf)));
        assert!(!Node::leaf(4, 0b1010).unwrap().is_ancestor_or_self_of(leaf));
        assert!(Node::new(2, 4).is_none());
        assert!(Node::new(33, 0).is_none());
    }
}
