//! The exponentials of the pass, 16 lanes at a time on AVX-512: attention's causal softmax and
//! SwiGLU's `silu(g) · u`. Other instruction sets run the portable loops of `cpu::ops` (libm's
//! `expf`). Each row is computed alone and in a fixed order, so a row's result does not depend on
//! the other rows, nor on how long the padded row is past its visible prefix.

use super::Isa;

/// `e^x` to within a few ulps: `n = round(x · log₂e)`, `r = x − n · ln 2` (in two parts),
/// a degree-7 Taylor polynomial for `e^r` on `|r| ≤ ln 2 / 2` (truncation below 1e-8 relative),
/// then `2^n` by `scalef`. `x` is clamped to `[-104, 88.7]` first (NaN passes through), so
/// `e^{-∞} = 0` up to a denormal and nothing overflows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl")]
fn exp16(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // MAXPS/MINPS return their second operand when either is NaN: a NaN `x` stays NaN.
    let x = _mm512_min_ps(
        _mm512_set1_ps(88.7),
        _mm512_max_ps(_mm512_set1_ps(-104.0), x),
    );
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm512_set1_ps(1.0 / 5040.0);
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    _mm512_scalef_ps(p, n)
}

/// The lane mask of the first `n` (at most 16) lanes.
#[cfg(target_arch = "x86_64")]
fn lanes(n: usize) -> u16 {
    if n >= 16 { u16::MAX } else { (1u16 << n) - 1 }
}

/// Softmax in place over the first `visible` entries of `row`, scaled by `scale` first; the rest
/// become exact zeros. `None` when `isa` has no vector version here (the caller runs the portable
/// one).
pub fn softmax_prefix(isa: Isa, row: &mut [f32], visible: usize, scale: f32) -> Option<()> {
    assert!(visible <= row.len(), "visible entries past the row");
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: AVX-512F is available (`Isa::Avx512` is only chosen after detection, and every
        // entry point checks `Isa::available`).
        unsafe { softmax_avx512(row, visible, scale) };
        return Some(());
    }
    let _ = (isa, row, scale);
    None
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl")]
fn softmax_avx512(row: &mut [f32], visible: usize, scale: f32) {
    use std::arch::x86_64::*;
    let (head, tail) = row.split_at_mut(visible);
    let s = _mm512_set1_ps(scale);
    let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
    for c in head.chunks_mut(16) {
        let m = lanes(c.len());
        // SAFETY: lanes `m` are inside `c` (masked loads and stores touch no other lane).
        unsafe {
            let v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, c.as_ptr()), s);
            _mm512_mask_storeu_ps(c.as_mut_ptr(), m, v);
            max = _mm512_mask_max_ps(max, m, max, v);
        }
    }
    let max = _mm512_set1_ps(_mm512_reduce_max_ps(max));
    let mut sum = _mm512_setzero_ps();
    for c in head.chunks_mut(16) {
        let m = lanes(c.len());
        // SAFETY: as above.
        unsafe {
            let e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, c.as_ptr()), max));
            _mm512_mask_storeu_ps(c.as_mut_ptr(), m, e);
            sum = _mm512_mask_add_ps(sum, m, sum, e);
        }
    }
    let sum = _mm512_set1_ps(_mm512_reduce_add_ps(sum));
    for c in head.chunks_mut(16) {
        let m = lanes(c.len());
        // SAFETY: as above.
        unsafe {
            let v = _mm512_div_ps(_mm512_maskz_loadu_ps(m, c.as_ptr()), sum);
            _mm512_mask_storeu_ps(c.as_mut_ptr(), m, v);
        }
    }
    tail.fill(0.0);
}

