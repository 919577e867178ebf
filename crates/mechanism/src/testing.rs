//! Proptest strategies for both mechanisms (feature `testing`), shared by this crate's property proofs
//! and by downstream test suites. Domains follow `docs/mechanisms.md` §3: `n ∈ [1, 6]` agents, `M ∈ [1, 64]`
//! candidates, `|T| ∈ [2, 8]` tokens, `τ = exp(U[-2, 2])` plus tiny `τ = 1e-3`, rewards of scale
//! `σ = exp(U[-3, 3])` with exact zeros and `±200` extremes (sequence log-ratios), bids in `[0, 10]`
//! with exact zeros, and distributions from softmaxed logits in `[-30, 30]`, normalised `Exp(1)`
//! draws with exact zeros, and edge cases (one-hot, uniform, `1e-300` entries).
//!
//! Every strategy maps instead of filtering, so none of them rejects cases.

use crate::dist::Distribution;
use crate::logspace::softmax;
use proptest::collection::vec;
use proptest::prelude::*;
use std::ops::RangeInclusive;

/// One MOSAIC instance: an `n × M` reward matrix, `τ`, and optional importance weights.
#[derive(Debug, Clone)]
pub struct MosaicCase {
    /// `rewards[i][j]`.
    pub rewards: Vec<Vec<f64>>,
    /// `τ > 0`.
    pub tau: f64,
    /// `lw_j`, or `None` for Algorithm 1.
    pub log_weights: Option<Vec<f64>>,
}

/// One token-auction step: `n` distributions over a shared vocabulary and `n` bids (not all zero).
#[derive(Debug, Clone)]
pub struct TokenCase {
    /// The agents' distributions `q_i`.
    pub dists: Vec<Distribution>,
    /// The bids `b_i`.
    pub bids: Vec<f64>,
}

/// `τ`: mostly `exp(U[-2, 2])`, sometimes the tiny `1e-3`.
pub fn tau() -> impl Strategy<Value = f64> {
    prop_oneof![9 => (-2.0f64..2.0).prop_map(f64::exp), 1 => Just(1e-3)]
}

/// One reward of scale `sigma`: mostly `U[-2σ, 2σ]`, with exact zeros and `±200` extremes.
pub fn reward(sigma: f64) -> impl Strategy<Value = f64> {
    prop_oneof![
        12 => (-2.0f64..2.0).prop_map(move |x| x * sigma),
        2 => Just(0.0),
        1 => Just(200.0),
        1 => Just(-200.0),
    ]
}

/// An `n × M` reward matrix with one scale `σ = exp(U[-3, 3])` for the whole matrix.
pub fn reward_matrix(
    n: RangeInclusive<usize>,
    m: RangeInclusive<usize>,
) -> impl Strategy<Value = Vec<Vec<f64>>> {
    (n, m, -3.0f64..3.0).prop_flat_map(|(n, m, log_sigma)| vec(vec(reward(log_sigma.exp()), m), n))
}

/// Importance weights: `None` (Algorithm 1) or `lw_j ∈ [-20, 20]` (Algorithm 2).
pub fn log_weights(m: usize) -> impl Strategy<Value = Option<Vec<f64>>> {
    prop_oneof![Just(None), vec(-20.0f64..20.0, m).prop_map(Some)]
}

/// A MOSAIC instance with `n ∈ [1, 6]`, `M ∈ [1, 64]`.
pub fn mosaic_case() -> impl Strategy<Value = MosaicCase> {
    mosaic_case_sized(1..=6, 1..=64)
}

/// A MOSAIC instance with the given agent and candidate ranges.
pub fn mosaic_case_sized(
    n: RangeInclusive<usize>,
    m: RangeInclusive<usize>,
) -> impl Strategy<Value = MosaicCase> {
    (reward_matrix(n, m), tau()).prop_flat_map(|(rewards, tau)| {
        let m = rewards[0].len();
        log_weights(m).prop_map(move |log_weights| MosaicCase {
            rewards: rewards.clone(),
            tau,
            log_weights,
        })
    })
}

/// A distribution over `v` tokens, from one of the families listed in the module header.
pub fn dist(v: usize) -> impl Strategy<Value = Distribution> {
    prop_oneof![
        4 => vec(-30.0f64..30.0, v).prop_map(|z| Distribution::from_logits(&z, "q").unwrap()),
        3 => vec(exp_or_zero(), v).prop_map(normalise),
        1 => edge_dist(v),
    ]
}

/// An `Exp(1)` draw (by inverse CDF) or, one time in four, an exact zero.
fn exp_or_zero() -> impl Strategy<Value = f64> {
    prop_oneof![3 => (1e-12f64..1.0).prop_map(|u| -u.ln()), 1 => Just(0.0)]
}

