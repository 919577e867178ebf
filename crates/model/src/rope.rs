//! Rotary position embedding in the Hugging Face convention ("rotate half"): the pair rotated by
//! angle `p · θ^{-2i/d}` is `(x[i], x[i + d/2])`, and every token carries its own position, so one
//! batch can mix sequences at different offsets (burn's built-in `RotaryEncoding` rotates interleaved
//! pairs and takes one start offset per batch, which fits neither HF weights nor continuous batching).

use crate::config::LlamaConfig;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

/// Precomputed `cos` and `sin` tables, `[max_position, head_dim / 2]`.
#[derive(Debug, Clone)]
pub struct Rope<B: Backend> {
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
    half: usize,
}

/// `cos`/`sin` rows gathered for the tokens of one forward pass, `[n_tokens, 1, head_dim / 2]`.
#[derive(Debug, Clone)]
pub struct RopeRows<B: Backend> {
    cos: Tensor<B, 3>,
    sin: Tensor<B, 3>,
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
        for &f in &inv {
            let angle = (p as f32 * f) as f64;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    (cos, sin)
}

impl<B: Backend> Rope<B> {
    /// Tables for positions `0..max_position` of `cfg`.
    pub fn new(cfg: &LlamaConfig, device: &B::Device) -> Self {
        let half = cfg.head_dim / 2;
        let (cos, sin) = tables(cfg.rope_theta, cfg.head_dim, cfg.max_position);
        let cos = Tensor::from_data(TensorData::new(cos, [cfg.max_position, half]), device);
        let sin = Tensor::from_data(TensorData::new(sin, [cfg.max_position, half]), device);
        Self { cos, sin, half }
    }

    /// Gathers the table rows of the given per-token positions (`[n]`, all `< max_position`).
    pub fn rows(&self, positions: Tensor<B, 1, Int>) -> RopeRows<B> {
        let [n] = positions.dims();
        RopeRows {
            cos: self
                .cos
                .clone()
                .select(0, positions.clone())
                .reshape([n, 1, self.half]),
            sin: self
                .sin
                .clone()
                .select(0, positions)
                .reshape([n, 1, self.half]),
        }
    }
}

impl<B: Backend> RopeRows<B> {
    /// Rotates `x` (`[n_tokens, heads, head_dim]`):
    /// `(x1, x2) ↦ (x1 cos − x2 sin, x2 cos + x1 sin)` with `x1 = x[.., :d/2]`, `x2 = x[.., d/2:]`.
    pub fn apply(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [_, _, d] = x.dims();
        let half = d / 2;
        let x1 = x.clone().narrow(2, 0, half);
        let x2 = x.narrow(2, half, half);
        let a = x1.clone() * self.cos.clone() - x2.clone() * self.sin.clone();
        let b = x2 * self.cos.clone() + x1 * self.sin.clone();
        Tensor::cat(vec![a, b], 2)
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
        let rope = Rope::<CpuBackend>::new(&cfg, &device);
        let x: Vec<f32> = (0..3 * 2 * 4).map(|k| (k as f32 * 0.37).sin()).collect();
        let positions = [0usize, 17, 5];
        let pos = Tensor::<CpuBackend, 1, Int>::from_data(
            TensorData::new(positions.iter().map(|&p| p as i64).collect::<Vec<_>>(), [3]),
            &device,
        );
        let xt = Tensor::<CpuBackend, 3>::from_data(TensorData::new(x.clone(), [3, 2, 4]), &device);
        let out: Vec<f32> = rope.rows(pos).apply(xt).into_data().to_vec().unwrap();
        for (t, &p) in positions.iter().enumerate() {
            for h in 0..2 {
                let off = (t * 2 + h) * 4;
                let r = reference(&x[off..off + 4], p, cfg.rope_theta);
                for k in 0..4 {
                    assert!((out[off + k] - r[k]).abs() < 1e-6);
                }
            }
        }
    }
}
