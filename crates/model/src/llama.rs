//! The Llama decoder, generic over burn's [`Backend`]: token embedding, `N` blocks of
//! (RMSNorm → grouped-query attention over the KV cache → residual, RMSNorm → SwiGLU → residual),
//! a final RMSNorm and the LM head (tied to the embedding when the checkpoint has none).
//!
//! Layout choices (see `docs/performance.md`): linear weights are stored transposed, `[in, out]`,
//! with q/k/v fused into one `[d, q + 2·kv]` matrix and gate/up into one `[d, 2·ffn]` matrix, so a
//! block runs four GEMMs on the packed `[N, d]` activations. Attention pads the batch to
//! `[S, Tq]` queries against `[S, Tk]` gathered context rows and folds the query heads of each KV
//! group into the row dimension (`[S, kv_heads, Tq·rep, head_dim]`), so K/V are never repeated.

use crate::backend::KvBackend;
use crate::batch::{ForwardBatch, Plan};
use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::kv::KvCache;
use crate::rope::Rope;
use crate::weights::{HostTensor, WeightSource, layer_name};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Int, Tensor, TensorData};

/// One decoder block's weights.
#[derive(Debug, Clone)]
struct Block<B: KvBackend> {
    attn_norm: Tensor<B, 1>,
    /// `[d, q + 2·kv]`.
    wqkv: Tensor<B, 2>,
    /// `[q, d]`.
    wo: Tensor<B, 2>,
    mlp_norm: Tensor<B, 1>,
    /// `[d, 2·ffn]`: gate columns then up columns.
    w_gate_up: Tensor<B, 2>,
    /// `[ffn, d]`.
    w_down: Tensor<B, 2>,
}

/// A loaded Llama model on one device.
#[derive(Debug, Clone)]
pub struct Llama<B: KvBackend> {
    cfg: LlamaConfig,
    /// `[vocab, d]`.
    embed: Tensor<B, 2>,
    blocks: Vec<Block<B>>,
    norm: Tensor<B, 1>,
    /// `[d, vocab]`.
    lm_head: Tensor<B, 2>,
    rope: Rope<B>,
    device: B::Device,
}

/// Progress callback of the loader: `(tensor name, index, total)`.
pub type LoadProgress<'a> = &'a mut dyn FnMut(&str, usize, usize);

fn expect_shape(name: &str, t: &HostTensor, expected: &[usize]) -> Result<()> {
    if t.shape != expected {
        return Err(ModelError::ShapeMismatch {
            name: name.to_string(),
            expected: expected.to_vec(),
            got: t.shape.clone(),
        });
    }
    Ok(())
}

/// `[rows, cols]` row-major → `[cols, rows]` row-major.
fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// Concatenates `[d, a_k]` row-major matrices along columns.
fn hcat(parts: &[(&[f32], usize)], d: usize) -> Vec<f32> {
    let width: usize = parts.iter().map(|p| p.1).sum();
    let mut out = Vec::with_capacity(d * width);
    for r in 0..d {
        for (data, w) in parts {
            out.extend_from_slice(&data[r * w..(r + 1) * w]);
        }
    }
    out
}

