//! The crate's errors.

use crate::access::{Attribute, PolicyError};

/// Everything that can go wrong in this crate. Decryption failures are deliberately one opaque
/// variant, [`Error::Decryption`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The access-structure formula does not parse or exceeds a limit.
    #[error("invalid access structure: {0}")]
    Policy(#[from] PolicyError),
    /// A tree depth outside `1..=32`.
    #[error("tree depth {depth} is outside 1..=32")]
    InvalidDepth {
        /// The depth asked for.
        depth: u8,
    },
    /// A user-tree leaf index that does not fit the tree (`leaf >= 2^L`).
    #[error("leaf {leaf} does not exist in a user tree of depth {depth}")]
    LeafOutOfRange {
        /// The leaf asked for.
        leaf: u64,
        /// The user tree's depth `L`.
        depth: u8,
    },
    /// A period that does not fit the time tree (`period >= 2^ℓ`).
    #[error("period {period} does not exist in a time tree of depth {depth}")]
    PeriodOutOfRange {
        /// The period asked for.
        period: u64,
        /// The time tree's depth `ℓ`.
        depth: u8,
    },
    /// `delegate` was asked for an attribute that the delegating key does not hold.
    #[error("the key does not hold attribute {0}, so it cannot delegate it")]
    AttributeNotHeld(Attribute),
    /// A key with no attribute, or more than [`crate::MAX_KEY_ATTRIBUTES`].
    #[error("a key holds 1 to {max} attributes, not {count}", max = crate::MAX_KEY_ATTRIBUTES)]
    AttributeCount {
        /// The number asked for.
        count: usize,
    },
    /// The key update has no node on the user's path: the user is revoked for that period.
    #[error("the user is revoked: the key update for this period does not cover its leaf")]
    Revoked,
    /// `revoke` was called for a leaf that is already on the revocation list.
    #[error("leaf {leaf} was already revoked at period {period}")]
    AlreadyRevoked {
        /// The leaf.
        leaf: u64,
        /// The period of the earlier revocation.
        period: u64,
    },
    /// Two objects were made under different tree parameters.
    #[error("the objects belong to systems with different tree parameters")]
    ParamsMismatch,
    /// `ct_update` was asked to move a ciphertext back in time.
    #[error("a ciphertext of period {from} cannot be updated to the earlier period {to}")]
    PeriodNotLater {
        /// The ciphertext's period.
        from: u64,
        /// The period asked for.
        to: u64,
    },
    /// Decryption failed: the key's attributes do not satisfy the access structure, the key's
    /// period is earlier than the ciphertext's, or the ciphertext is not one this key can open.
    /// Deliberately opaque.
    #[error("decryption failed")]
    Decryption,
    /// Bytes that are not a valid encoding of the expected object.
    #[error("invalid encoding: {0}")]
    Decode(#[from] DecodeError),
}

/// Why a byte string is not a valid encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before the object did.
    #[error("truncated input")]
    Truncated,
    /// Bytes follow the end of the object.
    #[error("{0} trailing bytes after the object")]
    TrailingBytes(usize),
    /// A wire-format version this build does not know.
    #[error("unknown format version {0}")]
    UnknownVersion(u8),
    /// The bytes encode another kind of object.
    #[error("expected a {expected}, found object kind {found}")]
    WrongKind {
        /// The kind the caller asked for.
        expected: &'static str,
        /// The kind byte found.
        found: u8,
    },
    /// A group element that is not a valid compressed point of the prime-order subgroup.
    #[error("invalid or off-subgroup group element")]
    InvalidPoint,
    /// The identity where the scheme only ever produces random group elements: refused, since
    /// it is how a forged object pins its outcome (an all-identity ciphertext "decrypts" to a
    /// data key its writer chose).
    #[error("identity group element where a random one belongs")]
    IdentityPoint,
    /// A scalar encoding that is not below the group order.
    #[error("non-canonical scalar")]
    InvalidScalar,
    /// A count or length that is out of range for the object.
    #[error("length out of range")]
    InvalidLength,
    /// A field that decodes but is not in canonical form (unsorted or duplicate entries, a
    /// non-NFC attribute, a policy that does not print back to the same text).
    #[error("non-canonical encoding")]
    NonCanonical,
    /// Tree nodes, periods or leaves that do not fit the parameters or each other.
    #[error("inconsistent tree nodes")]
    InvalidNode,
    /// A long-term key in the layout of wire version 1, in which every node of the user's path
    /// shared one randomiser (RS-HABE.md §4, "Correction (2026-12-02)"): such keys let a revoked
    /// user combine with any current user's key, so they are never decoded. The authority must
    /// re-issue every key under the corrected layout.
    #[error(
        "a long-term key in the retired layout of wire version 1 (one randomiser for every node); it must be re-issued"
    )]
    RetiredKeyLayout,
    /// An embedded access structure or attribute is invalid.
    #[error("invalid embedded access structure: {0}")]
    Policy(PolicyError),
}
