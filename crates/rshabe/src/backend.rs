//! The one place where this crate looks beneath blstrs' public types.
//!
//! blstrs 0.7.1 declares `G1Affine`, `G2Affine`, `Scalar` and `Gt` (through `Fp12`) as
//! `#[repr(transparent)]` wrappers around blst's plain-data structs, but it exports neither the
//! wrapped values nor constant-time selection for `Gt`. Three things need them:
//!
//! - a **constant-time** fixed-base exponentiation in GT for `Y^s` (blstrs' `Gt * Scalar` is a
//!   variable-time double-and-add, and `s` is secret);
//! - constant-time fixed-base tables for the G1 generators used by `encrypt` and `ct_update`
//!   (2.5× faster than blst's variable-base ladder);
//! - zeroizing the limbs of secret group elements and scalars on drop;
//! - a multi-pairing that shares the Miller loop's squarings across pairs *and* uses line tables
//!   precomputed per key element (blstrs' `multi_miller_loop` runs one full loop per pair; blst's
//!   `miller_loop_n` shares squarings but recomputes lines): 2–2.5× faster decryption.
//!
//! Every cast below goes from a blstrs type to the blst type it is declared transparent over, or
//! back; the sizes are asserted at compile time, and `blstrs` is pinned to `=0.7.1` in the
//! workspace so that a release changing the layout cannot slip in unnoticed. No other module of
//! the crate uses `unsafe`.
#![allow(unsafe_code)]

use std::ops::AddAssign;

use blst::{
    blst_fp, blst_fp6, blst_fp12, blst_fr, blst_p1, blst_p1_affine, blst_p2, blst_p2_affine,
};
use blstrs::{G1Affine, G1Projective, G2Affine, G2Projective, Gt, Scalar};
use group::prime::PrimeCurveAffine;
use group::{Curve, Group};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};
use zeroize::Zeroize;

const _: () = assert!(size_of::<G1Affine>() == size_of::<blst_p1_affine>());
const _: () = assert!(size_of::<G2Affine>() == size_of::<blst_p2_affine>());
const _: () = assert!(size_of::<G1Projective>() == size_of::<blst_p1>());
const _: () = assert!(size_of::<G2Projective>() == size_of::<blst_p2>());
const _: () = assert!(size_of::<Scalar>() == size_of::<blst_fr>());
const _: () = assert!(size_of::<Gt>() == size_of::<blst_fp12>());
const _: () = assert!(align_of::<Gt>() == align_of::<blst_fp12>());

/// Bits per window of the fixed-base tables.
const WINDOW: usize = 4;
/// Windows needed to cover a 256-bit little-endian scalar encoding.
const WINDOWS: usize = 256 / WINDOW;
/// Entries per window (digit values 0..16).
const ENTRIES: usize = 1 << WINDOW;

// === casts ===

fn gt_to_raw(x: Gt) -> blst_fp12 {
    // SAFETY: `Gt` is `#[repr(transparent)]` over `Fp12`, which is `#[repr(transparent)]` over
    // `blst_fp12` (blstrs 0.7.1, gt.rs and fp12.rs); sizes asserted above. Every bit pattern of a
    // `Gt` is a valid `blst_fp12` (plain `u64` limbs).
    unsafe { core::mem::transmute::<Gt, blst_fp12>(x) }
}

fn raw_to_gt(x: blst_fp12) -> Gt {
    // SAFETY: the inverse of `gt_to_raw`; only ever applied to products of values that came out
    // of `gt_to_raw`, so the result is a valid element of the same subgroup.
    unsafe { core::mem::transmute::<blst_fp12, Gt>(x) }
}

fn g1_to_raw(x: G1Affine) -> blst_p1_affine {
    // SAFETY: `G1Affine` is `#[repr(transparent)]` over `blst_p1_affine` (blstrs g1.rs).
    unsafe { core::mem::transmute::<G1Affine, blst_p1_affine>(x) }
}

fn g2_to_raw(x: G2Affine) -> blst_p2_affine {
    // SAFETY: `G2Affine` is `#[repr(transparent)]` over `blst_p2_affine` (blstrs g2.rs).
    unsafe { core::mem::transmute::<G2Affine, blst_p2_affine>(x) }
}

fn raw_to_g2(x: blst_p2_affine) -> G2Affine {
    // SAFETY: inverse of `g2_to_raw`, applied only to values selected from a table built by
    // `g2_to_raw` (each a valid affine point or the all-zero point at infinity).
    unsafe { core::mem::transmute::<blst_p2_affine, G2Affine>(x) }
}

