//! # llm-auction-mechanism
//!
//! The pure mathematics of two mechanisms for auctions over what an LLM writes. Everything is `f64`,
//! every softmax and log-partition goes through log-sum-exp ([`logspace`]), every input is validated
//! once into a newtype and every failure is a typed [`Error`]. No ML dependency: vectors of numbers in,
//! vectors of numbers out.
//!
//! * **Token auction** \[DMPXZ24\] (Duetting, Mirrokni, Paes Leme, Xu, Zuo, WWW 2024):
//!   [`dist::Distribution`], bid-weighted [`aggregate`] (linear and log-linear, §1.1 of `docs/mechanisms.md`),
//!   stable sampling with critical bids ([`stable`]: the exponential race, construction B, and the
//!   two-token thresholds, construction C) and per-token payment rules ([`token_auction`]).
//! * **MOSAIC** \[SCS25\] (Soumalias, Curry, Seuken, NeurIPS 2025): the importance-weighted softmax
//!   allocation (Eq. 8 / Alg. 2), Rochet payments with the agent-specific offset (Eq. 10 + Eq. 13),
//!   ex-interim utilities (Lemma 5.5), welfare terms ([`mosaic`]); rewards from LLM log-probabilities
//!   (Eq. 11, [`rewards`]); the KL-regularised objective and its optimum (Eq. 1-2, [`objective`]); the
//!   experiments' metrics (Eq. 19, [`metrics`]).
//!
//! Equation numbers refer to arXiv 2405.05905v1 for MOSAIC and to the constructions of
//! `docs/mechanisms.md` for the token auction; `docs/references.md` resolves the tags.
//!
//! ```
//! use llm_auction_mechanism::{mosaic::{Mosaic, RewardMatrix}};
//! let rewards = RewardMatrix::from_rows(&[vec![1.0, 2.0, 3.0], vec![0.0, 0.0, 0.0]]).unwrap();
//! let out = Mosaic::new(1.0).unwrap().run(&rewards, None).unwrap();
//! // Lemma 5.2: an agent with zero rewards pays nothing and gains nothing.
//! assert_eq!(out.payments[1], 0.0);
//! assert_eq!(out.utilities[1], 0.0);
//! ```
#![deny(missing_docs)]

pub mod aggregate;
pub mod dist;
pub mod error;
#[cfg(feature = "json")]
pub mod json;
pub mod logspace;
pub mod metrics;
pub mod mosaic;
pub mod objective;
pub mod rewards;
pub mod rng;
pub mod stable;
#[cfg(feature = "testing")]
pub mod testing;
pub mod token_auction;
pub mod tol;

pub use error::{Error, Result};
