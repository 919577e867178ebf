//! Validated next-token distributions `q ∈ Δ(T)` (\[DMPXZ24\] §2: an LLM maps a prefix to `Δ(T)`).
//!
//! A [`Distribution`] is finite, non-negative and sums to one; it is built once from probabilities,
//! logits or log-probabilities and never re-checked afterwards. Vocabularies of hundreds of thousands
//! of tokens are plain vectors.

use crate::error::{Error, Result};
use crate::logspace::{log_sum_exp, softmax};
use crate::tol::SUM_EPS;
use serde::Serialize;

/// A probability vector over a finite vocabulary: entries finite, `>= 0`, sum 1.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Distribution {
    probs: Vec<f64>,
}

impl Distribution {
    /// Builds a distribution from probabilities; `field` names the input in error messages.
    ///
    /// Entries must be finite and non-negative and sum to 1 within [`SUM_EPS`]; the vector is then
    /// divided by its sum, so the stored vector sums to one up to rounding.
    ///
    /// # Errors
    /// [`Error::Empty`], [`Error::NonFinite`], [`Error::Negative`], [`Error::NotNormalised`].
    ///
    /// ```
    /// use llm_auction_mechanism::dist::Distribution;
    /// let q = Distribution::from_probs(vec![0.8, 0.2], "q").unwrap();
    /// assert_eq!(q.probs(), &[0.8, 0.2]);
    /// assert!(Distribution::from_probs(vec![0.8, 0.3], "q").is_err());
    /// ```
    pub fn from_probs(probs: Vec<f64>, field: &str) -> Result<Self> {
        if probs.is_empty() {
            return Err(Error::Empty {
                field: field.to_string(),
            });
        }
        for (t, &p) in probs.iter().enumerate() {
            if !p.is_finite() {
                return Err(Error::non_finite(format!("{field}[{t}]"), p));
            }
            if p < 0.0 {
                return Err(Error::Negative {
                    field: format!("{field}[{t}]"),
                    value: p,
                });
            }
        }
        let sum: f64 = probs.iter().sum();
        if (sum - 1.0).abs() > SUM_EPS {
            return Err(Error::NotNormalised {
                field: field.to_string(),
                sum,
            });
        }
        let mut probs = probs;
        if sum != 1.0 {
            probs.iter_mut().for_each(|p| *p /= sum);
        }
        Ok(Self { probs })
    }

    /// Builds `softmax(logits)`. Entries may be `-inf` (masked tokens) but not NaN or `+inf`, and at
    /// least one must be finite.
    ///
    /// # Errors
    /// [`Error::Empty`], [`Error::NonFinite`].
    pub fn from_logits(logits: &[f64], field: &str) -> Result<Self> {
        check_log_domain(logits, field)?;
        Ok(Self {
            probs: softmax(logits),
        })
    }

    /// Builds a distribution from log-probabilities (`-inf` allowed for zero-probability tokens);
    /// `LSE(log_probs)` must be 0 within [`SUM_EPS`].
    ///
    /// # Errors
    /// [`Error::Empty`], [`Error::NonFinite`], [`Error::NotNormalised`].
    pub fn from_log_probs(log_probs: &[f64], field: &str) -> Result<Self> {
        check_log_domain(log_probs, field)?;
        let z = log_sum_exp(log_probs);
        if z.abs() > SUM_EPS {
            return Err(Error::NotNormalised {
                field: field.to_string(),
                sum: z.exp(),
            });
        }
        Ok(Self {
            probs: softmax(log_probs),
        })
    }

    /// The probabilities `q(t)`.
    pub fn probs(&self) -> &[f64] {
        &self.probs
    }

    /// Vocabulary size `|T|`.
    pub fn len(&self) -> usize {
        self.probs.len()
    }

    /// Always false: a distribution has at least one token.
    pub fn is_empty(&self) -> bool {
        self.probs.is_empty()
    }

    /// `log q(t)` for every token (`-inf` where `q(t) = 0`).
    pub fn log_probs(&self) -> Vec<f64> {
        self.probs.iter().map(|p| p.ln()).collect()
    }

    /// Inverse-CDF sampling with one uniform `u ∈ (0, 1)`: the smallest `t` with `Σ_{s<=t} q(s) > u`.
    ///
    /// Tokens of probability zero are never returned; if rounding leaves the cumulative sum below
    /// `u`, the last token of positive probability is returned.
    pub fn inverse_cdf(&self, u: f64) -> usize {
        inverse_cdf(&self.probs, u)
    }