fn raw_to_g1(x: blst_p1_affine) -> G1Affine {
    // SAFETY: inverse of `g1_to_raw`, applied only to values selected from a table built by
    // `g1_to_raw` (each a valid affine point or the all-zero point at infinity).
    unsafe { core::mem::transmute::<blst_p1_affine, G1Affine>(x) }
}

/// Overwrites a scalar's limbs with zeros (volatile writes, through `zeroize`).
pub(crate) fn wipe_scalar(x: &mut Scalar) {
    // SAFETY: `Scalar` is `#[repr(transparent)]` over `blst_fr` (blstrs scalar.rs); the all-zero
    // limb pattern is the scalar 0, a valid value.
    let raw = unsafe { &mut *(x as *mut Scalar).cast::<blst_fr>() };
    raw.l.zeroize();
}

/// Overwrites a G2 point's coordinates with zeros (the encoding of the point at infinity).
pub(crate) fn wipe_g2(x: &mut G2Affine) {
    // SAFETY: `G2Affine` is `#[repr(transparent)]` over `blst_p2_affine`; all-zero coordinates are
    // blst's affine point at infinity, a valid value.
    let raw = unsafe { &mut *(x as *mut G2Affine).cast::<blst_p2_affine>() };
    for fp2 in [&mut raw.x, &mut raw.y] {
        for fp in &mut fp2.fp {
            fp.l.zeroize();
        }
    }
}

/// Overwrites a projective G2 point's coordinates with zeros (`Z = 0`: the point at infinity).
pub(crate) fn wipe_g2_projective(x: &mut G2Projective) {
    // SAFETY: `G2Projective` is `#[repr(transparent)]` over `blst_p2` (blstrs g2.rs); all-zero
    // coordinates have `Z = 0`, blst's point at infinity, a valid value.
    let raw = unsafe { &mut *(x as *mut G2Projective).cast::<blst_p2>() };
    for fp2 in [&mut raw.x, &mut raw.y, &mut raw.z] {
        for fp in &mut fp2.fp {
            fp.l.zeroize();
        }
    }
}

/// Overwrites a projective G1 point's coordinates with zeros (`Z = 0`: the point at infinity).
pub(crate) fn wipe_g1_projective(x: &mut G1Projective) {
    // SAFETY: `G1Projective` is `#[repr(transparent)]` over `blst_p1` (blstrs g1.rs); all-zero
    // coordinates have `Z = 0`, blst's point at infinity, a valid value.
    let raw = unsafe { &mut *(x as *mut G1Projective).cast::<blst_p1>() };
    for fp in [&mut raw.x, &mut raw.y, &mut raw.z] {
        fp.l.zeroize();
    }
}

/// Overwrites a GT element with the identity `1` (volatile writes of every limb first), so a
/// secret message leaves nothing behind and the value stays a valid group element.
pub(crate) fn wipe_gt(x: &mut Gt) {
    // SAFETY: `Gt` is `#[repr(transparent)]` over `blst_fp12` (size and alignment asserted
    // above); zero limbs are a valid `blst_fp12` value, replaced at once by the identity.
    let raw = unsafe { &mut *(x as *mut Gt).cast::<blst_fp12>() };
    for fp6 in &mut raw.fp6 {
        for fp2 in &mut fp6.fp2 {
            for fp in &mut fp2.fp {
                fp.l.zeroize();
            }
        }
    }
    *x = Gt::identity();
}

// === impl FixedBase ===

/// A constant-time fixed-base table for one point of G1 or G2: `WINDOWS` rows of `j·16^i·B`,
/// `j < 16`, kept as blst's plain affine points so that entries can be selected limb by limb.
///
/// `mul` costs 64 mixed additions and 64 constant-time scans of 16 entries: ≈40 µs in G1
/// (96 KiB table) against ≈100 µs for blst's variable-base ladder, about half the ladder's
/// 190 µs in G2 (192 KiB table).
pub(crate) struct FixedBase<C: Curve<AffineRepr: RawAffine>> {
    rows: Vec<[<C::AffineRepr as RawAffine>::Raw; ENTRIES]>,
}

/// The table of a G1 point.
pub(crate) type G1Table = FixedBase<G1Projective>;
/// The table of a G2 point.
pub(crate) type G2Table = FixedBase<G2Projective>;

