//! The element-wise and row-wise steps of the native forward pass, each fused into one sweep over
//! its rows and split over rayon's threads when the batch is large enough to pay for it. Every row
//! is computed alone, in a fixed order (no result depends on another row).

use super::kernels::{Isa, silu_mul, softmax_prefix as vector_softmax};
use rayon::prelude::*;

/// Below this many elements a sweep stays on the calling thread.
const PAR_ELEMENTS: usize = 1 << 15;

/// Runs `f(row index, row)` over the `width`-wide rows of `data`, in parallel when large.
pub fn rows_mut(data: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if data.len() < PAR_ELEMENTS {
        data.chunks_mut(width)
            .enumerate()
            .for_each(|(i, r)| f(i, r));
    } else {
        data.par_chunks_mut(width)
            .enumerate()
            .for_each(|(i, r)| f(i, r));
    }
}

/// RMSNorm of one row into `out`: `x / sqrt(mean(x²) + ε) · w` (the mean of squares summed in
/// `f64`; a true division, as the burn-op pass does).
pub fn rms_norm_row(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let ss: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    let rms = ((ss / x.len() as f64) as f32 + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = v / rms * g;
    }
}

/// RMSNorm of every `d`-wide row of `x` into `out`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    rows_mut(out, d, |i, o| {
        rms_norm_row(&x[i * d..(i + 1) * d], w, eps, o)
    });
}

/// SwiGLU in place on rows `[gate | up]` of width `2·ffn`: the first half becomes
/// `silu(gate) · up` (`silu(g) = g / (1 + e^{−g})`), with the vector exponential of
/// [`kernels::exp`](super::kernels) where `isa` has one.
pub fn swiglu(isa: Isa, gate_up: &mut [f32], ffn: usize) {
    rows_mut(gate_up, 2 * ffn, |_, r| {
        let (g, u) = r.split_at_mut(ffn);
        if silu_mul(isa, g, u).is_none() {
            for (g, &u) in g.iter_mut().zip(u.iter()) {
                *g = *g / (1.0 + (-*g).exp()) * u;
            }
        }
    });
}

/// Softmax in place over the first `visible` entries of `row` (scaled by `scale` first); the rest
/// become exact zeros, so a longer row gives the same probabilities. Vectorised where `isa` has a
/// version ([`kernels::exp`](super::kernels)), else the portable loop below.
pub fn softmax_prefix(isa: Isa, row: &mut [f32], visible: usize, scale: f32) {
    if vector_softmax(isa, row, visible, scale).is_some() {
        return;
    }
    let (head, tail) = row.split_at_mut(visible);
    let mut max = f32::NEG_INFINITY;
    for v in head.iter_mut() {
        *v *= scale;
        max = max.max(*v);
    }
    let mut sum = 0f32;
    for v in head.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in head.iter_mut() {
        *v /= sum;
    }
    tail.fill(0.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_prefix_ignores_the_padding() {
        let mut a = vec![1.0, 2.0, 3.0, 9.0, -4.0];
        let mut b = vec![1.0, 2.0, 3.0];
        softmax_prefix(Isa::Scalar, &mut a, 3, 0.5);
        softmax_prefix(Isa::Scalar, &mut b, 3, 0.5);
        assert_eq!(&a[..3], &b[..]);
        assert_eq!(&a[3..], &[0.0, 0.0]);
        let z: f64 = [0.5f64, 1.0, 1.5].iter().map(|v| v.exp()).sum();
        for (k, v) in [0.5f64, 1.0, 1.5].iter().enumerate() {
            assert!((a[k] as f64 - v.exp() / z).abs() < 1e-7);
        }
    }

    #[test]
    fn rms_norm_and_swiglu_match_their_formulas() {
        let x = [3.0f32, -4.0];
        let mut out = [0f32; 2];
        rms_norm_row(&x, &[1.0, 2.0], 0.0, &mut out);
        let rms = (12.5f32).sqrt();
        assert!((out[0] - 3.0 / rms).abs() < 1e-6 && (out[1] + 8.0 / rms).abs() < 1e-6);
        let mut gu = vec![1.0f32, -2.0, 3.0, 0.5];
        swiglu(Isa::Scalar, &mut gu, 2);
        let silu = |g: f64| g / (1.0 + (-g).exp());
        assert!((gu[0] as f64 - silu(1.0) * 3.0).abs() < 1e-6);
        assert!((gu[1] as f64 - silu(-2.0) * 0.5).abs() < 1e-6);
    }
}
