//! Bid-weighted aggregation of the agents' next-token distributions (\[DMPXZ24\], `docs/mechanisms.md` §1.1).
//!
//! Symbols: `b_i → bids[i]`, `w_i = b_i / Σ_j b_j → weights[i]`, `q_i(t) → dists[i].probs()[t]`,
//! `z_i → logits[i]`.
//!
//! * [`Aggregation::Linear`] minimises `Σ_i b_i KL(q_i ‖ p)`: `p(t) = Σ_i w_i q_i(t)`.
//! * [`Aggregation::LogLinear`] minimises `Σ_i b_i KL(p ‖ q_i)`:
//!   `p(t) ∝ Π_i q_i(t)^{w_i}`, i.e. `p = softmax(Σ_i w_i log q_i) = softmax(Σ_i w_i z_i)`.
//!
//! A zero-bid agent has no influence; all-zero bids are an error ([`Error::AllBidsZero`]).

use crate::dist::Distribution;
use crate::error::{Error, Result};
use crate::logspace::softmax;
use serde::{Deserialize, Serialize};

/// Which aggregation function `p(q, b)` to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Aggregation {
    /// Bid-weighted average (convex combination) of the distributions.
    Linear,
    /// Bid-weighted geometric mean (log-space convex combination), renormalised.
    #[serde(alias = "log-linear")]
    LogLinear,
}

/// Validated bids: finite, `>= 0`, at least one positive.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Bids(Vec<f64>);

impl Bids {
    /// Validates a bid vector.
    ///
    /// # Errors
    /// [`Error::Empty`], [`Error::NonFinite`], [`Error::Negative`], [`Error::AllBidsZero`].
    pub fn new(bids: Vec<f64>) -> Result<Self> {
        if bids.is_empty() {
            return Err(Error::Empty {
                field: "bids".into(),
            });
        }
        for (i, &b) in bids.iter().enumerate() {
            if !b.is_finite() {
                return Err(Error::non_finite(format!("bids[{i}]"), b));
            }
            if b < 0.0 {
                return Err(Error::Negative {
                    field: format!("bids[{i}]"),
                    value: b,
                });
            }
        }
        if bids.iter().all(|&b| b == 0.0) {
            return Err(Error::AllBidsZero);
        }
        Ok(Self(bids))
    }

    /// The bids `b_i`.
    pub fn values(&self) -> &[f64] {
        &self.0
    }

    /// Number of agents.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false (validated non-empty).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Normalised weights `w_i = b_i / Σ_j b_j` (§1.5).
    ///
    /// When `Σ b` overflows (bids near `f64::MAX`), the bids are first divided by the largest one,
    /// so the weights stay exact ratios.
    pub fn weights(&self) -> Vec<f64> {
        let total: f64 = self.0.iter().sum();
        if total.is_finite() {
            return self.0.iter().map(|b| b / total).collect();
        }
        let max = self.0.iter().copied().fold(0.0, f64::max);
        let scaled: Vec<f64> = self.0.iter().map(|b| b / max).collect();
        let total: f64 = scaled.iter().sum();
        scaled.iter().map(|b| b / total).collect()
    }

    /// The same bids with agent `i`'s bid replaced by `b` (for threshold and monotonicity checks).
    ///
    /// # Errors
    /// [`Error::OutOfRange`] naming `bids[i]` when there is no agent `i`; otherwise as [`Bids::new`].
    pub fn with_bid(&self, i: usize, b: f64) -> Result<Self> {
        let mut v = self.0.clone();
        let Some(slot) = v.get_mut(i) else {
            return Err(Error::OutOfRange {
                field: format!("bids[{i}]"),
                value: i as f64,
                range: "the agents' indices",
            });
        };
        *slot = b;
        Self::new(v)
    }
}

/// Checks that there is one distribution per bid and that all share one vocabulary; returns `|T|`.
pub(crate) fn check_shapes(dists: &[Distribution], bids: &Bids) -> Result<usize> {
    if dists.is_empty() {
        return Err(Error::Empty {
            field: "distributions".into(),
        });
    }
    if dists.len() != bids.len() {
        return Err(Error::LengthMismatch {
            field: "bids".into(),
            expected: dists.len(),
            got: bids.len(),
        });
    }
    let v = dists[0].len();
    for (i, d) in dists.iter().enumerate() {
        if d.len() != v {
            return Err(Error::LengthMismatch {
                field: format!("distributions[{i}]"),
                expected: v,
                got: d.len(),
            });
        }
    }
    Ok(v)
}

