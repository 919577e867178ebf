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
//! * [`lm`]: the request-level model interface the auctions run on (a local engine, a remote
//!   vLLM or llama.cpp server); [`lm`]'s docs run one auction over a local model.
//!
//! Submit requests and step the engine (here on the deterministic [`runner::MockRunner`]; a
//! [`runner::BurnRunner`] runs a real Llama the same way):
//!
//! ```
//! use llm_auction_engine::engine::{Engine, EngineConfig};
//! use llm_auction_engine::request::{GenerateRequest, Request, ScoreRequest};
//! use llm_auction_engine::runner::MockRunner;
//! use llm_auction_model::sampling::SamplingParams;
//!
//! let mut engine = Engine::new(MockRunner::new(64, 256), EngineConfig::default()).unwrap();
//! let generation = engine
//!     .submit(Request::Generate(GenerateRequest {
//!         prompt: vec![1, 2, 3],
//!         params: SamplingParams::greedy(),
//!         max_new_tokens: 5,
//!         stop: vec![],
//!         seed: 7,
//!     }))
//!     .unwrap();
//! let scored = engine
//!     .submit(Request::Score(ScoreRequest { prompt: vec![1, 2], continuation: vec![3, 4] }))
//!     .unwrap();
//! // Both requests share every forward pass until each is done.
//! while engine.has_unfinished() {
//!     engine.step();
//! }
//! let g = engine.take_outcome(generation).unwrap().unwrap().generated().unwrap();
//! assert_eq!(g.tokens.len(), 5);
//! let s = engine.take_outcome(scored).unwrap().unwrap().scored().unwrap();
//! assert_eq!(s.token_logprobs.len(), 2);
//! // Every KV block is free again.
//! assert_eq!(engine.allocator().num_free(), engine.config().num_blocks);
//! ```
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
