//! The native CPU forward pass: the flex backend's implementation of
//! [`ModelBackend::native_forward`](crate::backend::ModelBackend::native_forward), on the host slices
//! that back flex's tensors (no copies of the weights or the KV cache).
//!
//! - [`kernels`]: the one GEMM-like kernel (AVX-512, AVX2+FMA or portable, detected at run time),
//!   the crate's one `unsafe` module (beside the CUDA driver probe in `backend.rs`);
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
    use crate::error::Result;
    use crate::kv::KvCache;
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
        let weights = Weights {
            embed: s[0],
            norm: s[1],
            lm_head: s[2],
            layers: s[3..]
                .chunks(9)
                .map(|c| LayerWeights {
                    attn_norm: c[0],
                    wq: c[1],
                    wk: c[2],
                    wv: c[3],
                    wo: c[4],
                    mlp_norm: c[5],
                    w_gate: c[6],
                    w_up: c[7],
                    w_down: c[8],
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