impl<B: KvBackend> Llama<B> {
    /// Loads every weight from `src` (Hugging Face names), checks its shape against `cfg`, and
    /// builds the device tensors. `progress` is called once per tensor.
    ///
    /// # Errors
    /// [`ModelError::MissingTensor`], [`ModelError::ShapeMismatch`] naming the tensor and both
    /// shapes, or the source's format errors.
    pub fn load(
        cfg: LlamaConfig,
        src: &dyn WeightSource,
        device: &B::Device,
        progress: LoadProgress<'_>,
    ) -> Result<Self> {
        cfg.validate("model")?;
        let (d, q, kv, ffn, vocab) = (
            cfg.hidden_size,
            cfg.q_dim(),
            cfg.kv_dim(),
            cfg.intermediate_size,
            cfg.vocab_size,
        );
        let per_layer = 9;
        let total = 2 + per_layer * cfg.num_layers + usize::from(src.contains("lm_head.weight"));
        let mut done = 0usize;
        let mut get = |name: String, shape: &[usize]| -> Result<HostTensor> {
            progress(&name, done, total);
            done += 1;
            let t = src.tensor(&name)?;
            expect_shape(&name, &t, shape)?;
            Ok(t)
        };
        let t2 = |data: Vec<f32>, shape: [usize; 2]| {
            Tensor::<B, 2>::from_data(TensorData::new(data, shape), device)
        };
        let t1 = |data: Vec<f32>| {
            let n = data.len();
            Tensor::<B, 1>::from_data(TensorData::new(data, [n]), device)
        };

        let embed_host = get("model.embed_tokens.weight".into(), &[vocab, d])?;
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let attn_norm = get(layer_name(i, "input_layernorm.weight"), &[d])?;
            let wq = get(layer_name(i, "self_attn.q_proj.weight"), &[q, d])?;
            let wk = get(layer_name(i, "self_attn.k_proj.weight"), &[kv, d])?;
            let wv = get(layer_name(i, "self_attn.v_proj.weight"), &[kv, d])?;
            let wo = get(layer_name(i, "self_attn.o_proj.weight"), &[d, q])?;
            let mlp_norm = get(layer_name(i, "post_attention_layernorm.weight"), &[d])?;
            let wg = get(layer_name(i, "mlp.gate_proj.weight"), &[ffn, d])?;
            let wu = get(layer_name(i, "mlp.up_proj.weight"), &[ffn, d])?;
            let wd = get(layer_name(i, "mlp.down_proj.weight"), &[d, ffn])?;
            let (qt, kt, vt) = (
                transpose(&wq.data, q, d),
                transpose(&wk.data, kv, d),
                transpose(&wv.data, kv, d),
            );
            let wqkv = hcat(&[(&qt, q), (&kt, kv), (&vt, kv)], d);
            let (gt, ut) = (transpose(&wg.data, ffn, d), transpose(&wu.data, ffn, d));
            let w_gate_up = hcat(&[(&gt, ffn), (&ut, ffn)], d);
            blocks.push(Block {
                attn_norm: t1(attn_norm.data),
                wqkv: t2(wqkv, [d, q + 2 * kv]),
                wo: t2(transpose(&wo.data, d, q), [q, d]),
                mlp_norm: t1(mlp_norm.data),
                w_gate_up: t2(w_gate_up, [d, 2 * ffn]),
                w_down: t2(transpose(&wd.data, d, ffn), [ffn, d]),
            });
        }
        let norm = get("model.norm.weight".into(), &[d])?;
        let head = if src.contains("lm_head.weight") {
            get("lm_head.weight".into(), &[vocab, d])?
        } else if cfg.tie_word_embeddings {
            embed_host.clone()
        } else {
            return Err(ModelError::MissingTensor {
                name: "lm_head.weight".into(),
            });
        };
        progress("done", total, total);
        Ok(Self {
            rope: Rope::new(&cfg, device),
            embed: t2(embed_host.data, [vocab, d]),
            blocks,
            norm: t1(norm.data),
            lm_head: t2(transpose(&head.data, vocab, d), [d, vocab]),
            device: device.clone(),
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// A KV cache of `num_slots` slots for this model on its device.
    ///
    /// # Errors
    /// As [`KvCache::new`].
    pub fn new_cache(&self, num_slots: usize) -> Result<KvCache<B>> {
        KvCache::new(&self.cfg, num_slots, &self.device)
    }

    fn rms_norm<const D: usize>(&self, x: Tensor<B, D>, w: &Tensor<B, 1>) -> Tensor<B, D> {
        let inv = (x.clone().square().mean_dim(D - 1) + self.cfg.rms_norm_eps as f64)
            .sqrt()
            .recip();
        x * inv * w.clone().unsqueeze()
    }

    fn int1(&self, v: Vec<i64>) -> Tensor<B, 1, Int> {
        let n = v.len();
        Tensor::from_data(TensorData::new(v, [n]), &self.device)
    }

    /// One forward pass: writes the new tokens' keys and values into `cache` and returns the logits of
    /// `batch.logits_rows`, shape `[rows, vocab]`.
    ///
    /// # Errors
    /// [`ModelError::Batch`] and friends for an inconsistent batch (checked before any write),
    /// [`ModelError::Backend`] if the backend misbehaves.
    pub fn forward(&self, batch: &ForwardBatch, cache: &mut KvCache<B>) -> Result<Tensor<B, 2>> {
        let cfg = &self.cfg;
        let rep = cfg.num_heads / cfg.num_kv_heads;
        let plan = batch.plan(cfg.vocab_size, cfg.max_position, cache.num_slots(), rep)?;
        if cache.keys.len() != cfg.num_layers || cache.width() != cfg.kv_dim() {
            return Err(ModelError::Batch(
                "the KV cache was made for another model".into(),
            ));
        }
        let n = batch.tokens.len();
        let ids = self.int1(batch.tokens.iter().map(|&t| t as i64).collect());
        let mut x = self.embed.clone().select(0, ids); // [N, d]
        let rope = self
            .rope
            .rows(self.int1(batch.positions.iter().map(|&p| p as i64).collect()));
        let att = AttentionInputs::new(self, &plan);
        for (l, block) in self.blocks.iter().enumerate() {
            let h = self.rms_norm(x.clone(), &block.attn_norm);
            let qkv = h.matmul(block.wqkv.clone()); // [N, q + 2kv]
            let (q, kv) = (cfg.q_dim(), cfg.kv_dim());
            let hq = qkv
                .clone()
                .narrow(1, 0, q)
                .reshape([n, cfg.num_heads, cfg.head_dim]);
            let hk = qkv
                .clone()
                .narrow(1, q, kv)
                .reshape([n, cfg.num_kv_heads, cfg.head_dim]);
            let hv = qkv.narrow(1, q + kv, kv);
            let hq = rope.apply(hq).reshape([n, q]);
            let hk = rope.apply(hk).reshape([n, kv]);
            let keys = std::mem::replace(&mut cache.keys[l], Tensor::empty([0, 0], &self.device));
            cache.keys[l] = B::write_rows(keys, &plan.slot_mapping, hk)?;
            let values =
                std::mem::replace(&mut cache.values[l], Tensor::empty([0, 0], &self.device));
            cache.values[l] = B::write_rows(values, &plan.slot_mapping, hv)?;
            let o = att.attend(hq, &cache.keys[l], &cache.values[l]); // [N, q]
            x = x + o.matmul(block.wo.clone());
            let h = self.rms_norm(x.clone(), &block.mlp_norm);
            let gu = h.matmul(block.w_gate_up.clone()); // [N, 2 ffn]
            let ffn = cfg.intermediate_size;
            let m = silu(gu.clone().narrow(1, 0, ffn)) * gu.narrow(1, ffn, ffn);
            x = x + m.matmul(block.w_down.clone());
        }
        let rows = self.int1(batch.logits_rows.iter().map(|&r| r as i64).collect());
        if batch.logits_rows.is_empty() {
            return Ok(Tensor::empty([0, cfg.vocab_size], &self.device));
        }
        let last = self.rms_norm(x.select(0, rows), &self.norm);
        Ok(last.matmul(self.lm_head.clone()))
    }
}

/// Per-pass attention inputs shared by all layers: padding indices, context gather indices, bias.
struct AttentionInputs<'a, B: KvBackend> {
    model: &'a Llama<B>,
    plan: &'a Plan,
    pad: Option<Tensor<B, 1, Int>>,
    unpad: Option<Tensor<B, 1, Int>>,
    gather: Tensor<B, 1, Int>,
    /// `[S, 1, Tq·rep, Tk]`.
    bias: Tensor<B, 4>,
}

impl<'a, B: KvBackend> AttentionInputs<'a, B> {
    fn new(model: &'a Llama<B>, plan: &'a Plan) -> Self {
        let rep = model.cfg.num_heads / model.cfg.num_kv_heads;
        let (s, tq, tk) = (plan.num_seqs, plan.tq, plan.tk);
        Self {
            model,
            plan,
            pad: plan.pad.clone().map(|v| model.int1(v)),
            unpad: plan.unpad.clone().map(|v| model.int1(v)),
            gather: model.int1(plan.kv_gather.clone()),
            bias: Tensor::from_data(
                TensorData::new(plan.bias.clone(), [s, 1, tq * rep, tk]),
                &model.device,
            ),
        }
    }

