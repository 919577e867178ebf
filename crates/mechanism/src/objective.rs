//! The platform's objective on a finite outcome space (\[SCS25\] Eq. 1-2).
//!
//! `J(π) = E_{y~π}[r(y)] - τ KL(π ‖ π_ref)`, maximised by `π_r(y) = π_ref(y) exp(r(y)/τ) / Z`
//! (Eq. 2), with optimal value `J(π_r) = τ log E_{π_ref}[exp(r/τ)] = τ log Z` (`docs/mechanisms.md` §2).

use crate::dist::Distribution;
use crate::error::{Error, Result, check_finite};
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
    check_finite("rewards", r)
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

fn check_sample(log_ref: &[f64], r: &[f64], tau: f64) -> Result<()> {
    if !(tau.is_finite() && tau > 0.0) {
        return Err(Error::NonPositive {
            field: "tau".into(),
            value: tau,
        });
    }
    if r.is_empty() {
        return Err(Error::Empty {
            field: "rewards".into(),
        });
    }
    if log_ref.len() != r.len() {
        return Err(Error::LengthMismatch {
            field: "log_ref".into(),
            expected: r.len(),
            got: log_ref.len(),
        });
    }
    check_finite("rewards", r)?;
    check_finite("log_ref", log_ref)
}

/// `log π_r(y) = log π_ref(y) + r(y)/τ - log Z` of one reply, given `log Z` or an estimate of it
/// (Eq. 2 of \[SCS25\] in log space; the experiments' metric "log-probability of the returned reply
/// under the optimal policy", `docs/mechanisms.md` §2).
pub fn log_optimal_at(log_ref: f64, reward: f64, tau: f64, log_z: f64) -> f64 {
    log_ref + reward / tau - log_z
}

/// The Monte-Carlo estimate `log Ẑ = LSE_k(r(y_k)/τ) - log K` of `log Z = log E_{π_ref}[exp(r/τ)]`
/// (the normaliser of Eq. 2 of \[SCS25\]) from `K` replies `y_k` sampled from `π_ref` itself. `Ẑ` is
/// unbiased for `Z`; `log Ẑ` is biased low (Jensen).
///
/// # Errors
/// [`Error::Empty`] for no samples, [`Error::NonPositive`] for `τ`, [`Error::NonFinite`] naming
/// `rewards[k]`.
pub fn log_partition_estimate(rewards: &[f64], tau: f64) -> Result<f64> {
    check_sample(rewards, rewards, tau)?;
    let scaled: Vec<f64> = rewards.iter().map(|r| r / tau).collect();
    Ok(log_sum_exp(&scaled) - (rewards.len() as f64).ln())
}

/// The self-normalised estimate `Σ_k w_k log π_r(y_k)`, `w = softmax_k(r(y_k)/τ)`, of
/// `E_{π_r}[log π_r]` from replies `y_k` sampled from `π_ref` (importance sampling of Eq. 2's
/// `π_r ∝ π_ref exp(r/τ)` with `π_ref` as the proposal; `log π_r` as in [`log_optimal_at`]).
///
/// # Errors
/// As [`log_partition_estimate`]; [`Error::LengthMismatch`] when `log_ref` and `rewards` differ in
/// length.
pub fn self_normalised_expected_log_optimal(
    log_ref: &[f64],
    rewards: &[f64],
    tau: f64,
    log_z: f64,
) -> Result<f64> {
    check_sample(log_ref, rewards, tau)?;
    if !log_z.is_finite() {
        return Err(Error::non_finite("log_z", log_z));
    }
    let scaled: Vec<f64> = rewards.iter().map(|r| r / tau).collect();
    let w = softmax(&scaled);
    Ok(log_ref
        .iter()
        .zip(rewards)
        .zip(&w)
        .map(|((&l, &r), w)| w * log_optimal_at(l, r, tau, log_z))
        .sum())
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

    #[test]
    fn sample_estimates_match_the_exact_values_on_a_uniform_reference() {
        // Samples that cover a uniform π_ref once each: Ẑ is then the exact Z, and the
        // self-normalised mean the exact E_{π_r}[log π_r] = -H(π_r).
        let r = [0.3, -1.2, 2.0, 0.0];
        let tau = 0.8;
        let pi_ref = Distribution::from_probs(vec![0.25; 4], "pi_ref").unwrap();
        let log_z = log_partition_estimate(&r, tau).unwrap();
        let exact = optimal_value(&pi_ref, &r, tau).unwrap() / tau;
        assert!((log_z - exact).abs() < 1e-12, "{log_z} vs {exact}");
        let log_opt = log_optimal_policy(&pi_ref, &r, tau).unwrap();
        let neg_entropy: f64 = log_opt.iter().map(|l| l.exp() * l).sum();
        let log_ref = [0.25f64.ln(); 4];
        let est = self_normalised_expected_log_optimal(&log_ref, &r, tau, log_z).unwrap();
        assert!((est - neg_entropy).abs() < 1e-12, "{est} vs {neg_entropy}");
        for (j, l) in log_opt.iter().enumerate() {
            assert!((log_optimal_at(log_ref[j], r[j], tau, log_z) - l).abs() < 1e-12);
        }
        let e = log_partition_estimate(&[], tau).unwrap_err();
        assert!(e.to_string().contains("rewards"), "{e}");
        let e = self_normalised_expected_log_optimal(&log_ref[..3], &r, tau, log_z).unwrap_err();
        assert!(e.to_string().contains("log_ref"), "{e}");
        assert!(log_partition_estimate(&[f64::NAN], tau).is_err());
        assert!(log_partition_estimate(&r, 0.0).is_err());
    }
}
