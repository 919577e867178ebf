//! Advertiser rewards from LLM log-probabilities (\[SCS25\] Eq. 11 / Eq. 17, the DPO inversion).
//!
//! An advertiser whose LLM `π_i` is the KL-regularised optimum for reward `r_i` against `π_ref` has
//! `r_i(x, y) = τ_i log(π_i(y|x) / π_ref(y|x)) + log Z_i(x)`. The constant `c_i = log Z_i(x)` shifts
//! the rewards of every candidate equally and changes neither the allocation nor the payment
//! (M10, `docs/mechanisms.md` §3.1). Sequence log-probabilities are sums of token log-probabilities.

use crate::error::{Error, Result, check_finite};

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

/// Eq. 11 for a whole reward matrix: `r_ij = τ_i (log π_i(y_j) - log π_ref(y_j)) + c_i` for `n`
/// agents (rows of `log_pi`) and `M` candidates (entries of `log_ref`).
///
/// # Errors
/// [`Error::Empty`] without agents; [`Error::LengthMismatch`] naming `tau_i`, `c` or `log_pi[i]`;
/// [`Error::NonPositive`] naming `tau_i[i]`; [`Error::NonFinite`] naming `log_pi[i][j]`,
/// `log_ref[j]` or `c[i]`.
pub fn reward_rows(
    tau_i: &[f64],
    log_pi: &[Vec<f64>],
    log_ref: &[f64],
    c: &[f64],
) -> Result<Vec<Vec<f64>>> {
    let n = log_pi.len();
    if n == 0 {
        return Err(Error::Empty {
            field: "log_pi".into(),
        });
    }
    for (field, len) in [("tau_i", tau_i.len()), ("c", c.len())] {
        if len != n {
            return Err(Error::LengthMismatch {
                field: field.into(),
                expected: n,
                got: len,
            });
        }
    }
    check_finite("log_ref", log_ref)?;
    let mut rows = Vec::with_capacity(n);
    for (i, row) in log_pi.iter().enumerate() {
        if row.len() != log_ref.len() {
            return Err(Error::LengthMismatch {
                field: format!("log_pi[{i}]"),
                expected: log_ref.len(),
                got: row.len(),
            });
        }
        let name = |e: Error| match e {
            Error::NonPositive { value, .. } => Error::NonPositive {
                field: format!("tau_i[{i}]"),
                value,
            },
            Error::NonFinite { field, value } if field == "c_i" => {
                Error::non_finite(format!("c[{i}]"), value)
            }
            other => other,
        };
        let mut out = Vec::with_capacity(row.len());
        for (j, (&lp, &lr)) in row.iter().zip(log_ref).enumerate() {
            if !lp.is_finite() {
                return Err(Error::non_finite(format!("log_pi[{i}][{j}]"), lp));
            }
            out.push(reward_from_logprobs(tau_i[i], lp, lr, c[i]).map_err(name)?);
        }
        rows.push(out);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reward_rows_is_eq_11_per_entry() {
        let rows = reward_rows(
            &[1.0, 0.5],
            &[vec![-1.0, -2.0], vec![-3.0, -0.5]],
            &[-1.5, -1.0],
            &[0.0, 2.0],
        )
        .unwrap();
        // By hand: τ_i (log π_i − log π_ref) + c_i.
        assert_eq!(
            rows,
            vec![vec![0.5, -1.0], vec![0.5 * -1.5 + 2.0, 0.5 * 0.5 + 2.0]]
        );
    }

    #[test]
    fn reward_rows_errors_name_the_entry() {
        let msg = |t: &[f64], p: &[Vec<f64>], r: &[f64], c: &[f64]| {
            reward_rows(t, p, r, c).unwrap_err().to_string()
        };
        assert!(msg(&[1.0], &[vec![f64::NAN]], &[0.0], &[0.0]).starts_with("log_pi[0][0]: "));
        assert!(msg(&[1.0], &[vec![0.0]], &[f64::INFINITY], &[0.0]).starts_with("log_ref[0]: "));
        assert!(
            msg(&[1.0, -1.0], &[vec![0.0], vec![0.0]], &[0.0], &[0.0, 0.0])
                .starts_with("tau_i[1]: ")
        );
        assert!(msg(&[1.0], &[vec![0.0]], &[0.0], &[f64::NAN]).starts_with("c[0]: "));
        assert!(msg(&[1.0], &[vec![0.0, 1.0]], &[0.0], &[0.0]).starts_with("log_pi[0]: "));
        assert!(msg(&[1.0, 1.0], &[vec![0.0]], &[0.0], &[0.0]).starts_with("tau_i: "));
        assert!(msg(&[], &[], &[0.0], &[]).starts_with("log_pi: "));
    }
}
