//! Property proofs of both mechanisms: one proptest per property of `docs/mechanisms.md` §3 (M1-M18 for MOSAIC,
//! T1-T15 for the token auction), each named after its id and citing its source.
//!
//! `cargo test` runs them with a small case count (`LLM_AUCTION_CASES`, default 64; statistical
//! properties run a fraction of it, see [`catalog`]); `cargo xtask
//! verify` runs them with many cases and prints a table built from the `@@prop|...` lines that
//! [`support::config`] prints for every property.

mod catalog;
mod mosaic_props;
mod strategies;
mod support;
mod token_props;