impl<C> FixedBase<C>
where
    C: Curve<AffineRepr: RawAffine> + AddAssign<C::AffineRepr> + From<C::AffineRepr>,
{
    pub(crate) fn new(base: &C::AffineRepr) -> Self {
        let mut rows = Vec::with_capacity(WINDOWS);
        let mut b: C = (*base).into();
        let mut proj = vec![C::identity(); ENTRIES];
        let mut aff = vec![C::AffineRepr::default(); ENTRIES];
        for _ in 0..WINDOWS {
            for j in 1..ENTRIES {
                proj[j] = proj[j - 1] + b;
            }
            C::batch_normalize(&proj, &mut aff);
            let mut row = [Default::default(); ENTRIES];
            for (dst, src) in row.iter_mut().zip(&aff) {
                *dst = src.to_raw();
            }
            rows.push(row);
            for _ in 0..WINDOW {
                b = b.double();
            }
        }
        Self { rows }
    }

    /// `k·B` in constant time with respect to `k`.
    pub(crate) fn mul(&self, k: &Scalar) -> C {
        let mut bytes = k.to_bytes_le();
        let mut acc = C::identity();
        for (i, row) in self.rows.iter().enumerate() {
            let digit = window_digit(&bytes, i);
            let mut sel = <C::AffineRepr as RawAffine>::Raw::default();
            for (j, entry) in row.iter().enumerate() {
                C::AffineRepr::select(&mut sel, entry, (j as u8).ct_eq(&digit));
            }
            acc += C::AffineRepr::from_raw(sel);
        }
        bytes.zeroize();
        acc
    }
}

/// An affine point type of blstrs and the blst plain-data type beneath it.
pub(crate) trait RawAffine: Copy + Default {
    /// blst's affine point.
    type Raw: Copy + Default;
    fn to_raw(self) -> Self::Raw;
    fn from_raw(raw: Self::Raw) -> Self;
    /// `dst = src` if `hit`, limb by limb, in constant time.
    fn select(dst: &mut Self::Raw, src: &Self::Raw, hit: Choice);
}

impl RawAffine for G1Affine {
    type Raw = blst_p1_affine;

    fn to_raw(self) -> blst_p1_affine {
        g1_to_raw(self)
    }

    fn from_raw(raw: blst_p1_affine) -> Self {
        raw_to_g1(raw)
    }

    fn select(dst: &mut blst_p1_affine, src: &blst_p1_affine, hit: Choice) {
        for (d, s) in [(&mut dst.x, &src.x), (&mut dst.y, &src.y)] {
            for (dl, sl) in d.l.iter_mut().zip(s.l) {
                dl.conditional_assign(&sl, hit);
            }
        }
    }
}

impl RawAffine for G2Affine {
    type Raw = blst_p2_affine;

    fn to_raw(self) -> blst_p2_affine {
        g2_to_raw(self)
    }

    fn from_raw(raw: blst_p2_affine) -> Self {
        raw_to_g2(raw)
    }

    fn select(dst: &mut blst_p2_affine, src: &blst_p2_affine, hit: Choice) {
        for (d2, s2) in [(&mut dst.x, &src.x), (&mut dst.y, &src.y)] {
            for (d, s) in d2.fp.iter_mut().zip(&s2.fp) {
                for (dl, sl) in d.l.iter_mut().zip(s.l) {
                    dl.conditional_assign(&sl, hit);
                }
            }
        }
    }
}

// === impl GtTable ===

/// A constant-time fixed-base table for one GT element (576 KiB): `Y^k` without the
/// variable-time double-and-add of blstrs' `Gt * Scalar` (≈160 µs here, against ≈720 µs).
pub(crate) struct GtTable {
    rows: Vec<[blst_fp12; ENTRIES]>,
}

impl GtTable {
    pub(crate) fn new(base: &Gt) -> Self {
        let mut rows = Vec::with_capacity(WINDOWS);
        let mut b = *base;
        for _ in 0..WINDOWS {
            let mut row = [gt_to_raw(Gt::identity()); ENTRIES];
            let mut acc = Gt::identity();
            for entry in row.iter_mut().skip(1) {
                acc += b;
                *entry = gt_to_raw(acc);
            }
            rows.push(row);
            for _ in 0..WINDOW {
                b = b.double();
            }
        }
        Self { rows }
    }

