//! The platform's objective on a finite outcome space (\[SCS25\] Eq. 1-2).
//!
//! `J(π) = E_{y~π}[r(y)] - τ KL(π ‖ π_ref)`, maximised by `π_r(y) = π_ref(y) exp(r(y)/τ) / Z`
//! (Eq. 2), with optimal value `J(π_r) = τ log E_{π_ref}[exp(r/τ)] = τ log Z` (`docs/mechanisms.md` §2).

use crate::dist::Distribution;
use crate::error::{Error, Result};
use crate::logspace::{log_sum_exp, softmax};

fn check(pi_ref: &Distribution, r: &[f64], tau: f64) -> Result<()> {
    if !(tau.is_finite() && tau > 0.0) {
        return Err(Error::NonPositive {
            field: "tau".into(),
            value: tau,
        });
    }
    if r.len() != pi_ref.len() {
        return Err(Error::LengthMismatch {
            field: "rewards".into(),
            expected: pi_ref.len(),
            got: r.len(),
        });
    }
    if let Some((j, &x)) = r.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        return Err(Error::non_finite(format!("rewards[{j}]"), x));
    }
    Ok(())
}

/// `KL(p ‖ q) = Σ_y p(y) log(p(y)/q(y))`, with `0 log 0 = 0`; `+inf` when `p` puts mass where `q`
/// has none.
///
/// # Errors
/// [`Error::LengthMismatch`] for different vocabularies.
pub fn kl(p: &Distribution, q: &Distribution) -> Result<f64> {
    if p.len() != q.len() {
        return Err(Error::LengthMismatch {
            field: "q".into(),
            expected: p.len(),
            got: q.len(),
        });
    }
    Ok(p.probs()
        .iter()
        .zip(q.probs())
        .map(|(&a, &b)| if a == 0.0 { 0.0 } else { a * (a.ln() - b.ln()) })
        .sum())
}

/// The objective `J(π) = Σ_y π(y) r(y) - τ KL(π ‖ π_ref)`, Eq. 1 of \[SCS25\].
///
/// # Errors
/// Shape errors, [`Error::NonPositive`] for `τ`, [`Error::NonFinite`] for rewards.
pub fn objective(pi: &Distribution, pi_ref: &Distribution, r: &[f64], tau: f64) -> Result<f64> {
    check(pi_ref, r, tau)?;
    let reward: f64 = pi.probs().iter().zip(r).map(|(p, r)| p * r).sum();
    Ok(reward - tau * kl(pi, pi_ref)?)
}

/// The optimal policy `π_r ∝ π_ref exp(r/τ)`, Eq. 2 of \[SCS25\] (softmax of `log π_ref + r/τ`).
///
/// # Errors
/// As [`objective`].
pub fn optimal_policy(pi_ref: &Distribution, r: &[f64], tau: f64) -> Result<Distribution> {
    check(pi_ref, r, tau)?;
    let logits: Vec<f64> = pi_ref
        .log_probs()
        .iter()
        .zip(r)
        .map(|(l, r)| l + r / tau)
        .collect();
    Distribution::from_probs(softmax(&logits), "optimal_policy")
}

/// The optimal value `J(π_r) = τ log Σ_y π_ref(y) exp(r(y)/τ)` (M16, `docs/mechanisms.md` §3.1).
///
/// # Errors
/// As [`objective`].
pub fn optimal_value(pi_ref: &Distribution, r: &[f64], tau: f64) -> Result<f64> {
    check(pi_ref, r, tau)?;
    let logits: Vec<f64> = pi_ref
        .log_probs()
        .iter()
        .zip(r)
        .map(|(l, r)| l + r / tau)
        .collect();
    Ok(tau * log_sum_exp(&logits))
}

/// `log π_r(y) = log π_ref(y) + r(y)/τ - log Z` for every outcome (used by the experiments' metric
/// "log-probability of the returned reply under the optimal policy").
///
/// # Errors
/// As [`objective`].
pub fn log_optimal_policy(pi_ref: &Distribution, r: &[f64], tau: f64) -> Result<Vec<f64>> {
    check(pi_ref, r, tau)?;
    let logits: Vec<f64> = pi_ref
        .log_probs()
        .iter()
        .zip(r)
        .map(|(l, r)| l + r / tau)
        .collect();
    let z = log_sum_exp(&logits);
    Ok(logits.iter().map(|l| l - z).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optimum_beats_reference_and_matches_value() {
        let pi_ref = Distribution::from_probs(vec![0.5, 0.3, 0.2], "pi_ref").unwrap();
        let r = [0.0, 1.0, 2.0];
        let opt = optimal_policy(&pi_ref, &r, 1.0).unwrap();
        let j_opt = objective(&opt, &pi_ref, &r, 1.0).unwrap();
        let j_ref = objective(&pi_ref, &pi_ref, &r, 1.0).unwrap();
        assert!(j_opt > j_ref);
        assert!((j_opt - optimal_value(&pi_ref, &r, 1.0).unwrap()).abs() < 1e-12);
        assert!(objective(&opt, &pi_ref, &r, -1.0).is_err());
    }
}
