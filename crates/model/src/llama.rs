//! The Llama decoder, generic over burn's [`Backend`](burn::tensor::backend::Backend): token
//! embedding, `N` blocks of (RMSNorm → grouped-query attention over the KV cache → residual,
//! RMSNorm → SwiGLU → residual), a final RMSNorm and the LM head (tied to the embedding when the
//! checkpoint has none).
//!
//! Layout choices (measured on the CPU backends, see `docs/performance.md`): linear weights keep
//! the checkpoint's `[out, in]` layout. With many rows (prefill) a projection is `x · Wᵀ` on a
//! transposed view; with few rows (decoding) it is `(W · xᵀ)ᵀ`, which streams the weights about 1.3×
//! faster through the GEMM kernel, at the price of two tiny transposes. The LM head is the `[vocab, d]`
//! matrix itself (no second copy of the tied embedding). Attention pads the batch to `[S, Tq]` queries against `[S, Tk]` gathered context rows and
//! folds the query heads of each KV group into the row dimension (`[S, kv_heads, Tq·rep, head_dim]`),
//! so K/V are never repeated; the causal/padding bias is built at the full score shape, because
//! broadcasting element-wise ops take a slow path on the CPU backends.

use crate::backend::ModelBackend;
use crate::batch::{ForwardBatch, Plan};
use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::kv::KvCache;
use crate::packed::PackedMatrix;
use crate::rope::Rope;
use crate::weights::{HostTensor, WeightSource, layer_name};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Int, Tensor, TensorData};

/// One decoder block's weights; every matrix is `[out, in]`.
#[derive(Debug, Clone)]
pub(crate) struct Block<B: ModelBackend> {
    pub(crate) attn_norm: Tensor<B, 1>,
    pub(crate) wq: Tensor<B, 2>,
    pub(crate) wk: Tensor<B, 2>,
    pub(crate) wv: Tensor<B, 2>,
    pub(crate) wo: Tensor<B, 2>,
    pub(crate) mlp_norm: Tensor<B, 1>,
    pub(crate) w_gate: Tensor<B, 2>,
    pub(crate) w_up: Tensor<B, 2>,
    pub(crate) w_down: Tensor<B, 2>,
}

/// A loaded Llama model on one device.
#[derive(Debug, Clone)]
pub struct Llama<B: ModelBackend> {
    cfg: LlamaConfig,
    /// `[vocab, d]`.
    pub(crate) embed: Tensor<B, 2>,
    pub(crate) blocks: Vec<Block<B>>,
    pub(crate) norm: Tensor<B, 1>,
    /// `[vocab, d]` (the embedding itself when tied).
    pub(crate) lm_head: Tensor<B, 2>,
    pub(crate) rope: Rope,
    /// The linear weights in their file's block format, where it has one the native CPU pass
    /// reads (empty on other backends).
    pub(crate) packed: std::sync::Arc<PackedWeights>,
    device: B::Device,
    kernels: Kernels,
    /// Floating-point operations of the useful work of every pass so far ([`Self::flops`]).
    flops: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// One block's linear weights in a block format ([`crate::packed`]), each where the file had one.
#[derive(Debug, Default)]
pub(crate) struct PackedLayer {
    pub(crate) wq: Option<PackedMatrix>,
    pub(crate) wk: Option<PackedMatrix>,
    pub(crate) wv: Option<PackedMatrix>,
    pub(crate) wo: Option<PackedMatrix>,
    pub(crate) w_gate: Option<PackedMatrix>,
    pub(crate) w_up: Option<PackedMatrix>,
    pub(crate) w_down: Option<PackedMatrix>,
}

/// The block-format weights of a model: one [`PackedLayer`] per block (or none), and the LM head.
#[derive(Debug, Default)]
pub(crate) struct PackedWeights {
    pub(crate) layers: Vec<PackedLayer>,
    pub(crate) lm_head: Option<PackedMatrix>,
}

/// Which implementation runs [`Llama::forward`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kernels {
    /// The backend's native pass where it has one (the flex CPU backend: [`crate::cpu`]), else
    /// burn tensor ops.
    ///
    /// On the native pass, weights that the file stores as Q4_1 or Q8_0 are read in that form and
    /// expanded to the same `f32` values right before each product (decoding streams a quarter
    /// of the bytes; the results are bitwise those of [`Kernels::NativeF32`]).
    #[default]
    Native,
    /// The native pass on the dequantised `f32` weights only (the "before" of the block-format
    /// weights; the same results).
    NativeF32,
    /// burn tensor ops on every backend (the reference, and the "before" of the benchmarks).
    Burn,
}