    /// `B^k` (written `k·B` in blstrs' additive notation) in constant time with respect to `k`.
    pub(crate) fn mul(&self, k: &Scalar) -> Gt {
        let mut bytes = k.to_bytes_le();
        let mut acc = gt_to_raw(Gt::identity());
        for (i, row) in self.rows.iter().enumerate() {
            let digit = window_digit(&bytes, i);
            let mut sel = gt_to_raw(Gt::identity());
            for (j, entry) in row.iter().enumerate() {
                let hit = (j as u8).ct_eq(&digit);
                for (d6, s6) in sel.fp6.iter_mut().zip(&entry.fp6) {
                    for (d2, s2) in d6.fp2.iter_mut().zip(&s6.fp2) {
                        for (d, s) in d2.fp.iter_mut().zip(&s2.fp) {
                            for (dl, sl) in d.l.iter_mut().zip(s.l) {
                                dl.conditional_assign(&sl, hit);
                            }
                        }
                    }
                }
            }
            acc *= sel;
        }
        bytes.zeroize();
        raw_to_gt(acc)
    }
}

// === impl Lines ===

/// The 68 Miller-loop line coefficients of one G2 point, as blst's `blst_precompute_lines`
/// computes them (18 KiB). Zeroized on drop: for a decryption key they are as secret as the key.
pub(crate) struct Lines {
    lines: Box<[blst_fp6; LINES]>,
    identity: bool,
}

/// Lines per G2 point: the doubling and addition steps of the loop over |z| = 0xd201000000010000.
const LINES: usize = 68;

/// The loop's segments after the first doubling, as in blst's `miller_loop_lines`: each is one
/// addition line followed by `n` doubling lines (`…0xc`, `…0x68`, `…0xd200`, `…0xd20100000000`,
/// `…0xd201000000010000`).
const SEGMENTS: [(usize, usize); 5] = [(1, 2), (4, 3), (8, 9), (18, 32), (51, 16)];

impl Lines {
    pub(crate) fn new(q: &G2Affine) -> Self {
        let mut lines = Box::new([blst_fp6::default(); LINES]);
        let identity = bool::from(q.is_identity());
        if !identity {
            let raw = g2_to_raw(*q);
            // SAFETY: `lines` has room for the 68 entries blst writes; `raw` is a valid affine point.
            unsafe { blst::blst_precompute_lines(lines.as_mut_ptr(), &raw) };
        }
        Self { lines, identity }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        for line in self.lines.iter_mut() {
            for fp2 in &mut line.fp2 {
                for fp in &mut fp2.fp {
                    fp.l.zeroize();
                }
            }
        }
    }
}

/// `∏ e(P_i, Q_i)` as one Miller loop whose squarings are shared by every pair, over each Q's
/// precomputed lines, then one final exponentiation. Pairs with an identity point contribute 1,
/// as in blstrs.
///
/// This is blst's `miller_loop_lines` (pairing.c) run for all pairs at once: because the Miller
/// function of a product is the product of the Miller functions, `f ← f²` is done once per step and
/// each pair only multiplies in its (sparse) line.
pub(crate) fn multi_pairing(terms: &[(G1Affine, &Lines)]) -> Gt {
    let points: Vec<(blst_p1_affine, &Lines)> = terms
        .iter()
        .filter(|(p, q)| !q.identity && !bool::from(p.is_identity()))
        .map(|(p, q)| (px2(p), *q))
        .collect();
    let mut f = gt_to_raw(Gt::identity());
    let mut line = blst_fp6::default();
    // blst's field functions accept an output that aliases an input (its own Miller loop calls
    // them in place), so `f` is passed as both through one raw pointer.
    let f_ptr: *mut blst_fp12 = &mut f;
    let mul_lines = |line: &mut blst_fp6, i: usize| {
        for (px2, q) in &points {
            evaluate(line, &q.lines[i], px2);
            // SAFETY: `f_ptr` points to the live, initialised `f`; in-place use is supported.
            unsafe { blst::blst_fp12_mul_by_xy00z0(f_ptr, f_ptr, line) };
        }
    };
    mul_lines(&mut line, 0);
    for (start, doublings) in SEGMENTS {
        mul_lines(&mut line, start);
        for i in start + 1..=start + doublings {
            // SAFETY: as above.
            unsafe { blst::blst_fp12_sqr(f_ptr, f_ptr) };
            mul_lines(&mut line, i);
        }
    }
    // SAFETY: plain-data argument. Accounts for the loop parameter z being negative.
    unsafe { blst::blst_fp12_conjugate(&mut f) };
    raw_to_gt(f.final_exp())
}