    /// Causal grouped-query attention of the packed queries `q` (`[N, heads·hd]`, rotated) over each
    /// sequence's context in the stores; returns `[N, heads·hd]`.
    fn attend(&self, q: Tensor<B, 2>, keys: &Tensor<B, 2>, values: &Tensor<B, 2>) -> Tensor<B, 2> {
        let cfg = &self.model.cfg;
        let (s, tq, tk) = (self.plan.num_seqs, self.plan.tq, self.plan.tk);
        let (kvh, hd) = (cfg.num_kv_heads, cfg.head_dim);
        let rep = cfg.num_heads / kvh;
        let q = match &self.pad {
            Some(pad) => q.select(0, pad.clone()),
            None => q,
        };
        let scale = 1.0 / (hd as f64).sqrt();
        // [S·Tq, H·hd] -> [S, Tq, kvh, rep, hd] -> [S, kvh, Tq, rep, hd] -> [S, kvh, Tq·rep, hd]
        let q = (q * scale)
            .reshape([s, tq, kvh, rep, hd])
            .permute([0, 2, 1, 3, 4])
            .reshape([s, kvh, tq * rep, hd]);
        let k = keys
            .clone()
            .select(0, self.gather.clone())
            .reshape([s, tk, kvh, hd])
            .permute([0, 2, 3, 1]); // [S, kvh, hd, Tk]
        let v = values
            .clone()
            .select(0, self.gather.clone())
            .reshape([s, tk, kvh, hd])
            .swap_dims(1, 2); // [S, kvh, Tk, hd]
        let scores = q.matmul(k) + self.bias.clone(); // [S, kvh, Tq·rep, Tk]
        let out = softmax(scores, 3).matmul(v); // [S, kvh, Tq·rep, hd]
        let out = out
            .reshape([s, kvh, tq, rep, hd])
            .permute([0, 2, 1, 3, 4])
            .reshape([s * tq, kvh * rep * hd]);
        match &self.unpad {
            Some(unpad) => out.select(0, unpad.clone()),
            None => out,
        }
    }
}
