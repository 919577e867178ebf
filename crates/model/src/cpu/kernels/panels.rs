//! The weight product's register tiles over panels, one per instruction set, and the layout of a
//! dense weight in panels.
//!
//! A panel is 16 consecutive weight rows laid out `[k][16]` ([`PANEL`]): step `kk` of a tile
//! loads one 16-wide row of each of its panels and multiplies it by `a[r][kk]`, broadcast, for each
//! of its activation rows. Each output element is thus one chain of fused multiply-adds in
//! increasing `k`, with no lane sums at the end, started from zero, or from the old value with
//! `accumulate` (a residual is the chain's first term). A tile may run a range of `k` at a time:
//! the next range picks the chain up from the output (an `f32` stored and loaded exactly), so
//! where the ranges are cut does not change a bit. Every instruction set computes exactly this
//! chain (the portable code with `f32::mul_add`), so the products are bitwise the same on all.
// Register tiles read best as `acc[r][p]`.
#![allow(clippy::needless_range_loop)]

pub(super) use crate::packed::PANEL;

/// `out[r][16·p + c] = (load ? out[r][16·p + c] : 0) + Σ_kk a[r][kk] · b[p][kk][c]`, one chain
/// in increasing `kk < k`, for `r < MR`, `p < NP` and `c < 16` (`c < last` in the last panel);
/// panel `p`'s row `kk` starts at `b + ps·p + 16·kk`.
///
/// # Safety
/// `a` must hold `MR` rows of `k` floats at stride `lda`, `b` `NP` panels of `k` rows of 16 floats
/// at panel stride `ps`, and `out` `MR` rows at stride `ldo` of `16·(NP - 1) + last` readable and
/// writable floats; `1 <= last <= 16`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn panel_avx512<const MR: usize, const NP: usize>(
    a: *const f32,
    lda: usize,
    b: *const f32,
    ps: usize,
    k: usize,
    out: *mut f32,
    ldo: usize,
    last: usize,
    load: bool,
) {
    use std::arch::x86_64::*;
    let mask = |p: usize| -> __mmask16 {
        if p + 1 == NP {
            ((1u32 << last) - 1) as __mmask16
        } else {
            0xFFFF
        }
    };
    let mut acc = [[_mm512_setzero_ps(); NP]; MR];
    if load {
        for r in 0..MR {
            for p in 0..NP {
                // SAFETY: the masked lanes are inside the output tile (contract); masked-off
                // lanes are not read.
                acc[r][p] = unsafe { _mm512_maskz_loadu_ps(mask(p), out.add(r * ldo + p * PANEL)) };
            }
        }
    }
    for kk in 0..k {
        let mut bv = [_mm512_setzero_ps(); NP];
        for (p, v) in bv.iter_mut().enumerate() {
            // SAFETY: row kk of panel p is inside the panels (contract).
            *v = unsafe { _mm512_loadu_ps(b.add(p * ps + kk * PANEL)) };
        }
        for r in 0..MR {
            // SAFETY: element kk of row r is inside `a` (contract).
            let av = _mm512_set1_ps(unsafe { *a.add(r * lda + kk) });
            for p in 0..NP {
                acc[r][p] = _mm512_fmadd_ps(av, bv[p], acc[r][p]);
            }
        }
    }
    for r in 0..MR {
        for p in 0..NP {
            // SAFETY: the masked lanes of row r's panel p are inside the output tile (contract);
            // masked-off lanes are not written.
            unsafe { _mm512_mask_storeu_ps(out.add(r * ldo + p * PANEL), mask(p), acc[r][p]) };
        }
    }
}

