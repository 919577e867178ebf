//! `llm_auction._native`: the extension module behind the Python package `llm_auction`.
//!
//! A thin layer: numpy arrays in, the mechanism crate's functions, numpy arrays and dicts out
//! (`mechanism.rs`); the engine's auctions on local or remote models with the GIL released
//! (`auction.rs`). Validation is the Rust crates' own, so a bad input raises `ValueError` with the
//! same one-line message, naming the field, that the CLI prints. The Python modules in
//! `python/llm_auction/` wrap these functions into documented, typed functions and result classes.

use pyo3::prelude::*;

mod auction;
mod mechanism;

/// The module `llm_auction._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    mechanism::register(m)?;
    auction::register(m)?;
    Ok(())
}
