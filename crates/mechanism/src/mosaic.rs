//! MOSAIC \[SCS25\]: allocation, payments and utilities on a fixed candidate set.
//!
//! Symbols (arXiv 2405.05905v1): `r_{ij} → rewards.get(i, j)` (agent `i`'s reward for candidate `y_j`),
//! `τ → tau`, `lw_j = log π_ref(y_j) - log π_gen(y_j) → log_weights[j]` (importance weight; 0 in
//! Algorithm 1), `β_{-i,j} = Σ_{k≠i} r_{kj}/τ + lw_j`, `π → allocation`, `π^{-i} → allocation_without[i]`.
//!
//! * Allocation (Eq. 8, Alg. 2): `π_j = softmax_j(Σ_i r_{ij}/τ + lw_j)`.
//! * Payment (Eq. 10): `p_i = π·r_i - τ LSE_j(r_{ij}/τ + β_{-i,j}) - C_i`, with the offset (Eq. 13)
//!   `C_i = -τ LSE_j(β_{-i,j})` or `C_i = 0` when the offset is off.
//! * Utility (Lemma 5.5, with offset): `U_i = π·r_i - p_i = τ[LSE(r_i/τ + β_{-i}) - LSE(β_{-i})]
//!   = τ log Σ_j π^{-i}_j exp(r_{ij}/τ)`. Without the offset, `U_i = τ LSE(r_i/τ + β_{-i})`.
//! * Welfare (`math.md` §2.5): `SW(S) = τ LSE_j(Σ_{k∈S} r_{kj}/τ + lw_j)`; with the offset
//!   `U_i = SW(N) - SW(N∖{i})`, the agent's marginal contribution.
//!
//! Truthfulness (Thm 5.1) holds for every fixed candidate set and every `lw`: `π` is the gradient of
//! the convex `U_i(r_i)` (Rochet), so DSIC does not depend on `M` or on convergence.

use crate::dist::inverse_cdf;
use crate::error::{Error, Result};
use crate::logspace::{log_sum_exp, softmax};
use crate::rng::uniform_open01;
use rand::Rng;
use serde::Serialize;

/// Reported rewards: `n >= 1` agents by `M >= 1` candidates, all finite (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct RewardMatrix {
    n: usize,
    m: usize,
    data: Vec<f64>,
}

impl RewardMatrix {
    /// Validates a reward matrix given as one row per agent.
    ///
    /// # Errors
    /// [`Error::Empty`] (no agents, or no candidates), [`Error::LengthMismatch`] (ragged rows),
    /// [`Error::NonFinite`] naming `rewards[i][j]`.
    pub fn from_rows(rows: &[Vec<f64>]) -> Result<Self> {
        if rows.is_empty() {
            return Err(Error::Empty {
                field: "rewards".into(),
            });
        }
        let m = rows[0].len();
        if m == 0 {
            return Err(Error::Empty {
                field: "rewards[0]".into(),
            });
        }
        let mut data = Vec::with_capacity(rows.len() * m);
        for (i, row) in rows.iter().enumerate() {
            if row.len() != m {
                return Err(Error::LengthMismatch {
                    field: format!("rewards[{i}]"),
                    expected: m,
                    got: row.len(),
                });
            }
            for (j, &r) in row.iter().enumerate() {
                if !r.is_finite() {
                    return Err(Error::non_finite(format!("rewards[{i}][{j}]"), r));
                }
            }
            data.extend_from_slice(row);
        }
        Ok(Self {
            n: rows.len(),
            m,
            data,
        })
    }

    /// Number of agents `n`.
    pub fn agents(&self) -> usize {
        self.n
    }

    /// Number of candidates `M`.
    pub fn candidates(&self) -> usize {
        self.m
    }

    /// Agent `i`'s rewards `r_i` over the candidates.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.m..(i + 1) * self.m]
    }

    /// All rows.
    pub fn rows(&self) -> impl Iterator<Item = &[f64]> {
        self.data.chunks(self.m)
    }
}

