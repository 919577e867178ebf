//! Weights in block formats expanded to `f32` right before the product ([`super::nt_par`]).

use super::{Aligned, Isa};
use crate::packed::{BlockFormat, PackedMatrix, expand};

/// Weight rows expanded per product when the activations fit one [`ROW_BLOCK`]: 8 rows of the
/// widest weight (1536 values) stay in the L1 cache between their expansion and their use.
pub(super) const EXPAND_ROWS: usize = 8;

thread_local! {
    /// Each thread's buffer of expanded weight rows (reused, so no pass allocates one; aligned to a
    /// cache line).
    pub(super) static EXPANDED: std::cell::RefCell<Aligned> = std::cell::RefCell::new(Aligned::new(64));
}

/// Q4_1 blocks as `f32`, one block per iteration: the 16 quant bytes widened to 16 lanes, the low
/// nibbles (values 0..16) and the high ones (16..32) converted, then `q·d + m` as a product and a
/// sum, as in [`expand`] (so the same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl")]
fn expand_q4_1_avx512(scales: &[f32], quants: &[u8], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let blocks = scales.len() / 2;
    assert!(
        quants.len() == blocks * 16 && out.len() == blocks * 32,
        "block lengths disagree"
    );
    let low = _mm512_set1_epi32(0x0F);
    for (b, (s, o)) in scales
        .chunks_exact(2)
        .zip(out.chunks_exact_mut(32))
        .enumerate()
    {
        let (d, m) = (_mm512_set1_ps(s[0]), _mm512_set1_ps(s[1]));
        // SAFETY: bytes 16·b .. 16·b + 16 are inside `quants` (checked above); `o` holds 32
        // floats.
        unsafe {
            let q = _mm_loadu_si128(quants.as_ptr().add(16 * b).cast());
            let w = _mm512_cvtepu8_epi32(q);
            let lo = _mm512_cvtepi32_ps(_mm512_and_si512(w, low));
            let hi = _mm512_cvtepi32_ps(_mm512_srli_epi32::<4>(w));
            _mm512_storeu_ps(o.as_mut_ptr(), _mm512_add_ps(_mm512_mul_ps(lo, d), m));
            _mm512_storeu_ps(
                o.as_mut_ptr().add(16),
                _mm512_add_ps(_mm512_mul_ps(hi, d), m),
            );
        }
    }
}

/// Rows `r0..r1` of `w` as `f32` into `out`, with the CPU's vector units: the portable loop of
/// [`crate::packed`] compiled for the instruction set (the same operations in the same order, so
/// the same bits).
pub(super) fn expand_rows(isa: Isa, w: &PackedMatrix, r0: usize, r1: usize, out: &mut [f32]) {
    assert!(r0 <= r1 && r1 <= w.rows(), "rows out of range");
    let (scales, quants) = w.row_blocks(r0, r1);
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512vl")]
        fn avx512(f: BlockFormat, s: &[f32], q: &[u8], out: &mut [f32]) {
            match f {
                BlockFormat::Q4_1 => expand_q4_1_avx512(s, q, out),
                BlockFormat::Q8_0 => expand(f, s, q, out),
            }
        }
        #[target_feature(enable = "avx2")]
        fn avx2(f: BlockFormat, s: &[f32], q: &[u8], out: &mut [f32]) {
            expand(f, s, q, out)
        }
        match isa {
            // SAFETY: the instruction set was detected on this CPU (`Isa::available`, checked by
            // every entry point); the functions are safe code otherwise.
            Isa::Avx512 => unsafe {
                return avx512(w.format(), scales, quants, out);
            },
            // SAFETY: as above.
            Isa::Avx2 => unsafe {
                return avx2(w.format(), scales, quants, out);
            },
            Isa::Scalar => {}
        }
    }
    expand(w.format(), scales, quants, out);
}
