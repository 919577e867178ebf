//! Weights in block formats expanded to `f32` panels right before the product ([`super::nt_par`]).

use super::{Aligned, Isa};
use crate::packed::{BLOCK, BlockFormat, PANEL, PackedMatrix, expand_panel};

thread_local! {
    /// Each thread's buffer of weight panels (expanded blocks or transposed `f32` rows; reused, so
    /// no pass allocates one; aligned to a cache line).
    pub(super) static PANELS: std::cell::RefCell<Aligned> = std::cell::RefCell::new(Aligned::new(64));
}

/// Q4_1 block columns as panel rows, one block column per iteration: for each of the 16 quant
/// positions, the 16 rows' bytes widened to 16 lanes, the low nibbles (value `t`) and the high ones
/// (`t + 16`) converted, then `q·d + m` as a product and a sum with the rows' own `d` and `m`, as in
/// [`expand_panel`] (so the same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl")]
fn expand_q4_1_avx512(scales: &[f32], quants: &[u8], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let blocks = scales.len() / (2 * PANEL);
    assert!(
        quants.len() == blocks * 16 * PANEL && out.len() == blocks * BLOCK * PANEL,
        "block lengths disagree"
    );
    let low = _mm512_set1_epi32(0x0F);
    for b in 0..blocks {
        // SAFETY: block column b's 32 scales, 256 quant bytes and 512 output floats are inside
        // the slices (lengths checked above).
        unsafe {
            let s = scales.as_ptr().add(32 * b);
            let (d, m) = (_mm512_loadu_ps(s), _mm512_loadu_ps(s.add(16)));
            let q = quants.as_ptr().add(256 * b);
            let o = out.as_mut_ptr().add(512 * b);
            for t in 0..16 {
                let w = _mm512_cvtepu8_epi32(_mm_loadu_si128(q.add(16 * t).cast()));
                let lo = _mm512_cvtepi32_ps(_mm512_and_si512(w, low));
                let hi = _mm512_cvtepi32_ps(_mm512_srli_epi32::<4>(w));
                _mm512_storeu_ps(o.add(16 * t), _mm512_add_ps(_mm512_mul_ps(lo, d), m));
                _mm512_storeu_ps(o.add(16 * (t + 16)), _mm512_add_ps(_mm512_mul_ps(hi, d), m));
            }
        }
    }
}

/// Q8_0 block columns as panel rows (as [`expand_q4_1_avx512`]; `q·d`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl")]
fn expand_q8_0_avx512(scales: &[f32], quants: &[u8], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let blocks = scales.len() / PANEL;
    assert!(
        quants.len() == blocks * 32 * PANEL && out.len() == blocks * BLOCK * PANEL,
        "block lengths disagree"
    );
    for b in 0..blocks {
        // SAFETY: block column b's 16 scales, 512 quant bytes and 512 output floats are inside
        // the slices (lengths checked above).
        unsafe {
            let d = _mm512_loadu_ps(scales.as_ptr().add(16 * b));
            let q = quants.as_ptr().add(512 * b);
            let o = out.as_mut_ptr().add(512 * b);
            for t in 0..32 {
                let w = _mm512_cvtepi8_epi32(_mm_loadu_si128(q.add(16 * t).cast()));
                _mm512_storeu_ps(o.add(16 * t), _mm512_mul_ps(_mm512_cvtepi32_ps(w), d));
            }
        }
    }
}

/// Panels `p0..p1` of `w` as `f32` into `out` (`[k][16]` each), with the CPU's vector units:
/// the arithmetic of [`expand_panel`], so the same bits.
pub(super) fn expand_panels(isa: Isa, w: &PackedMatrix, p0: usize, p1: usize, out: &mut [f32]) {
    assert!(
        p0 <= p1 && p1 <= w.rows().div_ceil(PANEL),
        "panels out of range"
    );
    let (scales, quants) = w.panel_blocks(p0, p1);
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        fn avx2(f: BlockFormat, s: &[f32], q: &[u8], out: &mut [f32]) {
            expand_panel(f, s, q, out)
        }
        match isa {
            // SAFETY: the instruction set was detected on this CPU (`Isa::available`, checked by
            // every entry point); the functions are safe code otherwise.
            Isa::Avx512 => unsafe {
                return match w.format() {
                    BlockFormat::Q4_1 => expand_q4_1_avx512(scales, quants, out),
                    BlockFormat::Q8_0 => expand_q8_0_avx512(scales, quants, out),
                };
            },
            // SAFETY: as above.
            Isa::Avx2 => unsafe {
                return avx2(w.format(), scales, quants, out);
            },
            Isa::Scalar => {}
        }
    }
    expand_panel(w.format(), scales, quants, out);
}