/// Aggregation `p(q, b)`, `docs/mechanisms.md` §1.1: linear `Σ_i w_i q_i` or log-linear `softmax(Σ_i w_i log q_i)`.
///
/// # Errors
/// Shape errors ([`Error::Empty`], [`Error::LengthMismatch`]); [`Error::DisjointSupports`] when the
/// log-linear aggregate puts no mass anywhere.
///
/// ```
/// use llm_auction_mechanism::aggregate::{aggregate, Aggregation, Bids};
/// use llm_auction_mechanism::dist::Distribution;
/// // The Google blog's example: (0.8, 0.2), (1, 0), (0, 1) with bids 1, 2, 2.
/// let q = [vec![0.8, 0.2], vec![1.0, 0.0], vec![0.0, 1.0]]
///     .map(|p| Distribution::from_probs(p, "q").unwrap());
/// let p = aggregate(Aggregation::Linear, &q, &Bids::new(vec![1.0, 2.0, 2.0]).unwrap()).unwrap();
/// approx::assert_relative_eq!(p.probs()[0], 0.56, epsilon = 1e-12);
/// approx::assert_relative_eq!(p.probs()[1], 0.44, epsilon = 1e-12);
/// ```
pub fn aggregate(
    aggregation: Aggregation,
    dists: &[Distribution],
    bids: &Bids,
) -> Result<Distribution> {
    let v = check_shapes(dists, bids)?;
    let w = bids.weights();
    match aggregation {
        Aggregation::Linear => Ok(linear(dists, &w, v)),
        Aggregation::LogLinear => {
            let scores = weighted_log_sum(dists.iter().map(|d| d.probs()), &w, v, |p| p.ln());
            from_scores(&scores)
        }
    }
}

/// Log-linear aggregation from raw logits, `p = softmax(Σ_i w_i z_i)` (§1.5: the per-agent
/// log-normalisers cancel because `Σ w_i = 1`). `-inf` logits are allowed; NaN and `+inf` are not.
///
/// # Errors
/// [`Error::Empty`], [`Error::LengthMismatch`], [`Error::NonFinite`], [`Error::DisjointSupports`].
pub fn log_linear_from_logits(logits: &[Vec<f64>], bids: &Bids) -> Result<Distribution> {
    if logits.is_empty() {
        return Err(Error::Empty {
            field: "logits".into(),
        });
    }
    if logits.len() != bids.len() {
        return Err(Error::LengthMismatch {
            field: "bids".into(),
            expected: logits.len(),
            got: bids.len(),
        });
    }
    let v = logits[0].len();
    for (i, z) in logits.iter().enumerate() {
        if z.len() != v {
            return Err(Error::LengthMismatch {
                field: format!("logits[{i}]"),
                expected: v,
                got: z.len(),
            });
        }
        if let Some((t, &x)) = z
            .iter()
            .enumerate()
            .find(|(_, x)| x.is_nan() || **x == f64::INFINITY)
        {
            return Err(Error::non_finite(format!("logits[{i}][{t}]"), x));
        }
    }
    if v == 0 {
        return Err(Error::Empty {
            field: "logits[0]".into(),
        });
    }
    let scores = weighted_log_sum(
        logits.iter().map(|z| z.as_slice()),
        &bids.weights(),
        v,
        |x| x,
    );
    from_scores(&scores)
}

fn linear(dists: &[Distribution], w: &[f64], v: usize) -> Distribution {
    let mut p = vec![0.0; v];
    for (d, &wi) in dists.iter().zip(w) {
        if wi > 0.0 {
            p.iter_mut()
                .zip(d.probs())
                .for_each(|(pt, q)| *pt += wi * q);
        }
    }
    let s: f64 = p.iter().sum();
    p.iter_mut().for_each(|x| *x /= s);
    Distribution::from_normalised_unchecked(p)
}