    pub(crate) fn from_normalised_unchecked(probs: Vec<f64>) -> Self {
        Self { probs }
    }
}

/// One validated [`Distribution`] per row, named `field[i]` in errors (the agents' next-token
/// distributions of a token-auction step).
///
/// # Errors
/// As [`Distribution::from_probs`], naming the row.
pub fn from_prob_rows(rows: Vec<Vec<f64>>, field: &str) -> Result<Vec<Distribution>> {
    rows.into_iter()
        .enumerate()
        .map(|(i, p)| Distribution::from_probs(p, &format!("{field}[{i}]")))
        .collect()
}

/// Inverse-CDF draw over a probability vector (see [`Distribution::inverse_cdf`]); used by both the
/// token auction and the MOSAIC draw (M18, `docs/mechanisms.md` §3.1: the draw uses only the allocation).
pub fn inverse_cdf(probs: &[f64], u: f64) -> usize {
    let mut acc = 0.0;
    let mut last_positive = 0;
    for (t, &p) in probs.iter().enumerate() {
        if p > 0.0 {
            last_positive = t;
            acc += p;
            if acc > u {
                return t;
            }
        }
    }
    last_positive
}

fn check_log_domain(xs: &[f64], field: &str) -> Result<()> {
    if xs.is_empty() {
        return Err(Error::Empty {
            field: field.to_string(),
        });
    }
    for (t, &x) in xs.iter().enumerate() {
        if x.is_nan() || x == f64::INFINITY {
            return Err(Error::non_finite(format!("{field}[{t}]"), x));
        }
    }
    if xs.iter().all(|&x| x == f64::NEG_INFINITY) {
        return Err(Error::non_finite(format!("{field}[0]"), f64::NEG_INFINITY));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prob_rows_name_the_bad_row() {
        let ok = from_prob_rows(vec![vec![0.5, 0.5], vec![1.0, 0.0]], "distributions").unwrap();
        assert_eq!(ok[1].probs(), &[1.0, 0.0]);
        let e = from_prob_rows(vec![vec![0.5, 0.5], vec![0.9, 0.3]], "distributions").unwrap_err();
        assert!(e.to_string().starts_with("distributions[1]: "), "{e}");
    }

    #[test]
    fn rejects_bad_vectors() {
        assert!(matches!(
            Distribution::from_probs(vec![], "q"),
            Err(Error::Empty { .. })
        ));
        assert!(matches!(
            Distribution::from_probs(vec![f64::NAN, 1.0], "q"),
            Err(Error::NonFinite { .. })
        ));
        assert!(matches!(
            Distribution::from_probs(vec![-0.1, 1.1], "q"),
            Err(Error::Negative { .. })
        ));
        assert!(matches!(
            Distribution::from_probs(vec![0.5, 0.6], "q"),
            Err(Error::NotNormalised { .. })
        ));
        assert!(Distribution::from_logits(&[f64::NEG_INFINITY; 3], "q").is_err());
        assert!(Distribution::from_log_probs(&[0.0, 0.0], "q").is_err());
    }

    #[test]
    fn logits_and_log_probs_agree() {
        let logits = [2.0, -1.0, 0.5, f64::NEG_INFINITY];
        let a = Distribution::from_logits(&logits, "q").unwrap();
        let b = Distribution::from_log_probs(&a.log_probs(), "q").unwrap();
        for (x, y) in a.probs().iter().zip(b.probs()) {
            assert!((x - y).abs() < 1e-15);
        }
        assert_eq!(a.probs()[3], 0.0);
    }

    #[test]
    fn inverse_cdf_skips_zero_mass() {
        let q = Distribution::from_probs(vec![0.0, 0.5, 0.0, 0.5, 0.0], "q").unwrap();
        assert_eq!(q.inverse_cdf(1e-300), 1);
        assert_eq!(q.inverse_cdf(0.49), 1);
        assert_eq!(q.inverse_cdf(0.51), 3);
        assert_eq!(q.inverse_cdf(1.0), 3);
    }

    #[test]
    fn large_vocabulary_is_fine() {
        let v = 256_000;
        let q = Distribution::from_logits(&vec![0.0; v], "q").unwrap();
        assert_eq!(q.len(), v);
        assert!((q.probs().iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }
}