impl std::str::FromStr for Kernels {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "native" => Ok(Kernels::Native),
            "native-f32" => Ok(Kernels::NativeF32),
            "burn" => Ok(Kernels::Burn),
            _ => Err(ModelError::param(
                "kernels",
                format!("unknown kernels {s:?}; use native, native-f32 or burn"),
            )),
        }
    }
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

/// Up to this many rows, projections use the `(W · xᵀ)ᵀ` form (see the module docs).
const SMALL_BATCH_ROWS: usize = 64;

/// `x · Wᵀ` for `x` `[n, in]` and `W` `[out, in]`: `[n, out]`, contiguous.
fn linear<B: ModelBackend>(x: Tensor<B, 2>, w: &Tensor<B, 2>) -> Tensor<B, 2> {
    let [n, inp] = x.dims();
    if n <= SMALL_BATCH_ROWS {
        let [out, _] = w.dims();
        let xt = x.transpose().reshape([inp, n]);
        w.clone().matmul(xt).transpose().reshape([n, out])
    } else {
        x.matmul(w.clone().transpose())
    }
}

impl<B: ModelBackend> Llama<B> {
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
        let total = 2 + 9 * cfg.num_layers + usize::from(src.contains("lm_head.weight"));
        let mut done = 0usize;
        let mut get = |name: String, shape: &[usize]| -> Result<HostTensor> {
            progress(&name, done, total);
            done += 1;
            let t = src.tensor(&name)?;
            expect_shape(&name, &t, shape)?;
            Ok(t)
        };
        let t1 = |data: Vec<f32>| {
            let n = data.len();
            Tensor::<B, 1>::from_data(TensorData::new(data, [n]), device)
        };

