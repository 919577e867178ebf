//! Log-space primitives: log-sum-exp, softmax and log-softmax, all shifted by the maximum so that no
//! exponential overflows (sequence log-probabilities reach hundreds of nats).

/// `log Σ_j exp(x_j)`, computed as `m + log Σ_j exp(x_j - m)` with `m = max_j x_j`.
///
/// Returns `-inf` for an empty slice or when every entry is `-inf`, and `+inf` when an entry is `+inf`.
///
/// ```
/// use llm_auction_mechanism::logspace::log_sum_exp;
/// approx::assert_relative_eq!(log_sum_exp(&[1000.0, 1000.0]), 1000.0 + 2f64.ln());
/// ```
pub fn log_sum_exp(xs: &[f64]) -> f64 {
    let m = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    let s: f64 = xs.iter().map(|&x| (x - m).exp()).sum();
    m + s.ln()
}

/// Log-softmax: `x_j - LSE(x)`. Entries equal to `-inf` stay `-inf`.
pub fn log_softmax(xs: &[f64]) -> Vec<f64> {
    let z = log_sum_exp(xs);
    xs.iter().map(|&x| x - z).collect()
}

/// Softmax: `exp(x_j - LSE(x))`, the Gibbs distribution of Eq. (8) of \[SCS25\].
///
/// The result is renormalised once more by its sum so that it sums to one within a few ulps.
pub fn softmax(xs: &[f64]) -> Vec<f64> {
    let z = log_sum_exp(xs);
    let mut p: Vec<f64> = xs.iter().map(|&x| (x - z).exp()).collect();
    let s: f64 = p.iter().sum();
    if s > 0.0 && s.is_finite() {
        p.iter_mut().for_each(|v| *v /= s);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lse_matches_naive_on_small_values() {
        let xs = [0.1, -2.0, 3.5];
        let naive: f64 = xs.iter().map(|x: &f64| x.exp()).sum::<f64>().ln();
        assert!((log_sum_exp(&xs) - naive).abs() < 1e-14);
    }

    #[test]
    fn lse_edge_cases() {
        assert_eq!(log_sum_exp(&[]), f64::NEG_INFINITY);
        assert_eq!(
            log_sum_exp(&[f64::NEG_INFINITY, f64::NEG_INFINITY]),
            f64::NEG_INFINITY
        );
        assert_eq!(log_sum_exp(&[f64::NEG_INFINITY, 2.0]), 2.0);
        assert!((log_sum_exp(&[-800.0, -800.0]) - (-800.0 + 2f64.ln())).abs() < 1e-12);
    }

    #[test]
    fn softmax_handles_huge_logits_and_neg_inf() {
        let p = softmax(&[700.0, 700.0, f64::NEG_INFINITY]);
        assert_eq!(p[2], 0.0);
        assert!((p[0] - 0.5).abs() < 1e-15 && (p[1] - 0.5).abs() < 1e-15);
    }
}
