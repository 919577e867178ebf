//! The summary's statistics: means with Student-t intervals, Pearson correlations with Fisher-z
//! intervals, quantile trimming.

use llm_auction_mechanism::metrics::pearson;
use serde::Serialize;
use statrs::distribution::{ContinuousCDF, StudentsT};

/// Mean with a 95 % confidence interval.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Ci {
    /// Mean.
    pub mean: f64,
    /// Lower bound.
    pub lo: f64,
    /// Upper bound.
    pub hi: f64,
    /// Observations.
    pub n: usize,
}

/// Mean ± `t_{0.975, n-1}` standard errors (Student's t: the grids have n ≈ 30 instances, where the
/// normal 1.96 is too narrow); one observation has a zero-width interval.
pub fn mean_ci(xs: &[f64]) -> Ci {
    let n = xs.len();
    if n == 0 {
        return Ci {
            mean: f64::NAN,
            lo: f64::NAN,
            hi: f64::NAN,
            n,
        };
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    let var = if n > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64
    } else {
        0.0
    };
    let half = t_975(n - 1) * (var / n as f64).sqrt();
    Ci {
        mean,
        lo: mean - half,
        hi: mean + half,
        n,
    }
}

/// The 0.975 quantile of Student's t with `df` degrees of freedom (0 for `df = 0`).
fn t_975(df: usize) -> f64 {
    if df == 0 {
        return 0.0;
    }
    StudentsT::new(0.0, 1.0, df as f64).map_or(1.96, |t| t.inverse_cdf(0.975))
}

/// Pearson correlation with a Fisher-z 95 % interval (`None` for fewer than 4 points or no variance).
pub fn pearson_ci(x: &[f64], y: &[f64]) -> Option<Ci> {
    let r = pearson(x, y).ok().flatten()?;
    let n = x.len();
    if n < 4 {
        return None;
    }
    let z = r.clamp(-0.999_999, 0.999_999).atanh();
    let half = 1.96 / ((n - 3) as f64).sqrt();
    Some(Ci {
        mean: r,
        lo: (z - half).tanh(),
        hi: (z + half).tanh(),
        n,
    })
}

/// Drops points whose x or y is in the top or bottom `q` quantile (the paper trims 0.5 %).
pub fn trim(points: &[(f64, f64)], q: f64) -> Vec<(f64, f64)> {
    let quant = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * p).round() as usize]
    };
    if points.len() < 20 {
        return points.to_vec();
    }
    let (mut xs, mut ys): (Vec<f64>, Vec<f64>) = points.iter().copied().unzip();
    let (xl, xh) = (quant(&mut xs, q), quant(&mut xs, 1.0 - q));
    let (yl, yh) = (quant(&mut ys, q), quant(&mut ys, 1.0 - q));
    points
        .iter()
        .copied()
        .filter(|&(x, y)| x >= xl && x <= xh && y >= yl && y <= yh)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_on_hand_computed_cases() {
        let c = mean_ci(&[1.0, 2.0, 3.0, 4.0]);
        // sd = sqrt(5/3); half width = t_{0.975,3} · sd / 2, t_{0.975,3} = 3.182446 (tables).
        assert!((c.mean - 2.5).abs() < 1e-12);
        let half = 3.182_446_305_284_263 * (5.0f64 / 3.0).sqrt() / 2.0;
        assert!((c.hi - c.mean - half).abs() < 1e-9, "{c:?}");
        assert!((c.mean - c.lo - half).abs() < 1e-9, "{c:?}");
        // At 30 observations t_{0.975,29} = 2.045230 (tables), wider than the normal 1.96.
        assert!((t_975(29) - 2.045_229_642_132_703).abs() < 1e-9);
        let one = mean_ci(&[5.0]);
        assert_eq!((one.lo, one.hi), (5.0, 5.0));
        let p = pearson_ci(&[1.0, 2.0, 3.0, 4.0, 5.0], &[2.0, 4.0, 6.0, 8.0, 10.5]).unwrap();
        assert!(p.mean > 0.99 && p.lo < p.mean && p.hi <= 1.0);
        let pts: Vec<(f64, f64)> = (0..1000).map(|i| (i as f64, i as f64)).collect();
        let t = trim(&pts, 0.005);
        assert_eq!(t.len(), 1000 - 2 * 5);
    }
}