        let embed_host = get("model.embed_tokens.weight".into(), &[vocab, d])?.data;
        // The layer count comes from the file's metadata: its last layer must be in the file
        // before anything is sized by it (a count of 2^32 - 1 would otherwise allocate first).
        let last = layer_name(cfg.num_layers - 1, "input_layernorm.weight");
        if !src.contains(&last) {
            return Err(ModelError::Config {
                origin: "model".into(),
                message: format!(
                    "num_layers is {} but the weights have no tensor {last}",
                    cfg.num_layers
                ),
            });
        }
        // Block-format copies only where a native pass can read them.
        let packed = |name: &str| -> Result<Option<PackedMatrix>> {
            if B::NATIVE_FORWARD {
                src.packed(name)
            } else {
                Ok(None)
            }
        };
        // A matrix, then its block-format copy (after the f32 one, so a bad tensor fails with the
        // f32 loader's error first). Only a matrix without blocks, on a backend with the native
        // pass, is copied to aligned storage: the native kernels read the blocks where there are
        // any, and the other backends copy the data into their own storage anyway.
        let matrix = |data: Vec<f32>, shape: [usize; 2], blocks: &Option<PackedMatrix>| {
            let data = if B::NATIVE_FORWARD && blocks.is_none() {
                aligned_data(&data, shape)
            } else {
                TensorData::new(data, shape)
            };
            Tensor::<B, 2>::from_data(data, device)
        };
        let mat = |get: &mut dyn FnMut(String, &[usize]) -> Result<HostTensor>,
                   name: String,
                   shape: [usize; 2]|
         -> Result<(Tensor<B, 2>, Option<PackedMatrix>)> {
            let t = get(name.clone(), &shape)?;
            let p = packed(&name)?;
            Ok((matrix(t.data, shape, &p), p))
        };
        // The embedding is also the LM head when the weights are tied and there is no separate
        // head: then its block-format copy, and it is aligned only if it has none.
        let tied = !src.contains("lm_head.weight") && cfg.tie_word_embeddings;
        let tied_head = if tied {
            packed("model.embed_tokens.weight")?
        } else {
            None
        };
        let embed = if tied {
            matrix(embed_host, [vocab, d], &tied_head)
        } else {
            // Only looked up by row.
            Tensor::<B, 2>::from_data(TensorData::new(embed_host, [vocab, d]), device)
        };
        let mut packed_layers = Vec::new();
        let mut blocks = Vec::new();
        for i in 0..cfg.num_layers {
            let n = |suffix: &str| layer_name(i, suffix);
            let attn_norm = t1(get(n("input_layernorm.weight"), &[d])?.data);
            let (wq, pq) = mat(&mut get, n("self_attn.q_proj.weight"), [q, d])?;
            let (wk, pk) = mat(&mut get, n("self_attn.k_proj.weight"), [kv, d])?;
            let (wv, pv) = mat(&mut get, n("self_attn.v_proj.weight"), [kv, d])?;
            let (wo, po) = mat(&mut get, n("self_attn.o_proj.weight"), [d, q])?;
            let mlp_norm = t1(get(n("post_attention_layernorm.weight"), &[d])?.data);
            let (w_gate, pg) = mat(&mut get, n("mlp.gate_proj.weight"), [ffn, d])?;
            let (w_up, pu) = mat(&mut get, n("mlp.up_proj.weight"), [ffn, d])?;
            let (w_down, pd) = mat(&mut get, n("mlp.down_proj.weight"), [d, ffn])?;
            blocks.push(Block {
                attn_norm,
                wq,
                wk,
                wv,
                wo,
                mlp_norm,
                w_gate,
                w_up,
                w_down,
            });
            packed_layers.push(PackedLayer {
                wq: pq,
                wk: pk,
                wv: pv,
                wo: po,
                w_gate: pg,
                w_up: pu,
                w_down: pd,
            });
        }
        let norm = t1(get("model.norm.weight".into(), &[d])?.data);
        let (lm_head, packed_head) = if src.contains("lm_head.weight") {
            mat(&mut get, "lm_head.weight".into(), [vocab, d])?
        } else if tied {
            (embed.clone(), tied_head)
        } else {
            return Err(ModelError::MissingTensor {
                name: "lm_head.weight".into(),
            });
        };
        progress("done", total, total);
        Ok(Self {
            rope: Rope::new(&cfg),
            embed,
            blocks,
            norm,
            lm_head,
            packed: std::sync::Arc::new(PackedWeights {
                layers: packed_layers,
                lm_head: packed_head,
            }),
            device: device.clone(),
            cfg,
            kernels: Kernels::default(),
            flops: Default::default(),
        })
    }

    /// Floating-point operations of the useful work of every successful [`Self::forward`] of this
    /// model (and its clones) so far: per token and layer `2·d·(q + 2·kv) + 2·q·d + 4·d·ffn +
    /// 2·ffn·d` for the projections and `4·(p + 1)·q` for attention over its `p + 1` visible
    /// positions, plus `2·vocab·d` per logits row. Benchmarks divide by the measured GEMM peak to
    /// get a time bound.
    pub fn flops(&self) -> u64 {
        self.flops.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn pass_flops(&self, batch: &ForwardBatch) -> u64 {
        let c = &self.cfg;
        let (d, q, kv, ffn) = (
            c.hidden_size as u64,
            c.q_dim() as u64,
            c.kv_dim() as u64,
            c.intermediate_size as u64,
        );
        let linear = 2 * d * (q + 2 * kv) + 2 * q * d + 4 * d * ffn + 2 * ffn * d;
        let attention: u64 = batch
            .positions
            .iter()
            .map(|&p| 4 * (p as u64 + 1) * q)
            .sum();
        let per_layer = batch.tokens.len() as u64 * linear + attention;
        c.num_layers as u64 * per_layer
            + batch.logits_rows.len() as u64 * 2 * c.vocab_size as u64 * d
    }

    /// Runs `kernels` from now on.
    pub fn set_kernels(&mut self, kernels: Kernels) {
        self.kernels = kernels;
    }

    /// The same model running `kernels`.
    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        self.set_kernels(kernels);
        self
    }

    /// The kernels [`Self::forward`] runs.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// Whether each row's logits are bitwise independent of the other rows of its batch (and of
    /// how a sequence's tokens were split into passes): true for the native CPU pass
    /// ([`crate::cpu`]), whose every reduction has a fixed order per row.
    pub fn batch_invariant(&self) -> bool {
        matches!(self.kernels, Kernels::Native | Kernels::NativeF32) && B::NATIVE_FORWARD
    }

    /// How many weight matrices [`Kernels::Native`] reads in their file's block format (Q4_1 or
    /// Q8_0, [`crate::packed`]) instead of as `f32`; 0 for files without such tensors and on
    /// backends without a native pass.
    pub fn packed_matrices(&self) -> usize {
        let p = &self.packed;
        let per_layer = |l: &PackedLayer| {
            [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down]
                .iter()
                .filter(|m| m.is_some())
                .count()
        };
        p.layers.iter().map(per_layer).sum::<usize>() + usize::from(p.lm_head.is_some())
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

    /// RMSNorm over the last dimension: `x / sqrt(mean(x²) + ε) · w`. (A true division, not a
    /// multiplication by `recip()`: burn-ndarray's vectorised reciprocal is an approximation good to
    /// about 1e-4, which made batched results depend on the batch.)
    fn rms_norm(&self, x: Tensor<B, 2>, w: &Tensor<B, 1>) -> Tensor<B, 2> {
        let rms = (x.clone().square().mean_dim(1) + self.cfg.rms_norm_eps as f64).sqrt();
        x / rms * w.clone().unsqueeze()
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
        if cache.keys.len() != cfg.num_layers || cache.width() != cfg.kv_dim() {
            return Err(ModelError::Batch {
                field: "cache",
                problem: "the KV cache was made for another model".into(),
            });
        }
        let out = self.forward_pass(batch, cache)?;
        self.flops
            .fetch_add(self.pass_flops(batch), std::sync::atomic::Ordering::Relaxed);
        Ok(out)
    }

    fn forward_pass(&self, batch: &ForwardBatch, cache: &mut KvCache<B>) -> Result<Tensor<B, 2>> {
        let cfg = &self.cfg;
        if matches!(self.kernels, Kernels::Native | Kernels::NativeF32)
            && let Some(out) = B::native_forward(self, batch, cache)
        {
            return out;
        }
        let rep = cfg.num_heads / cfg.num_kv_heads;
        let plan = batch.plan(cfg.vocab_size, cfg.max_position, cache.num_slots(), rep)?;
        let n = batch.tokens.len();
        let (q, kv, hd) = (cfg.q_dim(), cfg.kv_dim(), cfg.head_dim);
        let ids = self.int1(batch.tokens.iter().map(|&t| t as i64).collect());
        let mut x = self.embed.clone().select(0, ids); // [N, d]
        let rope_q = self
            .rope
            .rows::<B>(&batch.positions, cfg.num_heads, &self.device);
        let rope_k = self
            .rope
            .rows::<B>(&batch.positions, cfg.num_kv_heads, &self.device);
        let num_slots = cache.num_slots();
        let groups = attention_groups(batch, |b| {
            b.plan(cfg.vocab_size, cfg.max_position, num_slots, rep)
        })?;
        let atts: Vec<GroupInputs<'_, B>> = if groups.is_empty() {
            vec![(None, AttentionInputs::new(self, &plan))]
        } else {
            groups
                .iter()
                .map(|(rows, p)| (Some(self.int1(rows.clone())), AttentionInputs::new(self, p)))
                .collect()
        };
        let inverse = (!groups.is_empty()).then(|| {
            let mut inv = vec![0i64; n];
            let order = groups.iter().flat_map(|(r, _)| r);
            for (k, &row) in order.enumerate() {
                inv[row as usize] = k as i64;
            }
            self.int1(inv)
        });
        for (l, block) in self.blocks.iter().enumerate() {
            let h = self.rms_norm(x.clone(), &block.attn_norm);
            let hq = linear(h.clone(), &block.wq).reshape([n, cfg.num_heads, hd]);
            let hk = linear(h.clone(), &block.wk).reshape([n, cfg.num_kv_heads, hd]);
            let hv = linear(h, &block.wv);
            let hq = rope_q.apply(hq).reshape([n, q]);
            let hk = rope_k.apply(hk).reshape([n, kv]);
            let keys = std::mem::replace(&mut cache.keys[l], Tensor::empty([0, 0], &self.device));
            cache.keys[l] = B::write_rows(keys, &plan.slot_mapping, hk)?;
            let values =
                std::mem::replace(&mut cache.values[l], Tensor::empty([0, 0], &self.device));
            cache.values[l] = B::write_rows(values, &plan.slot_mapping, hv)?;
            let (keys, values) = (&cache.keys[l], &cache.values[l]);
            let o = match &inverse {
                None => atts[0].1.attend(hq, keys, values), // [N, q]
                Some(inv) => {
                    let parts = atts
                        .iter()
                        .map(|(rows, att)| {
                            let q = match rows {
                                Some(r) => hq.clone().select(0, r.clone()),
                                None => hq.clone(),
                            };
                            att.attend(q, keys, values)
                        })
                        .collect();
                    Tensor::cat(parts, 0).select(0, inv.clone())
                }
            };
            x = x + linear(o, &block.wo);
            let h = self.rms_norm(x.clone(), &block.mlp_norm);
            let m = silu(linear(h.clone(), &block.w_gate)) * linear(h, &block.w_up);
            x = x + linear(m, &block.w_down);
        }
        if batch.logits_rows.is_empty() {
            return Ok(Tensor::empty([0, cfg.vocab_size], &self.device));
        }
        let rows = self.int1(batch.logits_rows.iter().map(|&r| r as i64).collect());
        let last = self.rms_norm(x.select(0, rows), &self.norm);
        Ok(linear(last, &self.lm_head))
    }
}