/// Importance weights `lw_j = log π_ref(y_j) - log π_gen(y_j)` of Algorithm 2 (Eq. 8).
///
/// # Errors
/// [`Error::LengthMismatch`] against `m`, [`Error::NonFinite`] naming `log_ref[j]` or `log_gen[j]`.
pub fn importance_weights(log_ref: &[f64], log_gen: &[f64], m: usize) -> Result<Vec<f64>> {
    for (name, v) in [("log_ref", log_ref), ("log_gen", log_gen)] {
        if v.len() != m {
            return Err(Error::LengthMismatch {
                field: name.into(),
                expected: m,
                got: v.len(),
            });
        }
        if let Some((j, &x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
            return Err(Error::non_finite(format!("{name}[{j}]"), x));
        }
    }
    Ok(log_ref.iter().zip(log_gen).map(|(r, g)| r - g).collect())
}

/// The mechanism's parameters: the regularisation weight `τ` and whether the offset of Eq. 13 is on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mosaic {
    tau: f64,
    offset: bool,
}

/// Everything MOSAIC computes on one candidate set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MosaicOutcome {
    /// `π`, Eq. 8.
    pub allocation: Vec<f64>,
    /// `π^{-i}`: the allocation without agent `i` on the same candidates.
    pub allocation_without: Vec<Vec<f64>>,
    /// `p_i`, Eq. 10 (with Eq. 13 when the offset is on).
    pub payments: Vec<f64>,
    /// Ex-interim utilities `U_i = π·r_i - p_i` (Lemma 5.5 with the offset).
    pub utilities: Vec<f64>,
    /// `π·r_i`.
    pub expected_rewards: Vec<f64>,
    /// `Σ_i p_i`.
    pub revenue: f64,
    /// `SW(N)`.
    pub welfare: f64,
    /// `SW(N∖{i})` for each agent.
    pub welfare_without: Vec<f64>,
}

impl Mosaic {
    /// MOSAIC with weight `τ` and the offset of Eq. 13 on (the paper's default).
    ///
    /// # Errors
    /// [`Error::NonPositive`] if `τ` is not finite and `> 0`.
    pub fn new(tau: f64) -> Result<Self> {
        if !(tau.is_finite() && tau > 0.0) {
            return Err(Error::NonPositive {
                field: "tau".into(),
                value: tau,
            });
        }
        Ok(Self { tau, offset: true })
    }

    /// Switches the agent-specific offset of Eq. 13 on or off.
    pub fn with_offset(mut self, offset: bool) -> Self {
        self.offset = offset;
        self
    }

    /// `τ`.
    pub fn tau(&self) -> f64 {
        self.tau
    }

    /// Whether the offset of Eq. 13 is applied.
    pub fn offset(&self) -> bool {
        self.offset
    }

