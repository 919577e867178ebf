//! Rotary position embedding in the Hugging Face convention ("rotate half"): the pair rotated by
//! angle `p · θ^{-2i/d}` is `(x[i], x[i + d/2])`, and every token carries its own position, so one
//! batch can mix sequences at different offsets (burn's built-in `RotaryEncoding` rotates interleaved
//! pairs and takes one start offset per batch, which fits neither HF weights nor continuous batching).
//!
//! Implementation: `rope(x) = x ⊙ C + (x · P) ⊙ S`, where `P` is the signed permutation
//! `rotate_half` as a `[d, d]` matrix (one small GEMM) and `C`, `S` are the cosines and sines of every
//! token's angles laid out at the full `[tokens, heads, d]` shape, built on the host once per forward
//! pass and shared by all layers. Full-shape tables keep every element-wise op on contiguous,
//! non-broadcast operands, which is the fast path of the CPU backends.

use crate::config::LlamaConfig;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// Positions whose angles are tabulated when the model loads; later ones (a context length from a
/// file can be 10^8 or 2^32 - 1) are computed when used, with the same formula and so the same
/// bits.
pub const TABLE_POSITIONS: usize = 8192;

/// Host tables of `cos` and `sin`, `[min(max_position, TABLE_POSITIONS), head_dim / 2]`.
#[derive(Debug, Clone)]
pub struct Rope {
    cos: Vec<f32>,
    sin: Vec<f32>,
    inv: Vec<f32>,
    head_dim: usize,
}

/// Per-pass RoPE operands for one head count: `C`, `S` (`[n, heads, d]`) and `P` (`[d, d]`).
#[derive(Debug, Clone)]
pub struct RopeRows<B: Backend> {
    cos: Tensor<B, 3>,
    sin: Tensor<B, 3>,
    rot: Tensor<B, 2>,
}

/// The inverse frequencies `θ^{-2i/d}`, computed in `f32` as Hugging Face does
/// (`1 / base ** (arange(0, d, 2) / d)`).
pub fn inv_freq(theta: f32, head_dim: usize) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32))
        .collect()
}

/// Host tables `(cos, sin)` of shape `[positions, head_dim/2]`: the angle `p · inv_freq[i]` is formed
/// in `f32` (as HF's `float32` matmul does) and its cosine and sine are rounded from `f64`.
pub fn tables(theta: f32, head_dim: usize, positions: usize) -> (Vec<f32>, Vec<f32>) {
    let inv = inv_freq(theta, head_dim);
    let mut cos = Vec::with_capacity(positions * inv.len());
    let mut sin = Vec::with_capacity(positions * inv.len());
    for p in 0..positions {
        push_angles(&inv, p, &mut cos, &mut sin);
    }
    (cos, sin)
}

/// Appends the cosines and sines of position `p`'s angles `p · inv[i]`.
fn push_angles(inv: &[f32], p: usize, cos: &mut Vec<f32>, sin: &mut Vec<f32>) {
    for &f in inv {
        let angle = (p as f32 * f) as f64;
        cos.push(angle.cos() as f32);
        sin.push(angle.sin() as f32);
    }
}

/// `rotate_half` as a matrix: `(x · P)[j] = -x[j + d/2]` for `j < d/2`, `x[j - d/2]` otherwise.
pub fn rotate_half_matrix(d: usize) -> Vec<f32> {
    let h = d / 2;
    let mut p = vec![0.0f32; d * d];
    for j in 0..h {
        p[(j + h) * d + j] = -1.0;
        p[j * d + j + h] = 1.0;
    }
    p
}

impl Rope {
    /// Tables for positions `0..max_position` of `cfg`.
    pub fn new(cfg: &LlamaConfig) -> Self {
        let positions = cfg.max_position.min(TABLE_POSITIONS);
        let (cos, sin) = tables(cfg.rope_theta, cfg.head_dim, positions);
        Self {
            cos,
            sin,
            inv: inv_freq(cfg.rope_theta, cfg.head_dim),
            head_dim: cfg.head_dim,
        }
    }

    /// The cosines and sines of position `p`: from the table, or computed past its end.
    fn angles(&self, p: usize) -> (std::borrow::Cow<'_, [f32]>, std::borrow::Cow<'_, [f32]>) {
        use std::borrow::Cow;
        let h = self.head_dim / 2;
        if (p + 1) * h <= self.cos.len() {
            let r = p * h..(p + 1) * h;
            return (
                Cow::Borrowed(&self.cos[r.clone()]),
                Cow::Borrowed(&self.sin[r]),
            );
        }
        let (mut c, mut s) = (Vec::with_capacity(h), Vec::with_capacity(h));
        push_angles(&self.inv, p, &mut c, &mut s);
        (Cow::Owned(c), Cow::Owned(s))
    }