/// `g ← silu(g) · u = g / (1 + e^{−g}) · u` elementwise. `None` when `isa` has no vector version
/// here.
pub fn silu_mul(isa: Isa, g: &mut [f32], u: &[f32]) -> Option<()> {
    assert!(g.len() == u.len(), "gate and up lengths differ");
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: as in `softmax_prefix`.
        unsafe { silu_mul_avx512(g, u) };
        return Some(());
    }
    let _ = (isa, g, u);
    None
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl")]
fn silu_mul_avx512(g: &mut [f32], u: &[f32]) {
    use std::arch::x86_64::*;
    let one = _mm512_set1_ps(1.0);
    for (gc, uc) in g.chunks_mut(16).zip(u.chunks(16)) {
        let m = lanes(gc.len());
        // SAFETY: lanes `m` are inside both chunks (same lengths, checked by the caller).
        unsafe {
            let x = _mm512_maskz_loadu_ps(m, gc.as_ptr());
            let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
            let y = _mm512_mul_ps(
                _mm512_div_ps(x, _mm512_add_ps(one, e)),
                _mm512_maskz_loadu_ps(m, uc.as_ptr()),
            );
            _mm512_mask_storeu_ps(gc.as_mut_ptr(), m, y);
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    fn avx512() -> bool {
        super::super::Isa::Avx512.available()
    }

    #[test]
    fn exp16_is_within_a_few_ulps_of_f64() {
        if !avx512() {
            return;
        }
        use std::arch::x86_64::*;
        let mut xs: Vec<f32> = (-2000..=2000).map(|i| i as f32 * 0.0437).collect();
        xs.extend([
            0.0, -0.0, 1e-30, -1e-30, 88.0, -87.0, -103.0, 0.3465, -0.3466,
        ]);
        for c in xs.chunks(16) {
            let mut buf = [0f32; 16];
            buf[..c.len()].copy_from_slice(c);
            let mut out = [0f32; 16];
            // SAFETY: AVX-512F was detected; both buffers hold 16 floats.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr(), exp16(_mm512_loadu_ps(buf.as_ptr()))) };
            for (&x, &y) in buf.iter().zip(&out) {
                let want = (x as f64).exp();
                let rel = ((y as f64) - want).abs() / want.max(f64::MIN_POSITIVE);
                // A few ulps where the result is normal; absolute 1e-38 in the denormals.
                assert!(
                    rel < 4e-7 || (want < 1e-37 && (y as f64 - want).abs() < 1e-38),
                    "e^{x}: {y} vs {want}"
                );
            }
        }
        let mut edge = [
            f32::NEG_INFINITY,
            f32::NAN,
            0.0,
            1000.0,
            -1000.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
        ];
        // SAFETY: as above.
        unsafe { _mm512_storeu_ps(edge.as_mut_ptr(), exp16(_mm512_loadu_ps(edge.as_ptr()))) };
        assert!(edge[0] >= 0.0 && edge[0] < 1e-44);
        assert!(edge[1].is_nan());
        assert_eq!(edge[2], 1.0);
        assert!(edge[3].is_finite() && edge[3] > 3e38);
        assert!(edge[4] >= 0.0 && edge[4] < 1e-44);
    }

    #[test]
    fn softmax_and_silu_match_f64_and_ignore_the_padding() {
        if !avx512() {
            return;
        }
        for n in [1usize, 5, 16, 17, 40, 333] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.7)
                .collect();
            let mut padded = x.clone();
            padded.extend([5.0f32; 9]);
            let mut alone = x.clone();
            softmax_prefix(Isa::Avx512, &mut padded, n, 0.125).unwrap();
            softmax_prefix(Isa::Avx512, &mut alone, n, 0.125).unwrap();
            assert_eq!(&padded[..n], &alone[..]);
            assert!(padded[n..].iter().all(|&v| v == 0.0));
            let z: f64 = x.iter().map(|&v| (v as f64 * 0.125).exp()).sum();
            for (&p, &v) in alone.iter().zip(&x) {
                let want = (v as f64 * 0.125).exp() / z;
                assert!(
                    (p as f64 - want).abs() < 1e-6 * want.max(1e-3),
                    "{p} vs {want}"
                );
            }
            let mut g = x.clone();
            let u: Vec<f32> = (0..n).map(|i| i as f32 * 0.01 - 1.0).collect();
            silu_mul(Isa::Avx512, &mut g, &u).unwrap();
            for ((&y, &gv), &uv) in g.iter().zip(&x).zip(&u) {
                let (gv, uv) = (gv as f64, uv as f64);
                let want = gv / (1.0 + (-gv).exp()) * uv;
                assert!(
                    (y as f64 - want).abs() < 1e-6 * want.abs().max(1e-2),
                    "{y} vs {want}"
                );
            }
        }
    }
}