/// `Σ_{i: w_i > 0} w_i f(x_i(t))` for every token; zero-weight agents are skipped (so `0 · -inf`
/// never appears).
fn weighted_log_sum<'a>(
    rows: impl Iterator<Item = &'a [f64]>,
    w: &[f64],
    v: usize,
    f: impl Fn(f64) -> f64,
) -> Vec<f64> {
    let mut s = vec![0.0; v];
    for (row, &wi) in rows.zip(w) {
        if wi > 0.0 {
            s.iter_mut().zip(row).for_each(|(st, &x)| *st += wi * f(x));
        }
    }
    s
}

fn from_scores(scores: &[f64]) -> Result<Distribution> {
    if scores.iter().all(|&s| s == f64::NEG_INFINITY) {
        return Err(Error::DisjointSupports);
    }
    Ok(Distribution::from_normalised_unchecked(softmax(scores)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn with_bid_replaces_one_bid_and_names_a_missing_agent() {
        let b = Bids::new(vec![1.0, 2.0]).unwrap();
        assert_eq!(
            b.with_bid(1, 5.0).unwrap().weights(),
            vec![1.0 / 6.0, 5.0 / 6.0]
        );
        let e = b.with_bid(2, 1.0).unwrap_err();
        assert!(e.to_string().starts_with("bids[2]:"), "{e}");
        assert!(b.with_bid(0, -1.0).is_err());
    }

    #[test]
    fn weights_of_bids_near_f64_max() {
        // Regression: [1e308, 1e308] gave a null linear aggregate and [0.5, 0.5] log-linear.
        let w = Bids::new(vec![1e308, 1e308]).unwrap().weights();
        assert_eq!(w, vec![0.5, 0.5]);
        let w = Bids::new(vec![f64::MAX, f64::MAX / 3.0]).unwrap().weights();
        assert!(
            (w[0] - 0.75).abs() < 1e-15 && (w[1] - 0.25).abs() < 1e-15,
            "{w:?}"
        );
    }

    use super::*;

    fn d(p: &[f64]) -> Distribution {
        Distribution::from_probs(p.to_vec(), "q").unwrap()
    }

    #[test]
    fn bids_validation() {
        assert!(matches!(Bids::new(vec![0.0, 0.0]), Err(Error::AllBidsZero)));
        assert!(matches!(
            Bids::new(vec![1.0, -1.0]),
            Err(Error::Negative { .. })
        ));
        assert!(matches!(
            Bids::new(vec![f64::NAN]),
            Err(Error::NonFinite { .. })
        ));
        assert!(matches!(Bids::new(vec![]), Err(Error::Empty { .. })));
    }

    #[test]
    fn log_linear_two_agents_is_geometric_mean() {
        let q = [d(&[0.5, 0.5]), d(&[0.9, 0.1])];
        let p = aggregate(
            Aggregation::LogLinear,
            &q,
            &Bids::new(vec![1.0, 1.0]).unwrap(),
        )
        .unwrap();
        let a = (0.5f64 * 0.9).sqrt();
        let b = (0.5f64 * 0.1).sqrt();
        assert!((p.probs()[0] - a / (a + b)).abs() < 1e-15);
    }

    #[test]
    fn log_linear_disjoint_supports_is_an_error() {
        let q = [d(&[1.0, 0.0]), d(&[0.0, 1.0])];
        let r = aggregate(
            Aggregation::LogLinear,
            &q,
            &Bids::new(vec![1.0, 1.0]).unwrap(),
        );
        assert!(matches!(r, Err(Error::DisjointSupports)));
        // ... but a zero-bid agent does not count.
        let p = aggregate(
            Aggregation::LogLinear,
            &q,
            &Bids::new(vec![1.0, 0.0]).unwrap(),
        )
        .unwrap();
        assert_eq!(p.probs(), &[1.0, 0.0]);
    }

    #[test]
    fn shape_errors_name_the_field() {
        let q = [d(&[0.5, 0.5]), d(&[0.2, 0.3, 0.5])];
        let e =
            aggregate(Aggregation::Linear, &q, &Bids::new(vec![1.0, 1.0]).unwrap()).unwrap_err();
        assert!(e.to_string().contains("distributions[1]"));
    }
}
