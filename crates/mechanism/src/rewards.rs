//! Advertiser rewards from LLM log-probabilities (\[SCS25\] Eq. 11 / Eq. 17, the DPO inversion).
//!
//! An advertiser whose LLM `π_i` is the KL-regularised optimum for reward `r_i` against `π_ref` has
//! `r_i(x, y) = τ_i log(π_i(y|x) / π_ref(y|x)) + log Z_i(x)`. The constant `c_i = log Z_i(x)` shifts
//! the rewards of every candidate equally and changes neither the allocation nor the payment
//! (`math.md` M10). Sequence log-probabilities are sums of token log-probabilities.

use crate::error::{Error, Result};

/// `r_i(y) = τ_i (log π_i(y) - log π_ref(y)) + c_i` for whole-sequence log-probabilities (Eq. 11).
///
/// # Errors
/// [`Error::NonPositive`] for a bad `τ_i`; [`Error::NonFinite`] for non-finite inputs or results.
pub fn reward_from_logprobs(tau_i: f64, log_pi_i: f64, log_pi_ref: f64, c_i: f64) -> Result<f64> {
    if !(tau_i.is_finite() && tau_i > 0.0) {
        return Err(Error::NonPositive {
            field: "tau_i".into(),
            value: tau_i,
        });
    }
    for (field, v) in [
        ("log_pi_i", log_pi_i),
        ("log_pi_ref", log_pi_ref),
        ("c_i", c_i),
    ] {
        if !v.is_finite() {
            return Err(Error::non_finite(field, v));
        }
    }
    Ok(tau_i * (log_pi_i - log_pi_ref) + c_i)
}

/// Eq. 11 from per-token log-probabilities of the same sequence under `π_i` and `π_ref`:
/// `τ_i (Σ_t log π_i(y_t|y_<t, x) - Σ_t log π_ref(y_t|y_<t, x)) + c_i`.
///
/// # Errors
/// [`Error::LengthMismatch`] if the two token vectors differ in length; otherwise as
/// [`reward_from_logprobs`].
pub fn reward_from_token_logprobs(
    tau_i: f64,
    token_logprobs_i: &[f64],
    token_logprobs_ref: &[f64],
    c_i: f64,
) -> Result<f64> {
    if token_logprobs_i.len() != token_logprobs_ref.len() {
        return Err(Error::LengthMismatch {
            field: "token_logprobs_ref".into(),
            expected: token_logprobs_i.len(),
            got: token_logprobs_ref.len(),
        });
    }
    reward_from_logprobs(
        tau_i,
        token_logprobs_i.iter().sum(),
        token_logprobs_ref.iter().sum(),
        c_i,
    )
}