/// `(−2·P.x, 2·P.y)`: blst moves this common factor out of every line evaluation.
fn px2(p: &G1Affine) -> blst_p1_affine {
    let p = g1_to_raw(*p);
    let mut out = blst_p1_affine::default();
    let mut x2 = blst_fp::default();
    // SAFETY: plain-data arguments, all initialised; blst allows `ret` to alias nothing here.
    unsafe {
        blst::blst_fp_add(&mut x2, &p.x, &p.x);
        blst::blst_fp_cneg(&mut out.x, &x2, true);
        blst::blst_fp_add(&mut out.y, &p.y, &p.y);
    }
    out
}

/// blst's `post_line_by_Px2`: the precomputed line evaluated at P.
fn evaluate(out: &mut blst_fp6, line: &blst_fp6, px2: &blst_p1_affine) {
    out.fp2[0] = line.fp2[0];
    // SAFETY: plain-data arguments, all initialised.
    unsafe {
        blst::blst_fp_mul(&mut out.fp2[1].fp[0], &line.fp2[1].fp[0], &px2.x);
        blst::blst_fp_mul(&mut out.fp2[1].fp[1], &line.fp2[1].fp[1], &px2.x);
        blst::blst_fp_mul(&mut out.fp2[2].fp[0], &line.fp2[2].fp[0], &px2.y);
        blst::blst_fp_mul(&mut out.fp2[2].fp[1], &line.fp2[2].fp[1], &px2.y);
    }
}

/// The `i`-th 4-bit digit of a little-endian scalar encoding.
fn window_digit(bytes: &[u8; 32], i: usize) -> u8 {
    let bit = i * WINDOW;
    (bytes[bit / 8] >> (bit % 8)) & 0x0f
}

#[cfg(test)]
mod tests {
    use ff::Field;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;

    #[test]
    fn fixed_base_tables_agree_with_blstrs() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let g = G1Projective::random(&mut rng).to_affine();
        let y = Gt::random(&mut rng);
        let (t1, tt) = (G1Table::new(&g), GtTable::new(&y));
        let g2 = G2Projective::random(&mut rng).to_affine();
        let t2 = G2Table::new(&g2);
        for k in [
            Scalar::ZERO,
            Scalar::ONE,
            -Scalar::ONE,
            Scalar::random(&mut rng),
        ] {
            assert_eq!(t1.mul(&k), g * k);
            assert_eq!(t2.mul(&k), g2 * k);
            assert_eq!(tt.mul(&k), y * k);
        }
    }

    #[test]
    fn multi_pairing_agrees_with_blstrs() {
        use blstrs::{Bls12, G2Prepared};
        use pairing::{MillerLoopResult, MultiMillerLoop};
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        for n in [1usize, 2, 5, 25] {
            let mut p: Vec<G1Affine> = (0..n)
                .map(|_| G1Projective::random(&mut rng).to_affine())
                .collect();
            let mut q: Vec<G2Affine> = (0..n)
                .map(|_| G2Projective::random(&mut rng).to_affine())
                .collect();
            if n == 5 {
                p[1] = G1Affine::identity();
                q[3] = G2Affine::identity();
            }
            let lines: Vec<Lines> = q.iter().map(Lines::new).collect();
            let ours = multi_pairing(&p.iter().copied().zip(&lines).collect::<Vec<_>>());
            let prepared: Vec<G2Prepared> = q.iter().map(|q| G2Prepared::from(*q)).collect();
            let terms: Vec<(&G1Affine, &G2Prepared)> = p.iter().zip(&prepared).collect();
            assert_eq!(
                ours,
                Bls12::multi_miller_loop(&terms).final_exponentiation(),
                "{n} pairs"
            );
        }
        assert_eq!(multi_pairing(&[]), Gt::identity());
    }

    #[test]
    fn wiping_zeroes_secrets() {
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let mut s = Scalar::random(&mut rng);
        wipe_scalar(&mut s);
        assert_eq!(s, Scalar::ZERO);
        let mut p = G2Projective::random(&mut rng).to_affine();
        wipe_g2(&mut p);
        assert_eq!(p.to_compressed(), G2Affine::default().to_compressed());
    }
}
