//! `p · v` against values gathered in place from the KV store (attention's second product).

use super::{Isa, Mat, MatMut};

/// Rows gathered by offset: row `j` is `data[offsets[j]..offsets[j] + cols]` (the keys or values
/// of one head in the KV store, whose slots follow the block table).
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    data: &'a [f32],
    offsets: &'a [usize],
    cols: usize,
}

impl<'a> Rows<'a> {
    /// A view of `data`.
    ///
    /// # Panics
    /// If a row does not fit in `data` (the kernels rely on this check).
    pub fn new(data: &'a [f32], offsets: &'a [usize], cols: usize) -> Self {
        assert!(
            offsets
                .iter()
                .all(|&o| o.checked_add(cols).is_some_and(|e| e <= data.len())),
            "gathered rows out of bounds"
        );
        Self {
            data,
            offsets,
            cols,
        }
    }
}

/// `out = p · v` for `p` `[m, n]` and the `n` gathered rows of `v` (`[n, cols]`): attention's
/// weighted sum of values, read in place from the KV store. Each element is one chain of fused
/// multiply-adds over `j` in increasing order (so exact zeros in `p` past a row's visible keys
/// leave it unchanged).
///
/// # Panics
/// If the shapes disagree.
pub fn pv(isa: Isa, p: Mat<'_>, v: Rows<'_>, out: MatMut<'_>) {
    assert!(p.cols == v.offsets.len(), "inner dimensions differ");
    assert!(out.rows == p.rows && out.cols == v.cols, "output shape");
    assert!(isa.available(), "{isa:?} is not available on this CPU");
    let (n, cols) = (p.cols, v.cols);
    for i in (0..p.rows).step_by(4) {
        let ni = 4.min(p.rows - i);
        // SAFETY: rows i..i+ni of `p` hold `n` floats (view checked), every gathered row holds
        // `cols` floats (checked in `Rows::new`), and rows i..i+ni of `out` hold `cols` writable
        // floats (view checked, borrowed mutably for the call).
        unsafe {
            let pp = p.data.as_ptr().add(i * p.stride);
            let po = out.data.as_mut_ptr().add(i * out.stride);
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => pv_avx512(ni, pp, p.stride, v, cols, po, out.stride),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => pv_avx2(ni, pp, p.stride, v, cols, po, out.stride),
                #[cfg(not(target_arch = "x86_64"))]
                Isa::Avx512 | Isa::Avx2 => unreachable!("x86 kernels on another architecture"),
                Isa::Scalar => pv_scalar(ni, pp, p.stride, n, v, cols, po, out.stride),
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl")]
#[allow(clippy::too_many_arguments)]
unsafe fn pv_avx512(
    ni: usize,
    p: *const f32,
    ldp: usize,
    v: Rows<'_>,
    cols: usize,
    out: *mut f32,
    ldo: usize,
) {
    use std::arch::x86_64::*;
    for c in (0..cols).step_by(16) {
        let mask = if cols - c >= 16 {
            0xFFFF
        } else {
            ((1u32 << (cols - c)) - 1) as __mmask16
        };
        let mut acc = [_mm512_setzero_ps(); 4];
        for (j, &off) in v.offsets.iter().enumerate() {
            // SAFETY: lanes c.. of gathered row j are inside it (masked past `cols`; rows checked
            // in `Rows::new`); p's element (r, j) is inside row r (contract of `pv`).
            let x = unsafe { _mm512_maskz_loadu_ps(mask, v.data.as_ptr().add(off + c)) };
            for (r, a) in acc.iter_mut().enumerate().take(ni) {
                let w = _mm512_set1_ps(unsafe { *p.add(r * ldp + j) });
                *a = _mm512_fmadd_ps(w, x, *a);
            }
        }
        for (r, a) in acc.iter().enumerate().take(ni) {
            // SAFETY: lanes c.. of output row r, masked past `cols`.
            unsafe { _mm512_mask_storeu_ps(out.add(r * ldo + c), mask, *a) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn pv_avx2(
    ni: usize,
    p: *const f32,
    ldp: usize,
    v: Rows<'_>,
    cols: usize,
    out: *mut f32,
    ldo: usize,
) {
    use std::arch::x86_64::*;
    let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for c in (0..cols).step_by(8) {
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((cols - c).min(8) as i32), idx);
        let mut acc = [_mm256_setzero_ps(); 4];
        for (j, &off) in v.offsets.iter().enumerate() {
            // SAFETY: as in `pv_avx512`; maskload touches only the lanes inside the row.
            let x = unsafe { _mm256_maskload_ps(v.data.as_ptr().add(off + c), mask) };
            for (r, a) in acc.iter_mut().enumerate().take(ni) {
                let w = _mm256_set1_ps(unsafe { *p.add(r * ldp + j) });
                *a = _mm256_fmadd_ps(w, x, *a);
            }
        }
        for (r, a) in acc.iter().enumerate().take(ni) {
            // SAFETY: only the lanes inside output row r are stored.
            unsafe { _mm256_maskstore_ps(out.add(r * ldo + c), mask, *a) };
        }
    }
}

#[allow(clippy::too_many_arguments)]
unsafe fn pv_scalar(
    ni: usize,
    p: *const f32,
    ldp: usize,
    n: usize,
    v: Rows<'_>,
    cols: usize,
    out: *mut f32,
    ldo: usize,
) {
    for r in 0..ni {
        // SAFETY: row r of `p` holds n floats, row r of `out` cols floats (contract of `pv`).
        let (pr, or) = unsafe {
            (
                std::slice::from_raw_parts(p.add(r * ldp), n),
                std::slice::from_raw_parts_mut(out.add(r * ldo), cols),
            )
        };
        or.fill(0.0);
        for (&w, &off) in pr.iter().zip(v.offsets) {
            for (o, &x) in or.iter_mut().zip(&v.data[off..off + cols]) {
                *o = w.mul_add(x, *o);
            }
        }
    }
}