/// [`panel_avx512`] with 8-lane vectors: each panel row is two of them.
///
/// # Safety
/// As [`panel_avx512`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn panel_avx2<const MR: usize, const NP: usize>(
    a: *const f32,
    lda: usize,
    b: *const f32,
    ps: usize,
    k: usize,
    out: *mut f32,
    ldo: usize,
    last: usize,
    load: bool,
) {
    use std::arch::x86_64::*;
    let cols = |p: usize| if p + 1 == NP { last } else { PANEL };
    let mut acc = [[[_mm256_setzero_ps(); 2]; NP]; MR];
    if load {
        for r in 0..MR {
            for p in 0..NP {
                let mut lanes = [0f32; PANEL];
                for (c, v) in lanes.iter_mut().enumerate().take(cols(p)) {
                    // SAFETY: column c of row r's panel p is inside the output tile (contract).
                    *v = unsafe { *out.add(r * ldo + p * PANEL + c) };
                }
                // SAFETY: `lanes` holds 16 floats.
                acc[r][p] = unsafe {
                    [
                        _mm256_loadu_ps(lanes.as_ptr()),
                        _mm256_loadu_ps(lanes.as_ptr().add(8)),
                    ]
                };
            }
        }
    }
    for kk in 0..k {
        let mut bv = [[_mm256_setzero_ps(); 2]; NP];
        for (p, v) in bv.iter_mut().enumerate() {
            // SAFETY: row kk of panel p is inside the panels (contract).
            unsafe {
                let row = b.add(p * ps + kk * PANEL);
                *v = [_mm256_loadu_ps(row), _mm256_loadu_ps(row.add(8))];
            }
        }
        for r in 0..MR {
            // SAFETY: element kk of row r is inside `a` (contract).
            let av = _mm256_set1_ps(unsafe { *a.add(r * lda + kk) });
            for p in 0..NP {
                for h in 0..2 {
                    acc[r][p][h] = _mm256_fmadd_ps(av, bv[p][h], acc[r][p][h]);
                }
            }
        }
    }
    for r in 0..MR {
        for p in 0..NP {
            let mut lanes = [0f32; PANEL];
            // SAFETY: `lanes` holds 16 floats.
            unsafe {
                _mm256_storeu_ps(lanes.as_mut_ptr(), acc[r][p][0]);
                _mm256_storeu_ps(lanes.as_mut_ptr().add(8), acc[r][p][1]);
            }
            for (c, &s) in lanes.iter().enumerate().take(cols(p)) {
                // SAFETY: column c of row r's panel p is inside the output tile (contract).
                unsafe { *out.add(r * ldo + p * PANEL + c) = s };
            }
        }
    }
}

/// [`panel_avx512`] in portable code: the same chains, with `f32::mul_add`.
///
/// # Safety
/// As [`panel_avx512`].
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn panel_scalar<const MR: usize, const NP: usize>(
    a: *const f32,
    lda: usize,
    b: *const f32,
    ps: usize,
    k: usize,
    out: *mut f32,
    ldo: usize,
    last: usize,
    load: bool,
) {
    for r in 0..MR {
        // SAFETY: row r of `a` holds k floats (contract).
        let ar = unsafe { std::slice::from_raw_parts(a.add(r * lda), k) };
        for p in 0..NP {
            // SAFETY: panel p holds k rows of 16 floats (contract).
            let bp = unsafe { std::slice::from_raw_parts(b.add(p * ps), PANEL * k) };
            let cols = if p + 1 == NP { last } else { PANEL };
            let o = |c: usize| {
                // SAFETY: column c < cols of row r's panel p is inside the output tile (contract).
                unsafe { out.add(r * ldo + p * PANEL + c) }
            };
            let mut lanes = [0f32; PANEL];
            if load {
                for (c, v) in lanes.iter_mut().enumerate().take(cols) {
                    // SAFETY: see `o`.
                    *v = unsafe { *o(c) };
                }
            }
            for (&x, row) in ar.iter().zip(bp.chunks_exact(PANEL)) {
                for c in 0..PANEL {
                    lanes[c] = x.mul_add(row[c], lanes[c]);
                }
            }
            for (c, &s) in lanes.iter().enumerate().take(cols) {
                // SAFETY: see `o`.
                unsafe { *o(c) = s };
            }
        }
    }
}