/// Sequences grouped by the size class of their query chunk (decode tokens, then chunks of 2-4,
/// 5-16, 17-64, ... tokens), each group with its own attention plan, so that no sequence is padded
/// to a much longer chunk or context of another (a decode row beside a 100-token prefill chunk
/// would otherwise compute 100 padded query rows). Returns the packed rows and the plan of each
/// group; none when every sequence is in one class (the batch's own plan serves).
fn attention_groups(
    batch: &ForwardBatch,
    make: impl Fn(&ForwardBatch) -> Result<Plan>,
) -> Result<Vec<(Vec<i64>, Plan)>> {
    let class = |n: usize| {
        let mut c = 0;
        let mut bound = 1;
        while n > bound {
            bound *= 4;
            c += 1;
        }
        c
    };
    let mut by_class: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for s in 0..batch.num_seqs() {
        let n = batch.seq_starts[s + 1] - batch.seq_starts[s];
        by_class.entry(class(n)).or_default().push(s);
    }
    if by_class.len() == 1 {
        return Ok(vec![]);
    }
    by_class
        .values()
        .map(|seqs| {
            let mut sub = ForwardBatch {
                block_size: batch.block_size,
                seq_starts: vec![0],
                ..Default::default()
            };
            let mut rows = Vec::new();
            for &s in seqs {
                for r in batch.seq_starts[s]..batch.seq_starts[s + 1] {
                    sub.tokens.push(batch.tokens[r]);
                    sub.positions.push(batch.positions[r]);
                    rows.push(r as i64);
                }
                sub.seq_starts.push(sub.tokens.len());
                sub.block_tables.push(batch.block_tables[s].clone());
            }
            Ok((rows, make(&sub)?))
        })
        .collect()
}