fn normalise(mut w: Vec<f64>) -> Distribution {
    if w.iter().all(|&x| x == 0.0) {
        w[0] = 1.0;
    }
    let s: f64 = w.iter().sum();
    Distribution::from_probs(w.iter().map(|x| x / s).collect(), "q").unwrap()
}

/// Edge distributions: one-hot, uniform, and a near-one-hot with `1e-300` entries.
pub fn edge_dist(v: usize) -> impl Strategy<Value = Distribution> {
    (0..v, 0..3u8).prop_map(move |(hot, kind)| {
        let p = match kind {
            0 => (0..v).map(|t| if t == hot { 1.0 } else { 0.0 }).collect(),
            1 => vec![1.0 / v as f64; v],
            _ => {
                let mut p = vec![1e-300; v];
                p[hot] = 1.0 - (v as f64 - 1.0) * 1e-300;
                p
            }
        };
        Distribution::from_probs(p, "q").unwrap()
    })
}

/// Bids in `[0, 10]` with exact zeros; never all zero (the first agent gets 1 if they would be).
pub fn bids(n: usize) -> impl Strategy<Value = Vec<f64>> {
    vec(prop_oneof![1 => Just(0.0), 4 => 0.0f64..10.0], n).prop_map(|mut b| {
        if b.iter().all(|&x| x == 0.0) {
            b[0] = 1.0;
        }
        b
    })
}

/// A token step with `n` agents and `|T| = v` tokens drawn from the given ranges.
pub fn token_case(
    n: RangeInclusive<usize>,
    v: RangeInclusive<usize>,
) -> impl Strategy<Value = TokenCase> {
    (n, v).prop_flat_map(|(n, v)| {
        (vec(dist(v), n), bids(n)).prop_map(|(dists, bids)| TokenCase { dists, bids })
    })
}

/// A token step whose distributions have full support (no zero probabilities), for properties of
/// log-linear aggregation that need `log q` finite.
pub fn full_support_token_case(
    n: RangeInclusive<usize>,
    v: RangeInclusive<usize>,
) -> impl Strategy<Value = TokenCase> {
    (n, v).prop_flat_map(|(n, v)| {
        let d = vec(-10.0f64..10.0, v)
            .prop_map(|z| Distribution::from_probs(softmax(&z), "q").unwrap());
        (vec(d, n), bids(n)).prop_map(|(dists, bids)| TokenCase { dists, bids })
    })
}

/// An oracle of MOSAIC's payments and utilities with the offset (Eq. 10 + Eq. 13) that shares no
/// code with [`crate::mosaic`]: by the Rochet envelope, agent `i`'s utility of reporting `t·r_i`
/// grows at the rate `π(t·r_i)·r_i` (the allocation of Eq. 8 at that report, dotted with the true
/// rewards) and is 0 at `t = 0` (Lemma 5.2), so `U_i = ∫_0^1 π(t·r_i)·r_i dt`, here by Simpson's
/// rule on `steps` intervals, and `p_i = π(r)·r_i − U_i`. Only `exp` and the definition of the
/// allocation are used. Returns `(payments, utilities)`.
///
/// # Panics
/// If `steps` is odd or zero, or the rows are ragged (test input).
pub fn rochet_payments(
    rewards: &[Vec<f64>],
    log_weights: &[f64],
    tau: f64,
    steps: usize,
) -> (Vec<f64>, Vec<f64>) {
    assert!(
        steps > 0 && steps.is_multiple_of(2),
        "Simpson's rule needs an even number of steps"
    );
    let m = log_weights.len();
    assert!(rewards.iter().all(|r| r.len() == m), "ragged rewards");
    // π(t·r_i) · r_i with every other agent at its report.
    let rate = |i: usize, t: f64| -> f64 {
        let s: Vec<f64> = (0..m)
            .map(|j| {
                let others: f64 = (0..rewards.len())
                    .filter(|&k| k != i)
                    .map(|k| rewards[k][j] / tau)
                    .sum();
                others + t * rewards[i][j] / tau + log_weights[j]
            })
            .collect();
        let top = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|x| (x - top).exp()).collect();
        let z: f64 = e.iter().sum();
        e.iter().zip(&rewards[i]).map(|(w, r)| w / z * r).sum()
    };
    let h = 1.0 / steps as f64;
    let mut payments = Vec::with_capacity(rewards.len());
    let mut utilities = Vec::with_capacity(rewards.len());
    for i in 0..rewards.len() {
        let mut acc = rate(i, 0.0) + rate(i, 1.0);
        for k in 1..steps {
            let w = if k.is_multiple_of(2) { 2.0 } else { 4.0 };
            acc += w * rate(i, k as f64 * h);
        }
        let utility = acc * h / 3.0;
        payments.push(rate(i, 1.0) - utility);
        utilities.push(utility);
    }
    (payments, utilities)
}
