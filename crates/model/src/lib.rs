//! # llm-auction-model
//!
//! Llama in burn, generic over the [`burn::tensor::backend::Backend`]: the architecture
//! ([`llama`]), its weights from GGUF ([`gguf`], dequantised to `f32`) or Hugging Face safetensors
//! ([`weights`]), the tokenizer ([`tokenizer`]: `tokenizer.json` or rebuilt from GGUF metadata) and
//! chat template ([`chat`], minijinja), the default model fetched once with pip ([`fetch`]), a KV
//! cache and packed forward batches with per-token positions ([`kv`], [`batch`]), sampling with the
//! log-probabilities MOSAIC needs ([`sampling`]) and batched scoring and generation ([`runner`]).
//!
//! Backends are chosen by cargo feature ([`backend`]): `flex` (default, fastest CPU backend
//! measured), `ndarray`, and `cuda` (selected at run time).
#![deny(missing_docs)]

pub mod atomic_file;
pub mod backend;
pub mod batch;
pub mod chat;
pub mod config;
pub mod cpu;
pub mod error;
pub mod export;
pub mod fetch;
pub mod gguf;
pub mod kv;
pub mod llama;
mod mapped;
pub mod model;
pub mod rope;
pub mod runner;
pub mod sampling;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tokenizer;
pub mod weights;

pub use backend::{CpuBackend, DeviceChoice, KvBackend};
pub use error::{ModelError, Result};
pub use llama::{Kernels, Llama};
pub use model::Model;