    /// Runs MOSAIC (Alg. 1 when `log_weights` is `None`, Alg. 2 otherwise; see [`importance_weights`]).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] / [`Error::NonFinite`] for bad `log_weights`.
    ///
    /// ```
    /// use llm_auction_mechanism::mosaic::{Mosaic, RewardMatrix};
    /// let r = RewardMatrix::from_rows(&[vec![0.0, 1.0]]).unwrap();
    /// let out = Mosaic::new(1.0).unwrap().run(&r, None).unwrap();
    /// // π = softmax(0, 1); one advertiser competes with the uniform π^{-i} (no reserve needed).
    /// let e = 1f64.exp();
    /// approx::assert_relative_eq!(out.allocation[1], e / (1.0 + e), epsilon = 1e-15);
    /// approx::assert_relative_eq!(out.utilities[0], ((1.0 + e) / 2.0).ln(), epsilon = 1e-15);
    /// assert!(out.payments[0] > 0.0);
    /// ```
    pub fn run(
        &self,
        rewards: &RewardMatrix,
        log_weights: Option<&[f64]>,
    ) -> Result<MosaicOutcome> {
        let (n, m, tau) = (rewards.agents(), rewards.candidates(), self.tau);
        let lw = match log_weights {
            Some(lw) => {
                if lw.len() != m {
                    return Err(Error::LengthMismatch {
                        field: "log_weights".into(),
                        expected: m,
                        got: lw.len(),
                    });
                }
                if let Some((j, &x)) = lw.iter().enumerate().find(|(_, x)| !x.is_finite()) {
                    return Err(Error::non_finite(format!("log_weights[{j}]"), x));
                }
                lw.to_vec()
            }
            None => vec![0.0; m],
        };
        let all: Vec<usize> = (0..n).collect();
        let total = scores(rewards, &all, &lw, tau);
        let lse_total = log_sum_exp(&total);
        let allocation = softmax(&total);
        let mut out = MosaicOutcome {
            allocation_without: Vec::with_capacity(n),
            payments: Vec::with_capacity(n),
            utilities: Vec::with_capacity(n),
            expected_rewards: Vec::with_capacity(n),
            revenue: 0.0,
            welfare: tau * lse_total,
            welfare_without: Vec::with_capacity(n),
            allocation: Vec::new(),
        };
        for i in 0..n {
            let others: Vec<usize> = all.iter().copied().filter(|&k| k != i).collect();
            let beta = scores(rewards, &others, &lw, tau);
            let lse_beta = log_sum_exp(&beta);
            let expected: f64 = allocation
                .iter()
                .zip(rewards.row(i))
                .map(|(p, r)| p * r)
                .sum();
            let utility = if self.offset {
                tau * (lse_total - lse_beta)
            } else {
                tau * lse_total
            };
            out.payments.push(expected - utility);
            out.utilities.push(utility);
            out.expected_rewards.push(expected);
            out.welfare_without.push(tau * lse_beta);
            out.allocation_without.push(softmax(&beta));
        }
        out.revenue = out.payments.iter().sum();
        out.allocation = allocation;
        Ok(out)
    }
}

impl Mosaic {
    /// [`Mosaic::run`] from the log-probabilities of the candidates: Algorithm 2 with the weights of
    /// [`importance_weights`] when both `log_ref` and `log_gen` are given, Algorithm 1 when neither is.
    /// The one entry point of the front ends (the CLI's JSON filter, the service, Python).
    ///
    /// # Errors
    /// [`Error::IncompleteImportanceWeights`] naming the missing one; as [`importance_weights`] and
    /// [`Mosaic::run`].
    pub fn run_from_logprobs(
        &self,
        rewards: &RewardMatrix,
        log_ref: Option<&[f64]>,
        log_gen: Option<&[f64]>,
    ) -> Result<MosaicOutcome> {
        let lw = match (log_ref, log_gen) {
            (Some(r), Some(g)) => Some(importance_weights(r, g, rewards.candidates())?),
            (None, None) => None,
            (Some(_), None) => {
                return Err(Error::IncompleteImportanceWeights {
                    field: "log_gen".into(),
                });
            }
            (None, Some(_)) => {
                return Err(Error::IncompleteImportanceWeights {
                    field: "log_ref".into(),
                });
            }
        };
        self.run(rewards, lw.as_deref())
    }
}

/// `Σ_{k∈S} r_{kj}/τ + lw_j` for every candidate `j`, summing agents in index order.
fn scores(rewards: &RewardMatrix, set: &[usize], lw: &[f64], tau: f64) -> Vec<f64> {
    (0..rewards.candidates())
        .map(|j| set.iter().map(|&k| rewards.row(k)[j] / tau).sum::<f64>() + lw[j])
        .collect()
}

/// `SW(S) = τ LSE_j(Σ_{k∈S} r_{kj}/τ + lw_j)`, the estimated optimal regularised welfare of the
/// agent set `S` on the candidate set (`math.md` §2.5); `lw = None` means Algorithm 1.
pub fn social_welfare(rewards: &RewardMatrix, set: &[usize], lw: Option<&[f64]>, tau: f64) -> f64 {
    let zeros = vec![0.0; rewards.candidates()];
    tau * log_sum_exp(&scores(rewards, set, lw.unwrap_or(&zeros), tau))
}

