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
//! * Welfare (`docs/mechanisms.md` §2.2): `SW(S) = τ LSE_j(Σ_{k∈S} r_{kj}/τ + lw_j)`; with the offset
//!   `U_i = SW(N) - SW(N∖{i})`, the agent's marginal contribution.
//!
//! Truthfulness (Thm 5.1) holds for every fixed candidate set and every `lw`: `π` is the gradient of
//! the convex `U_i(r_i)` (Rochet), so DSIC does not depend on `M` or on convergence.

use crate::dist::inverse_cdf;
use crate::error::{Error, Result, check_finite};
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
    ///
    /// # Panics
    /// If `i >= self.agents()`, like slice indexing; [`RewardMatrix::rows`] never does.
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
        check_finite(name, v)?;
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
    /// [`Error::NonPositive`] if `τ` is not finite and `> 0`, [`Error::Overflow`] if it is
    /// subnormal.
    pub fn new(tau: f64) -> Result<Self> {
        if !(tau.is_finite() && tau > 0.0) {
            return Err(Error::NonPositive {
                field: "tau".into(),
                value: tau,
            });
        }
        if !tau.is_normal() {
            // `r / τ` of any reward >= 1 overflows for a subnormal `τ`.
            return Err(Error::Overflow {
                field: "tau".into(),
                detail: format!(
                    "{tau:e} is subnormal, so rewards / tau overflow; it must be at least {:e}",
                    f64::MIN_POSITIVE
                ),
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
                check_log_weights(lw, m)?;
                lw.to_vec()
            }
            None => vec![0.0; m],
        };
        let all: Vec<usize> = (0..n).collect();
        let total = scores(rewards, &all, &lw, tau);
        finite_scores(&total)?;
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
        // β_{-i,j} = Σ_{k<i} r_kj/τ + Σ_{k>i} r_kj/τ + lw_j: a running prefix and suffix sums made
        // in one backward pass, so all n leave-one-out terms cost O(n·M), not O(n²·M).
        let mut suffix = vec![0.0; n * m];
        for i in (0..n.saturating_sub(1)).rev() {
            for j in 0..m {
                suffix[i * m + j] = rewards.row(i + 1)[j] / tau + suffix[(i + 1) * m + j];
            }
        }
        let mut prefix = vec![0.0; m];
        for i in 0..n {
            // An agent with zero rewards leaves the scores unchanged: β_{-i} is then `total` bit
            // for bit, so it pays and gains exactly 0 (Lemma 5.2), whatever the summation order.
            let beta: Vec<f64> = if rewards.row(i).iter().all(|&r| r == 0.0) {
                total.clone()
            } else {
                (0..m)
                    .map(|j| prefix[j] + suffix[i * m + j] + lw[j])
                    .collect()
            };
            finite_scores(&beta)?;
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
            for (p, r) in prefix.iter_mut().zip(rewards.row(i)) {
                *p += r / tau;
            }
        }
        out.revenue = out.payments.iter().sum();
        out.allocation = allocation;
        let outputs = [out.welfare, out.revenue]
            .into_iter()
            .chain(out.payments.iter().copied())
            .chain(out.utilities.iter().copied())
            .chain(out.expected_rewards.iter().copied())
            .chain(out.welfare_without.iter().copied());
        if let Some(v) = outputs.into_iter().find(|v| !v.is_finite()) {
            return Err(Error::Overflow {
                field: "rewards".into(),
                detail: format!("payments or welfare reach {v} (rewards / tau too large for f64)"),
            });
        }
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

/// The scores without agent `i`, `β_{-i,j} = Σ_{k≠i} r_kj/τ + lw_j` (Eq. 10 of \[SCS25\]; the
/// allocation without `i` is their softmax). Agents are summed in index order. [`Mosaic::run`]
/// computes all `n` of them at once with running sums; this is the one-agent form, for an allocation
/// without `i` restricted to some candidates (the experiments' footnote 9).
///
/// # Errors
/// [`Error::OutOfRange`] naming `agent`, [`Error::LengthMismatch`] / [`Error::NonFinite`] for
/// `log_weights`.
pub fn leave_one_out_scores(
    rewards: &RewardMatrix,
    agent: usize,
    log_weights: &[f64],
    tau: f64,
) -> Result<Vec<f64>> {
    if agent >= rewards.agents() {
        return Err(Error::OutOfRange {
            field: "agent".into(),
            value: agent as f64,
            range: "0..agents",
        });
    }
    check_log_weights(log_weights, rewards.candidates())?;
    let others: Vec<usize> = (0..rewards.agents()).filter(|&k| k != agent).collect();
    Ok(scores(rewards, &others, log_weights, tau))
}

/// One finite log-weight per candidate.
fn check_log_weights(lw: &[f64], m: usize) -> Result<()> {
    if lw.len() != m {
        return Err(Error::LengthMismatch {
            field: "log_weights".into(),
            expected: m,
            got: lw.len(),
        });
    }
    check_finite("log_weights", lw)
}

/// Refuses scores `Σ r/τ + lw` that overflowed f64 (huge rewards over a small `τ`): from them every
/// output would be NaN.
fn finite_scores(scores: &[f64]) -> Result<()> {
    match scores.iter().find(|s| !s.is_finite()) {
        Some(&s) => Err(Error::Overflow {
            field: "rewards".into(),
            detail: format!("a sum of rewards / tau is {s}; scale the rewards down or raise tau"),
        }),
        None => Ok(()),
    }
}

/// `Σ_{k∈S} r_{kj}/τ + lw_j` for every candidate `j`, summing agents in index order.
fn scores(rewards: &RewardMatrix, set: &[usize], lw: &[f64], tau: f64) -> Vec<f64> {
    (0..rewards.candidates())
        .map(|j| set.iter().map(|&k| rewards.row(k)[j] / tau).sum::<f64>() + lw[j])
        .collect()
}

/// `SW(S) = τ LSE_j(Σ_{k∈S} r_{kj}/τ + lw_j)`, the estimated optimal regularised welfare of the
/// agent set `S` on the candidate set (`docs/mechanisms.md` §2.2); `lw = None` means Algorithm 1.
pub fn social_welfare(rewards: &RewardMatrix, set: &[usize], lw: Option<&[f64]>, tau: f64) -> f64 {
    let zeros = vec![0.0; rewards.candidates()];
    tau * log_sum_exp(&scores(rewards, set, lw.unwrap_or(&zeros), tau))
}

/// The seeded draw of the returned reply: inverse CDF of `π` on one uniform (M18, `docs/mechanisms.md` §3.1).
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
    fn subnormal_tau_and_overflowing_scores_are_errors() {
        // Regression: τ = 1e-320 gave NaN payments; rewards 1e300 over τ = 1e-10 gave all-null
        // outputs.
        let e = Mosaic::new(1e-320).unwrap_err();
        assert!(e.to_string().starts_with("tau: "), "{e}");
        let r = RewardMatrix::from_rows(&[vec![1e300, 0.0], vec![0.0, 1e300]]).unwrap();
        let e = Mosaic::new(1e-10).unwrap().run(&r, None).unwrap_err();
        assert!(e.to_string().starts_with("rewards: "), "{e}");
        // Finite scores whose leave-one-out sum overflows: r_0 + r_1 + r_2 is finite, r_0 + r_2 not.
        let r = RewardMatrix::from_rows(&[vec![1e308, 0.0], vec![-1e308, 0.0], vec![1e308, 0.0]])
            .unwrap();
        assert!(matches!(
            Mosaic::new(1.0).unwrap().run(&r, None),
            Err(Error::Overflow { .. })
        ));
    }

    #[test]
    fn leave_one_out_terms_equal_the_direct_sums() {
        // The O(n·M) prefix/suffix pass against β_{-i} summed directly over the other agents.
        let rows: Vec<Vec<f64>> = (0..7)
            .map(|i| {
                (0..5)
                    .map(|j| ((i * 5 + j) as f64 * 0.37).sin() * 3.0)
                    .collect()
            })
            .collect();
        let r = RewardMatrix::from_rows(&rows).unwrap();
        let lw = [0.3, -0.2, 0.0, 1.1, -0.7];
        let tau = 0.8;
        let out = Mosaic::new(tau).unwrap().run(&r, Some(&lw)).unwrap();
        for i in 0..7 {
            let beta: Vec<f64> = (0..5)
                .map(|j| {
                    (0..7)
                        .filter(|&k| k != i)
                        .map(|k| rows[k][j] / tau)
                        .sum::<f64>()
                        + lw[j]
                })
                .collect();
            let z: f64 = beta.iter().map(|b| b.exp()).sum();
            for (got, b) in out.allocation_without[i].iter().zip(&beta) {
                assert!((got - b.exp() / z).abs() < 1e-13);
            }
            assert!((out.welfare_without[i] - tau * z.ln()).abs() < 1e-12);
        }
    }

    #[test]
    fn many_advertisers_run_in_linear_time() {
        // Regression: 3·10^4 advertisers took 4-17 s (quadratic); linear it is milliseconds. Checked
        // by size, not time: 2·10^5 advertisers would take hours if quadratic.
        let rows: Vec<Vec<f64>> = (0..200_000)
            .map(|i| vec![(i % 7) as f64 * 0.01, 0.0])
            .collect();
        let r = RewardMatrix::from_rows(&rows).unwrap();
        let out = Mosaic::new(1.0).unwrap().run(&r, None).unwrap();
        assert_eq!(out.payments.len(), 200_000);
        assert!(out.payments.iter().all(|p| p.is_finite()));
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

    #[test]
    fn leave_one_out_scores_give_the_allocation_without_the_agent() {
        let r = RewardMatrix::from_rows(&[vec![0.5, -1.0, 2.0], vec![1.0, 0.2, -0.3]]).unwrap();
        let lw = [0.1, -0.4, 0.0];
        let out = Mosaic::new(0.7).unwrap().run(&r, Some(&lw)).unwrap();
        for i in 0..2 {
            let beta = leave_one_out_scores(&r, i, &lw, 0.7).unwrap();
            // With two agents β_{-i} is the other agent's r/τ plus lw.
            let other = 1 - i;
            for j in 0..3 {
                assert!((beta[j] - (r.row(other)[j] / 0.7 + lw[j])).abs() < 1e-15);
            }
            let p = softmax(&beta);
            for (a, b) in p.iter().zip(&out.allocation_without[i]) {
                assert!((a - b).abs() < 1e-12, "{a} vs {b}");
            }
        }
        assert!(leave_one_out_scores(&r, 2, &lw, 0.7).is_err());
        assert!(leave_one_out_scores(&r, 0, &lw[..2], 0.7).is_err());
    }
}
