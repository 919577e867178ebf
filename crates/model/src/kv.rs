//! KV storage: per layer one key store and one value store of `num_slots` rows of width
//! `num_kv_heads · head_dim`. A slot holds one token's keys (values) for one layer. The caller (the
//! engine, or this crate's [`crate::standalone`]) decides which slots belong to which sequence through the
//! block tables of a [`crate::batch::ForwardBatch`]; the model only writes and gathers rows.

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// Key and value stores for every layer.
#[derive(Debug)]
pub struct KvCache<B: Backend> {
    pub(crate) keys: Vec<Tensor<B, 2>>,
    pub(crate) values: Vec<Tensor<B, 2>>,
    num_slots: usize,
    width: usize,
}

impl<B: Backend> KvCache<B> {
    /// Allocates `num_slots` zeroed slots per layer (memory: `2 · layers · slots · kv_dim · 4` bytes).
    ///
    /// # Errors
    /// [`ModelError::KvCapacity`] for zero slots or a size that would overflow.
    pub fn new(cfg: &LlamaConfig, num_slots: usize, device: &B::Device) -> Result<Self> {
        let width = cfg.kv_dim();
        let elems = num_slots
            .checked_mul(width)
            .filter(|&e| e > 0 && e < (1usize << 40));
        let Some(elems) = elems else {
            return Err(ModelError::KvCapacity {
                needed: num_slots.max(1),
                available: 0,
            });
        };
        let zeros = || {
            Tensor::<B, 2>::from_data(
                TensorData::new(vec![0f32; elems], [num_slots, width]),
                device,
            )
        };
        Ok(Self {
            keys: (0..cfg.num_layers).map(|_| zeros()).collect(),
            values: (0..cfg.num_layers).map(|_| zeros()).collect(),
            num_slots,
            width,
        })
    }

    /// Number of slots per layer.
    pub fn num_slots(&self) -> usize {
        self.num_slots
    }

    /// Row width (`num_kv_heads · head_dim`).
    pub fn width(&self) -> usize {
        self.width
    }

    /// Bytes held by the stores.
    pub fn bytes(&self) -> usize {
        2 * self.keys.len() * self.num_slots * self.width * 4
    }
}