/// Rows `r0..r1` of the row-major `w` (`[_, k]` at stride `ldw`) as panels into `out`
/// (`(r1 - r0).div_ceil(16)` panels of `16·k`, rows past `r1` zero): `out[p][kk][j] =
/// w[r0 + 16·p + j][kk]`.
///
/// # Panics
/// If the rows are not inside `w` or `out` has the wrong length.
pub(super) fn pack_dense(
    isa: super::Isa,
    w: &[f32],
    ldw: usize,
    k: usize,
    r0: usize,
    r1: usize,
    out: &mut [f32],
) {
    let panels = (r1 - r0).div_ceil(PANEL);
    assert!(out.len() == panels * PANEL * k, "panel buffer length");
    assert!(
        r0 <= r1 && (r0 == r1 || (r1 - 1) * ldw + k <= w.len()),
        "rows out of range"
    );
    for (p, panel) in out.chunks_exact_mut(PANEL * k).enumerate() {
        let rows = PANEL.min(r1 - r0 - p * PANEL);
        let base = (r0 + p * PANEL) * ldw;
        #[cfg(target_arch = "x86_64")]
        if isa == super::Isa::Avx512 && rows == PANEL {
            // SAFETY: the CPU has AVX-512F/VL (`Isa::available`, checked by every entry point);
            // the 16 rows of `k` floats from `base` are inside `w` (checked above).
            unsafe { transpose16_avx512(w.as_ptr().add(base), ldw, k, panel) };
            continue;
        }
        let _ = isa;
        for (kk, row) in panel.chunks_exact_mut(PANEL).enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = if j < rows {
                    w[base + j * ldw + kk]
                } else {
                    0.0
                };
            }
        }
    }
}

/// 16 rows of `k` floats at stride `ldw` from `w`, transposed into `out` (`[k][16]`) by 16 × 16
/// blocks in registers.
///
/// # Safety
/// `w` must hold 16 rows of `k` floats at stride `ldw`; `out` holds `16·k`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl")]
unsafe fn transpose16_avx512(w: *const f32, ldw: usize, k: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let full = k / PANEL * PANEL;
    for k0 in (0..full).step_by(PANEL) {
        let mut r = [_mm512_setzero_ps(); 16];
        for (j, v) in r.iter_mut().enumerate() {
            // SAFETY: 16 floats of row j from k0 are inside the row (contract).
            *v = unsafe { _mm512_loadu_ps(w.add(j * ldw + k0)) };
        }
        // Within each 128-bit lane: pairs of rows interleaved, then groups of four rows, so that
        // u[4g + e] lane L holds element 4L + e of rows 4g..4g + 4.
        let mut u = [_mm512_setzero_ps(); 16];
        for g in 0..4 {
            let t0 = _mm512_unpacklo_ps(r[4 * g], r[4 * g + 1]);
            let t1 = _mm512_unpackhi_ps(r[4 * g], r[4 * g + 1]);
            let t2 = _mm512_unpacklo_ps(r[4 * g + 2], r[4 * g + 3]);
            let t3 = _mm512_unpackhi_ps(r[4 * g + 2], r[4 * g + 3]);
            u[4 * g] = _mm512_shuffle_ps::<0x44>(t0, t2);
            u[4 * g + 1] = _mm512_shuffle_ps::<0xEE>(t0, t2);
            u[4 * g + 2] = _mm512_shuffle_ps::<0x44>(t1, t3);
            u[4 * g + 3] = _mm512_shuffle_ps::<0xEE>(t1, t3);
        }
        // Then the 128-bit lanes of the four groups: output row 4L + e is lane L of u[e],
        // u[4 + e], u[8 + e], u[12 + e].
        for e in 0..4 {
            let v0 = _mm512_shuffle_f32x4::<0x44>(u[e], u[4 + e]);
            let v1 = _mm512_shuffle_f32x4::<0xEE>(u[e], u[4 + e]);
            let v2 = _mm512_shuffle_f32x4::<0x44>(u[8 + e], u[12 + e]);
            let v3 = _mm512_shuffle_f32x4::<0xEE>(u[8 + e], u[12 + e]);
            let rows = [
                _mm512_shuffle_f32x4::<0x88>(v0, v2),
                _mm512_shuffle_f32x4::<0xDD>(v0, v2),
                _mm512_shuffle_f32x4::<0x88>(v1, v3),
                _mm512_shuffle_f32x4::<0xDD>(v1, v3),
            ];
            for (l, v) in rows.into_iter().enumerate() {
                let kk = k0 + 4 * l + e;
                // SAFETY: row kk of the panel is inside `out` (16·k floats).
                unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(kk * PANEL), v) };
            }
        }
    }
    for kk in full..k {
        for j in 0..PANEL {
            // SAFETY: element kk of row j is inside the rows (contract).
            out[kk * PANEL + j] = unsafe { *w.add(j * ldw + kk) };
        }
    }
}