/// The seeded draw of the returned reply: inverse CDF of `π` on one uniform (`math.md` M18).
pub fn draw_winner<R: Rng + ?Sized>(allocation: &[f64], rng: &mut R) -> usize {
    inverse_cdf(allocation, uniform_open01(rng))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_errors_name_fields() {
        assert!(matches!(
            RewardMatrix::from_rows(&[]),
            Err(Error::Empty { .. })
        ));
        assert!(matches!(
            RewardMatrix::from_rows(&[vec![]]),
            Err(Error::Empty { .. })
        ));
        let e = RewardMatrix::from_rows(&[vec![1.0, 2.0], vec![1.0]]).unwrap_err();
        assert!(e.to_string().contains("rewards[1]"));
        let e = RewardMatrix::from_rows(&[vec![1.0, f64::NAN]]).unwrap_err();
        assert!(e.to_string().contains("rewards[0][1]"));
        assert!(Mosaic::new(0.0).is_err());
        assert!(Mosaic::new(-1.0).is_err());
        assert!(Mosaic::new(f64::NAN).is_err());
        assert!(importance_weights(&[0.0], &[0.0, 1.0], 1).is_err());
    }

    #[test]
    fn run_from_logprobs_is_alg2_with_both_alg1_with_neither() {
        let r = RewardMatrix::from_rows(&[vec![0.5, -1.0, 2.0]]).unwrap();
        let mech = Mosaic::new(0.7).unwrap();
        let (lr, lg) = ([-3.0, -1.5, -2.0], [-2.0, -2.5, -1.0]);
        let lw: Vec<f64> = lr.iter().zip(&lg).map(|(a, b)| a - b).collect();
        assert_eq!(
            mech.run_from_logprobs(&r, Some(&lr), Some(&lg)).unwrap(),
            mech.run(&r, Some(&lw)).unwrap()
        );
        assert_eq!(
            mech.run_from_logprobs(&r, None, None).unwrap(),
            mech.run(&r, None).unwrap()
        );
        for (a, b, missing) in [
            (Some(&lr[..]), None, "log_gen"),
            (None, Some(&lg[..]), "log_ref"),
        ] {
            let e = mech.run_from_logprobs(&r, a, b).unwrap_err();
            assert!(e.to_string().starts_with(&format!("{missing}: ")), "{e}");
        }
        let e = mech
            .run_from_logprobs(&r, Some(&lr[..2]), Some(&lg))
            .unwrap_err();
        assert!(e.to_string().starts_with("log_ref: "), "{e}");
    }

    #[test]
    fn hand_computed_two_agents() {
        // r_0 = (1, 2, 3), r_1 = 0, τ = 1, Alg. 1.
        let r = RewardMatrix::from_rows(&[vec![1.0, 2.0, 3.0], vec![0.0, 0.0, 0.0]]).unwrap();
        let out = Mosaic::new(1.0).unwrap().run(&r, None).unwrap();
        let z: f64 = (1..=3).map(|k| (k as f64).exp()).sum();
        let pi: Vec<f64> = (1..=3).map(|k| (k as f64).exp() / z).collect();
        for (a, b) in out.allocation.iter().zip(&pi) {
            assert!((a - b).abs() < 1e-15);
        }
        let u0 = (z / 3.0).ln();
        let er: f64 = pi.iter().zip([1.0, 2.0, 3.0]).map(|(p, r)| p * r).sum();
        assert!((out.utilities[0] - u0).abs() < 1e-14);
        assert!((out.payments[0] - (er - u0)).abs() < 1e-14);
        assert_eq!(out.payments[1], 0.0);
        assert_eq!(out.utilities[1], 0.0);
    }

    #[test]
    fn no_offset_payment() {
        let r = RewardMatrix::from_rows(&[vec![1.0, 2.0]]).unwrap();
        let out = Mosaic::new(2.0)
            .unwrap()
            .with_offset(false)
            .run(&r, None)
            .unwrap();
        let lse = (0.5f64.exp() + 1f64.exp()).ln();
        assert!((out.utilities[0] - 2.0 * lse).abs() < 1e-14);
    }
}
