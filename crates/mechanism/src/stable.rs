//! Stable sampling and critical bids (\[DMPXZ24\] §4; constructions B and C of `docs/mechanisms.md` §1.3).
//!
//! A stable sampler is a deterministic map `s(q, b, ω)` of the distributions, the bids and an explicit
//! seed `ω` such that (1) over `ω` the token has law `p(q, b)`, and (2) for every agent `i`, as `b_i`
//! rises from 0 the outcome switches at most once, into `i`'s favour. The switch point is agent `i`'s
//! *critical bid* `θ_i(ω)`; charging `θ_i` when `i` is in its post-switch state is the second-price
//! (Myerson threshold) payment.
//!
//! * [`race`] — construction B, linear aggregation, any `n` and `|T|`: an exponential race between the
//!   agents, `j* = argmin_{b_j > 0} u_j / b_j` with `u_j ~ Exp(1)`, token `= F_{q_{j*}}^{-1}(v_{j*})`;
//!   `θ_i = u_i / min_{j≠i, b_j>0} u_j / b_j`. `P(j* = j) = w_j`, so the token has law `Σ w_j q_j`.
//! * [`two_token_threshold`] — construction C, `|T| = 2`, linear or log-linear: one uniform `u`,
//!   token A iff `u <= p_A(q, b)`; `p_A` moves monotonically toward `q_{i,A}` in `b_i`, so the flip
//!   point is a closed form.
//!
//! Symbols: `u_j → RaceSeed::exp[j]`, `v_j → RaceSeed::unif[j]`, `θ_i → critical_bids[i]`.

use crate::aggregate::{Aggregation, Bids, check_shapes};
use crate::dist::Distribution;
use crate::error::{Error, Result};
use crate::rng::{exp1, uniform_open01};
use rand::Rng;

/// The seed `ω` of the exponential race for one token step: one `Exp(1)` and one `U(0,1)` per agent.
///
/// Every agent gets its pair whatever the bids, so that changing one bid never changes the other
/// agents' draws (needed for stability).
#[derive(Debug, Clone, PartialEq)]
pub struct RaceSeed {
    /// `u_j ~ Exp(1)`, the race clocks.
    pub exp: Vec<f64>,
    /// `v_j ~ U(0,1)`, the inverse-CDF uniforms inside each agent's distribution.
    pub unif: Vec<f64>,
}

impl RaceSeed {
    /// Draws a seed for `n` agents: `(u_0, v_0), (u_1, v_1), ...` in that order from `rng`.
    pub fn draw<R: Rng + ?Sized>(n: usize, rng: &mut R) -> Self {
        let mut exp = Vec::with_capacity(n);
        let mut unif = Vec::with_capacity(n);
        for _ in 0..n {
            exp.push(exp1(rng));
            unif.push(uniform_open01(rng));
        }
        Self { exp, unif }
    }
}

/// Result of one exponential race (construction B).
#[derive(Debug, Clone, PartialEq)]
pub struct RaceDraw {
    /// The agent whose distribution the token was drawn from, `j*`.
    pub winner: usize,
    /// The token, `F_{q_{j*}}^{-1}(v_{j*})`.
    pub token: usize,
    /// `θ_i`: agent `i` wins the race iff `b_i > θ_i` (others' bids and the seed fixed). Zero when no
    /// other agent bids.
    pub critical_bids: Vec<f64>,
}

/// The exponential race, construction B of `docs/mechanisms.md` §1.3 (stable sampling of linear aggregation).
///
/// # Errors
/// Shape errors, or [`Error::LengthMismatch`] when the seed has the wrong number of agents.
pub fn race(dists: &[Distribution], bids: &Bids, seed: &RaceSeed) -> Result<RaceDraw> {
    check_shapes(dists, bids)?;
    let n = bids.len();
    if seed.exp.len() != n || seed.unif.len() != n {
        return Err(Error::LengthMismatch {
            field: "seed".into(),
            expected: n,
            got: seed.exp.len(),
        });
    }
    let b = bids.values();
    // Clock of agent j: u_j / b_j (+inf for a zero bid: it never wins).
    let clock: Vec<f64> = (0..n)
        .map(|j| {
            if b[j] > 0.0 {
                seed.exp[j] / b[j]
            } else {
                f64::INFINITY
            }
        })
        .collect();
    let winner = argmin(&clock);
    // m_i = min_{j != i} clock_j via the smallest and second-smallest clocks.
    let second = (0..n)
        .filter(|&j| j != winner)
        .map(|j| clock[j])
        .fold(f64::INFINITY, f64::min);
    let critical_bids = (0..n)
        .map(|i| {
            let m = if i == winner { second } else { clock[winner] };
            if m.is_finite() { seed.exp[i] / m } else { 0.0 }
        })
        .collect();
    let token = dists[winner].inverse_cdf(seed.unif[winner]);
    Ok(RaceDraw {
        winner,
        token,
        critical_bids,
    })
}

