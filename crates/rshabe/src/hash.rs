//! Hashing to `Z_r`: attributes, time-tree nodes and the per-node PRF.
//!
//! RS-HABE.md §4: "H_Z: {0,1}* → Z_r is `expand_message_xmd(SHA-256)` to 48 bytes, reduced mod
//! r", with separate domain tags for user attributes and time nodes. 48 bytes is RFC 9380
//! §5's `L = ceil((ceil(log2(r)) + k) / 8)` for k = 128, so the bias of the reduction is below
//! 2^-128. Attributes are hashed to the exponent (`u^{H(A)}·h`), never multiplied into a group
//! as `g^{H(x)}` with a discrete log anyone can compute (the `rabe` pitfall): `u` and `h` have
//! unknown discrete logs.

use blstrs::Scalar;
use ff::{Field, PrimeField};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};

use crate::access::Attribute;
use crate::tree::Node;

/// Domain separation tag for user attributes (RFC 9380 §3.1 format).
pub const DST_ATTRIBUTE: &[u8] = b"FHIRSEAL-RSHABE-V01-CS01-with-expander-SHA256_ATTRIBUTE_";
/// Domain separation tag for time-tree nodes: the reserved time universe.
pub const DST_TIME_NODE: &[u8] = b"FHIRSEAL-RSHABE-V01-CS01-with-expander-SHA256_TIMENODE_";
/// HKDF `info` prefix for the per-node secrets α_θ = PRF_k(θ).
const INFO_NODE_SECRET: &[u8] = b"fhirseal rshabe v1 user-tree node secret";

/// `H(A)` for a user attribute: its canonical (NFC) UTF-8 bytes under [`DST_ATTRIBUTE`].
pub(crate) fn attribute(a: &Attribute) -> Scalar {
    hash_to_scalar(a.as_str().as_bytes(), DST_ATTRIBUTE)
}

/// `H(τ)` for a node of the time tree, under [`DST_TIME_NODE`]; no attribute can collide.
pub(crate) fn time_node(node: Node) -> Scalar {
    hash_to_scalar(&node.to_bytes(), DST_TIME_NODE)
}

/// α_θ = PRF_k(θ): HKDF-SHA256 keyed with the master PRF key, 48 bytes reduced mod r.
pub(crate) fn node_secret(prf_key: &[u8; 32], node: Node) -> Scalar {
    let mut info = Vec::with_capacity(INFO_NODE_SECRET.len() + 9);
    info.extend_from_slice(INFO_NODE_SECRET);
    info.extend_from_slice(&node.to_bytes());
    let mut okm = [0u8; 48];
    // 48 bytes is far below HKDF-SHA256's 255·32-byte limit, so `expand` cannot fail.
    let ok = Hkdf::<Sha256>::new(None, prf_key)
        .expand(&info, &mut okm)
        .is_ok();
    debug_assert!(ok);
    let s = reduce_48(&okm);
    zeroize::Zeroize::zeroize(&mut okm);
    s
}

/// RFC 9380 §5.2 `hash_to_field` with count 1 and L = 48 over `expand_message_xmd` (§5.3.1).
pub(crate) fn hash_to_scalar(msg: &[u8], dst: &[u8]) -> Scalar {
    reduce_48(&expand_message_xmd(msg, dst))
}

/// `expand_message_xmd(msg, DST, 48)` with SHA-256 (b = 32, s = 64), RFC 9380 §5.3.1.
fn expand_message_xmd(msg: &[u8], dst: &[u8]) -> [u8; 48] {
    const LEN: u16 = 48;
    // Our tags are crate constants under 255 bytes, the bound of RFC 9380 §5.3.3.
    debug_assert!(dst.len() <= 255);
    let dst_len = [dst.len() as u8];
    // b_0 = H(Z_pad || msg || l_i_b_str || I2OSP(0, 1) || DST_prime)
    let b0 = Sha256::new()
        .chain_update([0u8; 64])
        .chain_update(msg)
        .chain_update(LEN.to_be_bytes())
        .chain_update([0u8])
        .chain_update(dst)
        .chain_update(dst_len)
        .finalize();
    // b_1 = H(b_0 || I2OSP(1, 1) || DST_prime)
    let b1 = Sha256::new()
        .chain_update(b0)
        .chain_update([1u8])
        .chain_update(dst)
        .chain_update(dst_len)
        .finalize();
    // b_2 = H(strxor(b_0, b_1) || I2OSP(2, 1) || DST_prime)
    let mut x = [0u8; 32];
    for (o, (a, b)) in x.iter_mut().zip(b0.iter().zip(b1.iter())) {
        *o = a ^ b;
    }
    let b2 = Sha256::new()
        .chain_update(x)
        .chain_update([2u8])
        .chain_update(dst)
        .chain_update(dst_len)
        .finalize();
    let mut out = [0u8; 48];
    out[..32].copy_from_slice(&b1);
    out[32..].copy_from_slice(&b2[..16]);
    out
}

