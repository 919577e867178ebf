//! Shared helpers of the property proofs: per-property proptest configuration (case counts and the
//! `@@prop` report line read by `cargo xtask verify`), and small log-space utilities written
//! independently of the crate under test.

use crate::catalog::CATALOG;
use proptest::test_runner::{Config, RngSeed};

/// Environment variable holding the base case count. (Not `PROPTEST_CASES`: proptest applies that
/// one to every test after our configuration, which would undo the per-property divisors.)
pub const CASES_VAR: &str = "LLM_AUCTION_CASES";

/// Base case count: `$LLM_AUCTION_CASES`, or 64.
fn base_cases() -> u32 {
    std::env::var(CASES_VAR)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64)
}

/// Number of cases property `id` runs with.
pub fn cases(id: &str) -> u32 {
    let prop = CATALOG
        .iter()
        .find(|p| p.id == id)
        .expect("property id is in the catalog");
    (base_cases() / prop.divisor).max(1)
}

/// The proptest configuration of property `id`; prints the report line `@@prop|id|cases|...` on
/// stderr (libtest owns stdout, so the two never interleave within a line).
///
/// The RNG seed is fixed unless `PROPTEST_RNG_SEED` is set, so CI runs are reproducible.
pub fn config(id: &str) -> Config {
    let prop = CATALOG
        .iter()
        .find(|p| p.id == id)
        .expect("property id is in the catalog");
    let n = cases(id);
    eprintln!("@@prop|{}|{}|{}|{}", prop.id, n, prop.property, prop.source);
    let mut cfg = Config {
        cases: n,
        max_shrink_iters: 2048,
        ..Config::default()
    };
    if std::env::var("PROPTEST_RNG_SEED").is_err() {
        cfg.rng_seed = RngSeed::Fixed(0x5EED_A0C7);
    }
    cfg
}

/// Prints the report line of a deterministic property (one case).
pub fn report_fixed(id: &str) {
    let prop = CATALOG
        .iter()
        .find(|p| p.id == id)
        .expect("property id is in the catalog");
    eprintln!("@@prop|{}|1|{}|{}", prop.id, prop.property, prop.source);
}

/// Independent log-sum-exp (not the crate's).
pub fn lse(xs: &[f64]) -> f64 {
    let m = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + xs.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// `s = 1 + max |x|` over several slices.
pub fn scale(parts: &[&[f64]]) -> f64 {
    1.0 + parts
        .iter()
        .flat_map(|p| p.iter())
        .fold(0.0f64, |m, x| m.max(x.abs()))
}

/// Dot product.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