fn argmin(xs: &[f64]) -> usize {
    let mut best = 0;
    for (j, &x) in xs.iter().enumerate() {
        if x < xs[best] {
            best = j;
        }
    }
    best
}

/// Result of the two-token threshold sampler (construction C).
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdDraw {
    /// The token: 0 (A) iff `u <= p_A(q, b)`, else 1 (B).
    pub token: usize,
    /// For each agent, the token its bid pulls toward (`None` if its bid cannot move the outcome).
    pub pulls_toward: Vec<Option<usize>>,
    /// For each agent, `θ_i`: the outcome is `pulls_toward[i]` iff `b_i > θ_i` (others fixed);
    /// `None` when no bid of `i` changes the outcome.
    pub critical_bids: Vec<Option<f64>>,
}

/// Two-token stable sampling with closed-form critical bids, construction C of `docs/mechanisms.md` §1.3.
///
/// With `x_j = q_{j,A}` and `c = u` (linear), or `x_j = log(q_{j,A}/q_{j,B})` and
/// `c = log(u/(1-u))` (log-linear), the token is A iff `Σ_j b_j (x_j - c) >= 0`. For agent `i`,
/// with `a_i = x_i - c` and `k = Σ_{j≠i} b_j (x_j - c)`, the outcome is `sign(a_i)`'s token iff
/// `b_i > θ_i = max(0, -k / a_i)`. This is `θ = (u B' - S)/(q_{iA} - u)` (linear) and
/// `θ = (ℓ_u B' - S_L)/(L_i - ℓ_u)` (log-linear) of `docs/mechanisms.md` §1.3, clipped at 0.
///
/// # Errors
/// Shape errors; [`Error::SamplerUnavailable`] if `|T| != 2`; [`Error::OutOfRange`] if `u ∉ (0,1)`;
/// [`Error::DisjointSupports`] for a log-linear aggregate with no support.
pub fn two_token_threshold(
    aggregation: Aggregation,
    dists: &[Distribution],
    bids: &Bids,
    u: f64,
) -> Result<ThresholdDraw> {
    let v = check_shapes(dists, bids)?;
    if v != 2 {
        return Err(Error::SamplerUnavailable {
            reason: "the threshold sampler needs a two-token vocabulary",
        });
    }
    if !(u > 0.0 && u < 1.0) {
        return Err(Error::OutOfRange {
            field: "u".into(),
            value: u,
            range: "(0, 1)",
        });
    }
    let b = bids.values();
    let (x, c): (Vec<f64>, f64) = match aggregation {
        Aggregation::Linear => (dists.iter().map(|d| d.probs()[0]).collect(), u),
        Aggregation::LogLinear => (
            dists
                .iter()
                .map(|d| d.probs()[0].ln() - d.probs()[1].ln())
                .collect(),
            u.ln() - (-u).ln_1p(),
        ),
    };
    let n = b.len();
    // Agents with a positive bid whose x is +inf (force A) or -inf (force B) in the log-linear case.
    let forcing = |sign: f64, skip: Option<usize>| {
        (0..n).any(|j| Some(j) != skip && b[j] > 0.0 && x[j] == sign * f64::INFINITY)
    };
    if forcing(1.0, None) && forcing(-1.0, None) {
        return Err(Error::DisjointSupports);
    }
    let side = |j: usize| b[j] * (x[j] - c);
    let token = if forcing(1.0, None) {
        0
    } else if forcing(-1.0, None) {
        1
    } else {
        let total: f64 = (0..n).filter(|&j| b[j] > 0.0).map(side).sum();
        if total >= 0.0 { 0 } else { 1 }
    };
    let mut pulls_toward = vec![None; n];
    let mut critical_bids = vec![None; n];
    for i in 0..n {
        if forcing(1.0, Some(i)) || forcing(-1.0, Some(i)) {
            continue; // the others alone fix the token: i can never move it
        }
        let a = x[i] - c;
        if a == 0.0 {
            continue;
        }
        pulls_toward[i] = Some(if a > 0.0 { 0 } else { 1 });
        critical_bids[i] = Some(if a.is_infinite() {
            0.0
        } else {
            let k: f64 = (0..n).filter(|&j| j != i && b[j] > 0.0).map(side).sum();
            (-k / a).max(0.0)
        });
    }
    Ok(ThresholdDraw {
        token,
        pulls_toward,
        critical_bids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(p: &[f64]) -> Distribution {
        Distribution::from_probs(p.to_vec(), "q").unwrap()
    }

    #[test]
    fn race_winner_has_smallest_clock_and_thresholds_bracket() {
        let q = [d(&[0.5, 0.5]), d(&[0.1, 0.9]), d(&[1.0, 0.0])];
        let bids = Bids::new(vec![1.0, 2.0, 0.5]).unwrap();
        let seed = RaceSeed {
            exp: vec![0.3, 1.0, 0.2],
            unif: vec![0.4, 0.5, 0.6],
        };
        let r = race(&q, &bids, &seed).unwrap();
        // clocks: 0.3, 0.5, 0.4 -> agent 0 wins; its threshold = 0.3 / 0.4 = 0.75.
        assert_eq!(r.winner, 0);
        assert!((r.critical_bids[0] - 0.75).abs() < 1e-15);
        // agent 1 must beat clock 0.3: b > 1.0/0.3.
        assert!((r.critical_bids[1] - 1.0 / 0.3).abs() < 1e-12);
        assert_eq!(r.token, 0);
    }

    #[test]
    fn race_single_bidder_has_zero_threshold() {
        let q = [d(&[0.5, 0.5]), d(&[0.1, 0.9])];
        let bids = Bids::new(vec![3.0, 0.0]).unwrap();
        let seed = RaceSeed {
            exp: vec![0.3, 0.1],
            unif: vec![0.4, 0.5],
        };
        let r = race(&q, &bids, &seed).unwrap();
        assert_eq!(r.winner, 0);
        assert_eq!(r.critical_bids[0], 0.0);
    }

    #[test]
    fn threshold_linear_closed_form() {
        // q_A = (0.8, 1, 0), b = (1, 2, 2): p_A = 0.56. With u = 0.6 the token is B.
        let q = [d(&[0.8, 0.2]), d(&[1.0, 0.0]), d(&[0.0, 1.0])];
        let bids = Bids::new(vec![1.0, 2.0, 2.0]).unwrap();
        let r = two_token_threshold(Aggregation::Linear, &q, &bids, 0.6).unwrap();
        assert_eq!(r.token, 1);
        // Agent 1 pulls to A: θ = (u B' - S)/(q - u) = (0.6*3 - 0.8)/(1 - 0.6) = 2.5.
        assert_eq!(r.pulls_toward[1], Some(0));
        assert!((r.critical_bids[1].unwrap() - 2.5).abs() < 1e-12);
        // Agent 2 pulls to B: others alone give p_A = 2.8/3 > u; θ = (S - uB')/(u - q) = (2.8-1.8)/0.6.
        assert_eq!(r.pulls_toward[2], Some(1));
        assert!((r.critical_bids[2].unwrap() - 1.0 / 0.6).abs() < 1e-12);
    }

    #[test]
    fn threshold_log_linear_with_forcing_agent() {
        let q = [d(&[1.0, 0.0]), d(&[0.3, 0.7])];
        let bids = Bids::new(vec![1.0, 5.0]).unwrap();
        let r = two_token_threshold(Aggregation::LogLinear, &q, &bids, 0.5).unwrap();
        assert_eq!(r.token, 0);
        assert_eq!(r.critical_bids[0], Some(0.0));
        assert_eq!(r.critical_bids[1], None);
        let q = [d(&[1.0, 0.0]), d(&[0.0, 1.0])];
        assert!(two_token_threshold(Aggregation::LogLinear, &q, &bids, 0.5).is_err());
    }
}