/// OS2IP(bytes) mod r for a 48-byte big-endian string, as three 128-bit limbs (each below r).
fn reduce_48(bytes: &[u8; 48]) -> Scalar {
    let two_128 = Scalar::from_u128(1 << 64).square();
    let limb = |i: usize| {
        let mut b = [0u8; 16];
        b.copy_from_slice(&bytes[16 * i..16 * i + 16]);
        Scalar::from_u128(u128::from_be_bytes(b))
    };
    (limb(0) * two_128 + limb(1)) * two_128 + limb(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9380 Appendix K.1, expand_message_xmd(SHA-256), DST "QUUX-V01-CS02-with-expander-SHA256-128",
    /// len_in_bytes = 0x20 is not our length; we check the 0x80 vector's structure through a
    /// direct re-derivation instead and the first known answer for msg = "" truncated to our
    /// 48-byte layout is computed by the RFC's own pseudocode in `reference` below.
    fn reference(msg: &[u8], dst: &[u8], len: usize) -> Vec<u8> {
        let ell = len.div_ceil(32);
        let mut dst_prime = dst.to_vec();
        dst_prime.push(dst.len() as u8);
        let mut h = Sha256::new();
        h.update([0u8; 64]);
        h.update(msg);
        h.update((len as u16).to_be_bytes());
        h.update([0u8]);
        h.update(&dst_prime);
        let b0 = h.finalize();
        let mut bs = vec![
            Sha256::new()
                .chain_update(b0)
                .chain_update([1u8])
                .chain_update(&dst_prime)
                .finalize(),
        ];
        for i in 2..=ell {
            let prev = bs[i - 2];
            let x: Vec<u8> = b0.iter().zip(prev.iter()).map(|(a, b)| a ^ b).collect();
            bs.push(
                Sha256::new()
                    .chain_update(x)
                    .chain_update([i as u8])
                    .chain_update(&dst_prime)
                    .finalize(),
            );
        }
        bs.concat()[..len].to_vec()
    }

    #[test]
    fn expand_message_xmd_matches_rfc9380_known_answer() {
        // RFC 9380 K.1: msg = "abc", len_in_bytes = 0x20.
        let out = reference(b"abc", b"QUUX-V01-CS02-with-expander-SHA256-128", 0x20);
        assert_eq!(
            hex(&out),
            "d8ccab23b5985ccea865c6c97b6e5b8350e794e603b4b97902f53a8a0d605615"
        );
        assert_eq!(
            expand_message_xmd(b"abc", DST_ATTRIBUTE).to_vec(),
            reference(b"abc", DST_ATTRIBUTE, 48)
        );
    }

    #[test]
    fn domains_are_separated() {
        let a = Attribute::new("T:x").unwrap();
        assert_ne!(
            hash_to_scalar(b"x", DST_ATTRIBUTE),
            hash_to_scalar(b"x", DST_TIME_NODE)
        );
        assert_ne!(attribute(&a), hash_to_scalar(b"x", DST_TIME_NODE));
    }

    #[test]
    fn reduction_matches_big_integer_arithmetic() {
        let bytes = [0xffu8; 48];
        // (2^384 - 1) mod r, by repeated doubling in the field.
        let mut expect = Scalar::ZERO;
        for _ in 0..384 {
            expect = expect.double() + Scalar::ONE;
        }
        assert_eq!(reduce_48(&bytes), expect);
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
