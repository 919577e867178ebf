//! The native CPU forward pass: the flex backend's implementation of
//! [`ModelBackend::native_forward`](crate::backend::ModelBackend::native_forward), on the host slices
//! that back flex's tensors (no copies of the weights or the KV cache).
//!
//! - [`kernels`]: the one GEMM-like kernel (AVX-512, AVX2+FMA or portable, detected at run time),
//!   the crate's one `unsafe` module (beside the CUDA driver probe in `backend.rs`); it reads a
//!   weight as `f32` or in its file's Q4_1/Q8_0 blocks ([`crate::packed`]), expanded a few rows at
//!   a time to the loader's exact `f32` values right before the product; and the vector
//!   exponentials of softmax and SiLU;
//! - `ops`: RMSNorm, SwiGLU and the causal softmax, row by row;
//! - `forward`: the network, its fused attention and the thread split.
//!
//! `docs/performance.md` has the measurements that shaped it.

pub mod kernels;

#[cfg(feature = "flex")]
mod forward;
#[cfg(feature = "flex")]
mod ops;

#[cfg(feature = "flex")]
pub(crate) use flex::forward;

#[cfg(feature = "flex")]
mod flex {
    use super::forward::{LayerWeights, Stores, Weights};
    use super::kernels::{Mat, Weight};
    use crate::Kernels;
    use crate::error::Result;
    use crate::kv::KvCache;
    use crate::packed::PackedMatrix;
    use crate::{batch::ForwardBatch, llama::Llama};
    use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};
    use burn_flex::{Flex, FlexTensor};

    fn host<const D: usize>(t: &Tensor<Flex, D>) -> FlexTensor {
        t.clone().into_primitive().tensor()
    }

    fn usable(t: &FlexTensor) -> bool {
        t.dtype() == DType::F32 && t.as_slice::<f32>().is_some()
    }

    /// The native pass on flex; `None` when a tensor is not a contiguous `f32` buffer (then the
    /// burn-op pass runs).
    pub(crate) fn forward(
        model: &Llama<Flex>,
        batch: &ForwardBatch,
        cache: &mut KvCache<Flex>,
    ) -> Option<Result<Tensor<Flex, 2>>> {
        let cfg = model.config();
        let layout = match batch.layout(cfg.vocab_size, cfg.max_position, cache.num_slots()) {
            Ok(l) => l,
            Err(e) => return Some(Err(e)),
        };
        let mut held = vec![host(&model.embed), host(&model.norm), host(&model.lm_head)];
        for b in &model.blocks {
            held.extend([
                host(&b.attn_norm),
                host(&b.wq),
                host(&b.wk),
                host(&b.wv),
                host(&b.wo),
                host(&b.mlp_norm),
                host(&b.w_gate),
                host(&b.w_up),
                host(&b.w_down),
            ]);
        }
        let all_usable = held.iter().all(usable)
            && cache
                .keys
                .iter()
                .chain(&cache.values)
                .all(|t| usable(&host(t)));
        if !all_usable {
            return None;
        }
        let s: Vec<&[f32]> = held.iter().filter_map(|t| t.as_slice::<f32>()).collect();
        // Block-format weights unless the f32 ones were asked for.
        let packed = (model.kernels() == Kernels::Native).then_some(&*model.packed);
        let (d, ffn) = (cfg.hidden_size, cfg.intermediate_size);
        // A matrix of `inner`-wide rows: its packed copy where there is one.
        fn by_in<'a>(
            dense: &'a [f32],
            inner: usize,
            p: Option<&'a Option<PackedMatrix>>,
        ) -> Weight<'a> {
            match p.and_then(Option::as_ref) {
                Some(p) if p.cols() == inner && p.rows() * inner == dense.len() => {
                    Weight::Packed(p)
                }
                _ => Weight::Dense(Mat::dense(dense, dense.len() / inner, inner)),
            }
        }
        let layer = |i: usize| packed.and_then(|p| p.layers.get(i));
        let weights = Weights {
            embed: s[0],
            norm: s[1],
            lm_head: by_in(s[2], d, packed.map(|p| &p.lm_head)),
            layers: s[3..]
                .chunks(9)
                .enumerate()
                .map(|(i, c)| {
                    let l = layer(i);
                    LayerWeights {
                        attn_norm: c[0],
                        wq: by_in(c[1], d, l.map(|l| &l.wq)),
                        wk: by_in(c[2], d, l.map(|l| &l.wk)),
                        wv: by_in(c[3], d, l.map(|l| &l.wv)),
                        wo: by_in(c[4], cfg.q_dim(), l.map(|l| &l.wo)),
                        mlp_norm: c[5],
                        w_gate: by_in(c[6], d, l.map(|l| &l.w_gate)),
                        w_up: by_in(c[7], d, l.map(|l| &l.w_up)),
                        w_down: by_in(c[8], ffn, l.map(|l| &l.w_down)),
                    }
                })
                .collect(),
        };
        let take = |v: &mut Vec<Tensor<Flex, 2>>| -> Vec<FlexTensor> {
            std::mem::take(v)
                .into_iter()
                .map(|t| t.into_primitive().tensor())
                .collect()
        };
        let (mut keys, mut values) = (take(&mut cache.keys), take(&mut cache.values));
        // Uniquely owned (the cache's own), so `storage_mut` does not copy.
        let mut stores: Vec<Stores<'_>> = keys
            .iter_mut()
            .zip(values.iter_mut())
            .map(|(k, v)| Stores {
                keys: k.storage_mut::<f32>(),
                values: v.storage_mut::<f32>(),
            })
            .collect();
        let isa = super::kernels::isa();
        // The whole pass runs on one of rayon's workers, so each parallel step inside it is a
        // hand-off between workers that are still spinning, not a wake-up of this thread.
        let logits = rayon::scope(|_| {
            super::forward::forward(isa, cfg, &model.rope, &weights, batch, &layout, &mut stores)
        });
        drop(stores);
        let back = |v: Vec<FlexTensor>| -> Vec<Tensor<Flex, 2>> {
            v.into_iter()
                .map(|t| Tensor::from_primitive(TensorPrimitive::Float(t)))
                .collect()
        };
        cache.keys = back(keys);
        cache.values = back(values);
        let rows = batch.logits_rows.len();
        Some(Ok(Tensor::from_data(
            TensorData::new(logits, [rows, cfg.vocab_size]),
            model.device(),
        )))
    }
}
