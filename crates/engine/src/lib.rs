//! # llm-auction-engine
//!
//! Scheduled, batched decoding on a Llama model, and the two auctions end to end.
//!
//! * [`engine`]: iteration-level scheduling (running first, then admission under a token budget and
//!   a sequence limit; chunked prefill mixed with decoding in one packed pass), a plain-data KV block
//!   allocator with exact-content prefix sharing ([`block`]), preemption by recompute, and groups of
//!   sequences that step together ([`request`]).
//! * [`runner`]: the model boundary — [`runner::BurnRunner`] for a real Llama,
//!   [`runner::MockRunner`] (a deterministic context hash) for scheduler tests.
//! * [`mosaic`]: MOSAIC (Soumalias, Curry, Seuken; Algorithms 1-2): candidates from a
//!   context-aware generator, scoring under the reference and every advertiser, rewards, Rochet
//!   payments, the seeded draw.
//! * [`token_auction`]: the token auction (Duetting et al.): one joint decoding of the agents'
//!   sequences with bid-weighted aggregation, stable sampling and per-token payments.
//! * [`experiment`]: the MOSAIC paper's experiments (one auction per query, seed and generator,
//!   every `M` evaluated on prefixes; resumable CSV results).
#![deny(missing_docs)]

pub mod auction_input;
pub mod block;
pub mod engine;
pub mod error;
pub mod experiment;
pub mod limits;
pub mod lm;
pub mod models_file;
pub mod mosaic;
pub mod registry;
pub mod remote;
pub mod request;
pub mod roles;
pub mod runner;
pub mod seq;
pub mod served;
pub mod task;
pub mod token_auction;

pub use engine::{Engine, EngineConfig, Owner, RequestId, StepStats};
pub use error::{EngineError, Result};