    /// Rotates one head's vector `x` (`head_dim` values) in place for position `p`
    /// (`< max_position`): `x[i], x[i+d/2] ← x[i]·cos − x[i+d/2]·sin, x[i+d/2]·cos + x[i]·sin`.
    /// The host form of [`RopeRows::apply`], used by the native CPU forward pass.
    pub fn rotate(&self, x: &mut [f32], p: usize) {
        let h = self.head_dim / 2;
        let (cos, sin) = self.angles(p);
        let (lo, hi) = x.split_at_mut(h);
        for i in 0..h {
            let (a, b) = (lo[i], hi[i]);
            lo[i] = a * cos[i] - b * sin[i];
            hi[i] = b * cos[i] + a * sin[i];
        }
    }

    /// The operands for tokens at `positions` (all `< max_position`) and `heads` heads.
    pub fn rows<B: Backend>(
        &self,
        positions: &[u32],
        heads: usize,
        device: &B::Device,
    ) -> RopeRows<B> {
        let d = self.head_dim;
        let n = positions.len();
        let mut c = Vec::with_capacity(n * heads * d);
        let mut s = Vec::with_capacity(n * heads * d);
        for &p in positions {
            let (cr, sr) = self.angles(p as usize);
            for _ in 0..heads {
                c.extend_from_slice(&cr);
                c.extend_from_slice(&cr);
                s.extend_from_slice(&sr);
                s.extend_from_slice(&sr);
            }
        }
        RopeRows {
            cos: Tensor::from_data(TensorData::new(c, [n, heads, d]), device),
            sin: Tensor::from_data(TensorData::new(s, [n, heads, d]), device),
            rot: Tensor::from_data(TensorData::new(rotate_half_matrix(d), [d, d]), device),
        }
    }
}

impl<B: Backend> RopeRows<B> {
    /// Rotates `x` (`[n_tokens, heads, head_dim]`, the shape the rows were built for).
    pub fn apply(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [n, heads, d] = x.dims();
        let rotated = x
            .clone()
            .reshape([n * heads, d])
            .matmul(self.rot.clone())
            .reshape([n, heads, d]);
        x * self.cos.clone() + rotated * self.sin.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{CpuBackend, cpu_device};

    /// Scalar reference of HF's `apply_rotary_pos_emb` for one head.
    fn reference(x: &[f32], pos: usize, theta: f32) -> Vec<f32> {
        let d = x.len();
        let inv = inv_freq(theta, d);
        let mut out = vec![0.0; d];
        for i in 0..d / 2 {
            let a = (pos as f32 * inv[i]) as f64;
            let (c, s) = (a.cos() as f32, a.sin() as f32);
            out[i] = x[i] * c - x[i + d / 2] * s;
            out[i + d / 2] = x[i + d / 2] * c + x[i] * s;
        }
        out
    }

    #[test]
    fn matches_scalar_reference_with_per_token_positions() {
        let cfg = LlamaConfig {
            vocab_size: 8,
            hidden_size: 8,
            intermediate_size: 8,
            num_layers: 1,
            num_heads: 2,
            num_kv_heads: 1,
            head_dim: 4,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-5,
            max_position: 64,
            tie_word_embeddings: true,
            bos_token_id: None,
            eos_token_ids: vec![],
        };
        let device = cpu_device();
        let rope = Rope::new(&cfg);
        let x: Vec<f32> = (0..3 * 2 * 4).map(|k| (k as f32 * 0.37).sin()).collect();
        let positions = [0u32, 17, 5];
        let xt = Tensor::<CpuBackend, 3>::from_data(TensorData::new(x.clone(), [3, 2, 4]), &device);
        let out: Vec<f32> = rope
            .rows::<CpuBackend>(&positions, 2, &device)
            .apply(xt)
            .into_data()
            .to_vec()
            .unwrap();
        for (t, &p) in positions.iter().enumerate() {
            for h in 0..2 {
                let off = (t * 2 + h) * 4;
                let r = reference(&x[off..off + 4], p as usize, cfg.rope_theta);
                for k in 0..4 {
                    assert!((out[off + k] - r[k]).abs() < 1e-6);
                }
            }
        }
    }
}
