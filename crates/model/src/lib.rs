//! # llm-auction-model
//!
//! Llama in burn, generic over the [`burn::tensor::backend::Backend`]: the architecture
//! ([`llama`]), its weights from GGUF ([`gguf`], dequantised to `f32`) or Hugging Face safetensors
//! ([`weights`]), the tokenizer ([`tokenizer`]: `tokenizer.json` or rebuilt from GGUF metadata) and
//! chat template ([`chat`], minijinja), the default model fetched once with pip ([`fetch`]), a KV
//! cache and packed forward batches with per-token positions ([`kv`], [`batch`]), sampling with the
//! log-probabilities MOSAIC needs ([`sampling`], [`generation`], [`logits`]) and scoring and generation
//! of one request at a time without the engine ([`standalone`]).
//!
//! Backends are chosen by cargo feature ([`backend`]): `flex` (default, fastest CPU backend
//! measured), `ndarray`, and `cuda` (selected at run time).
//!
//! Load a model and score a continuation (here the tiny random model of the `testing` feature;
//! [`model::Model::load_default`] fetches SmolLM2-135M-Instruct instead):
//!
//! ```
//! use llm_auction_model::model::Model;
//! use llm_auction_model::generation::ScoreRequest;
//! use llm_auction_model::standalone::{StandaloneConfig, score};
//! use llm_auction_model::testing::{random_weights, tiny_config, write_gguf};
//! use llm_auction_model::CpuBackend;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("tiny.gguf");
//! write_gguf(&path, &tiny_config(), &random_weights(&tiny_config(), 1, false));
//! let model = Model::<CpuBackend>::load(&path, &Default::default(), &mut |_, _, _| {}).unwrap();
//! let req = ScoreRequest { prompt: vec![1, 2, 3], continuation: vec![4, 5] };
//! let out = score(&model.llama, &[req], &StandaloneConfig::default()).unwrap();
//! // log p(4 | 1 2 3) + log p(5 | 1 2 3 4): two finite log-probabilities below 0.
//! assert_eq!(out[0].token_logprobs.len(), 2);
//! assert!(out[0].token_logprobs.iter().all(|&lp| lp.is_finite() && lp < 0.0));
//! let sum: f64 = out[0].token_logprobs.iter().map(|&lp| f64::from(lp)).sum();
//! assert!((out[0].total_logprob - sum).abs() < 1e-9);
//! ```
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
pub mod generation;
pub mod gguf;
pub mod kv;
pub mod llama;
pub mod logits;
mod mapped;
pub mod model;
pub mod packed;
pub mod rope;
pub mod sampling;
pub mod standalone;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tokenizer;
pub mod weights;

pub use backend::{CpuBackend, DeviceChoice, ModelBackend};
pub use error::{ModelError, Result};
pub use llama::{Kernels, Llama};
pub use model::Model;