/// One attention group's packed rows (`None`: all of them) and inputs.
type GroupInputs<'a, B> = (Option<Tensor<B, 1, Int>>, AttentionInputs<'a, B>);

/// Per-pass attention inputs shared by all layers: padding indices, context gather indices, bias.
struct AttentionInputs<'a, B: ModelBackend> {
    model: &'a Llama<B>,
    plan: &'a Plan,
    pad: Option<Tensor<B, 1, Int>>,
    unpad: Option<Tensor<B, 1, Int>>,
    gather: Tensor<B, 1, Int>,
    /// `[S, kv_heads, Tq·rep, Tk]`.
    bias: Tensor<B, 4>,
}

impl<'a, B: ModelBackend> AttentionInputs<'a, B> {
    fn new(model: &'a Llama<B>, plan: &'a Plan) -> Self {
        let kvh = model.cfg.num_kv_heads;
        let rep = model.cfg.num_heads / kvh;
        let (s, tq, tk) = (plan.num_seqs, plan.tq, plan.tk);
        // The plan's bias is [S, Tq·rep, Tk]; repeat it over the KV heads at full shape.
        let per_seq = tq * rep * tk;
        let mut bias = Vec::with_capacity(s * kvh * per_seq);
        for chunk in plan.bias.chunks(per_seq) {
            for _ in 0..kvh {
                bias.extend_from_slice(chunk);
            }
        }
        Self {
            model,
            plan,
            pad: plan.pad.clone().map(|v| model.int1(v)),
            unpad: plan.unpad.clone().map(|v| model.int1(v)),
            gather: model.int1(plan.kv_gather.clone()),
            bias: Tensor::from_data(TensorData::new(bias, [s, kvh, tq * rep, tk]), &model.device),
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
        // (with Tq = 1, as in decoding, the permutation moves a unit dimension: a plain reshape).
        let q = q * scale;
        let q = if tq == 1 {
            q.reshape([s, kvh, rep, hd])
        } else {
            q.reshape([s, tq, kvh, rep, hd])
                .permute([0, 2, 1, 3, 4])
                .reshape([s, kvh, tq * rep, hd])
        };
        let gathered = |store: &Tensor<B, 2>| {
            store
                .clone()
                .select(0, self.gather.clone())
                .reshape([s, tk, kvh, hd])
        };
        let k = gathered(keys).permute([0, 2, 3, 1]); // [S, kvh, hd, Tk]
        let v = gathered(values).swap_dims(1, 2); // [S, kvh, Tk, hd]
        let scores = q.matmul(k) + self.bias.clone(); // [S, kvh, Tq·rep, Tk]
        let out = softmax(scores, 3).matmul(v); // [S, kvh, Tq·rep, hd]
        let out = if tq == 1 {
            out.reshape([s, kvh * rep * hd])
        } else {
            out.reshape([s, kvh, tq, rep, hd])
                .permute([0, 2, 1, 3, 4])
                .reshape([s * tq, kvh * rep * hd])
        };
        match &self.unpad {
            Some(unpad) => out.select(0, unpad.clone()),
            None => out,
        }
    }
}

/// A weight matrix as tensor data whose first element starts a cache line: flex keeps these bytes
/// as the tensor's storage (the other backends copy them), and the native kernels' vector loads of
/// its rows then stay within one line each ([`crate::cpu::kernels::Aligned`]).
fn aligned_data(data: &[f32], shape: [usize; 2]) -> TensorData {
    struct Owner(crate::cpu::kernels::Aligned);
    impl AsRef<[u8]> for Owner {
        fn as_ref(&self) -> &[u8] {
            bytemuck::cast_slice(&self.0)
        }
    }
    let v = crate::cpu::kernels::Aligned::from_slice(64, data);
    let bytes = burn::tensor::Bytes::from_shared(
        bytes::Bytes::from_owner(Owner(v)),
        burn::tensor::AllocationProperty::Native,
    );
    TensorData::from_bytes(bytes, shape, burn::tensor::DType::F32)
}

#[cfg(test)]
mod tests {
    #[test]
    fn weight_data_starts_a_cache_line_and_keeps_its_values() {
        let values: Vec<f32> = (0..35).map(|i| i as f32 * 0.5 - 3.0).collect();
        let data = super::aligned_data(&values, [5, 7]);
        assert_eq!(data.shape.as_slice(), &[5, 7]);
        let slice = data.as_slice::<f32>().expect("f32 data");
        assert_eq!(slice, &values[..]);
        assert_eq!(slice.as_ptr() as usize % 64, 0);
        #[cfg(feature = "flex")]
        {
            // flex keeps the bytes as the tensor's storage, so the kernels see the alignment.
            let t =
                burn::tensor::Tensor::<burn_flex::Flex, 2>::from_data(data, &Default::default());
            let host = t.into_primitive().tensor();
            let s = host.as_slice::<f32>().expect("contiguous f32");
            assert_eq!(s.as_ptr() as usize % 64, 0);
            assert_eq!(s, &values[..]);
        }
    }
}
