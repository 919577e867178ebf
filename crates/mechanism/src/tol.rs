//! Numeric policy: the tolerances used for validation and in the property proofs (`docs/mechanisms.md` §3).
//!
//! * Input validation: probability vectors must sum to one within [`SUM_EPS`] (absolute).
//! * Identities that hold exactly in real arithmetic are checked with an absolute error scaled by
//!   `s = 1 + max |input|` ([`scale`]): `|a - b| <= ABS_EPS * s`. Sequence log-probabilities are
//!   hundreds of nats, so a fixed absolute tolerance would be meaningless.
//! * Inequalities (convexity, bounds) get the slack [`INEQ_EPS`]` * s`.
//! * Probability vectors produced by this crate sum to one within [`OUTPUT_SUM_EPS`].

/// Allowed absolute deviation of an input probability vector's sum from 1.
pub const SUM_EPS: f64 = 1e-9;
/// Allowed absolute deviation of an output probability vector's sum from 1.
pub const OUTPUT_SUM_EPS: f64 = 1e-12;
/// Scaled absolute tolerance for identities (`≈` in `docs/mechanisms.md` §3).
pub const ABS_EPS: f64 = 1e-9;
/// Scaled slack for inequalities (convexity, payment and utility bounds).
pub const INEQ_EPS: f64 = 1e-12;

/// The scale `s = 1 + max |x|` over all given values (`docs/mechanisms.md` §3).
pub fn scale<'a>(values: impl IntoIterator<Item = &'a f64>) -> f64 {
    1.0 + values.into_iter().fold(0.0_f64, |m, v| m.max(v.abs()))
}

/// `|a - b| <= eps * s`.
pub fn close(a: f64, b: f64, eps: f64, s: f64) -> bool {
    (a - b).abs() <= eps * s
}
