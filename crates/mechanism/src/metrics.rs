//! Metrics of the MOSAIC experiments (\[SCS25\] §6): reward gain (Eq. 19), utility gain, Pearson
//! correlation and the least-squares line with its `R²`.

use crate::error::{Error, Result, check_finite};
use serde::Serialize;

/// Reward gain of Eq. 19: `Σ_j r_i(y_j) π(y_j) - Σ_j r_i(y_{-i,j}) π^{-i}(y_{-i,j})`, i.e. the
/// expected reward with the agent minus the expected reward on the candidates and allocation that
/// would have arisen without it. Footnote 9 approximates the second term from the candidates that do
/// not mention the agent; the caller chooses the candidates and allocation it passes.
///
/// # Errors
/// [`Error::LengthMismatch`] if a reward vector and its allocation differ in length;
/// [`Error::NonFinite`] for non-finite inputs.
pub fn reward_gain(
    rewards_with: &[f64],
    allocation_with: &[f64],
    rewards_without: &[f64],
    allocation_without: &[f64],
) -> Result<f64> {
    let with = dot("allocation_with", rewards_with, allocation_with)?;
    let without = dot("allocation_without", rewards_without, allocation_without)?;
    Ok(with - without)
}

/// Utility gain: reward gain minus the payment (\[SCS25\] §6, Figure 2b).
pub fn utility_gain(reward_gain: f64, payment: f64) -> f64 {
    reward_gain - payment
}

fn dot(field: &str, a: &[f64], b: &[f64]) -> Result<f64> {
    if a.len() != b.len() {
        return Err(Error::LengthMismatch {
            field: field.into(),
            expected: a.len(),
            got: b.len(),
        });
    }
    check_finite(field, b)?;
    check_finite("rewards", a)?;
    Ok(a.iter().zip(b).map(|(x, y)| x * y).sum())
}

fn check_pairs(x: &[f64], y: &[f64]) -> Result<()> {
    if x.len() != y.len() {
        return Err(Error::LengthMismatch {
            field: "y".into(),
            expected: x.len(),
            got: y.len(),
        });
    }
    if x.len() < 2 {
        return Err(Error::Empty {
            field: "x (at least two points are needed)".into(),
        });
    }
    check_finite("x", x)?;
    check_finite("y", y)
}

fn moments(x: &[f64], y: &[f64]) -> (f64, f64, f64, f64, f64) {
    let n = x.len() as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
        sxy += (a - mx) * (b - my);
    }
    (mx, my, sxx, syy, sxy)
}

/// Pearson correlation `Σ(x-x̄)(y-ȳ) / sqrt(Σ(x-x̄)² Σ(y-ȳ)²)`; `None` when either sample is constant.
///
/// # Errors
/// Fewer than two points, mismatched lengths, non-finite values.
pub fn pearson(x: &[f64], y: &[f64]) -> Result<Option<f64>> {
    check_pairs(x, y)?;
    let (_, _, sxx, syy, sxy) = moments(x, y);
    if sxx == 0.0 || syy == 0.0 {
        return Ok(None);
    }
    Ok(Some((sxy / (sxx.sqrt() * syy.sqrt())).clamp(-1.0, 1.0)))
}

/// A least-squares line `y ≈ slope·x + intercept` and its coefficient of determination.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LinearFit {
    /// Slope.
    pub slope: f64,
    /// Intercept.
    pub intercept: f64,
    /// `R² = 1 - SS_res / SS_tot` (equal to the squared Pearson correlation); 1 when `y` is constant
    /// and fitted exactly.
    pub r2: f64,
}

/// Ordinary least squares of `y` on `x` (Figures 3b, 4, 5 of \[SCS25\]).
///
/// # Errors
/// As [`pearson`]; [`Error::Empty`] if `x` is constant (the slope is undefined).
pub fn least_squares(x: &[f64], y: &[f64]) -> Result<LinearFit> {
    check_pairs(x, y)?;
    let (mx, my, sxx, syy, sxy) = moments(x, y);
    if sxx == 0.0 {
        return Err(Error::Empty {
            field: "x (all values equal; the slope is undefined)".into(),
        });
    }
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let r2 = if syy == 0.0 {
        1.0
    } else {
        (sxy * sxy / (sxx * syy)).clamp(0.0, 1.0)
    };
    Ok(LinearFit {
        slope,
        intercept,
        r2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_fit() {
        // y = 2x + 1 exactly.
        let x = [0.0, 1.0, 2.0, 3.0];
        let y = [1.0, 3.0, 5.0, 7.0];
        let f = least_squares(&x, &y).unwrap();
        assert!((f.slope - 2.0).abs() < 1e-15 && (f.intercept - 1.0).abs() < 1e-15);
        assert!((f.r2 - 1.0).abs() < 1e-15);
        assert!((pearson(&x, &y).unwrap().unwrap() - 1.0).abs() < 1e-15);
        // x = (1,2,3), y = (1,3,2): r = 0.5, slope 0.5, intercept 1.
        let f = least_squares(&[1.0, 2.0, 3.0], &[1.0, 3.0, 2.0]).unwrap();
        assert!((f.slope - 0.5).abs() < 1e-15 && (f.intercept - 1.0).abs() < 1e-15);
        assert!((f.r2 - 0.25).abs() < 1e-15);
        assert!(pearson(&[1.0, 1.0], &[1.0, 2.0]).unwrap().is_none());
        assert!(least_squares(&[1.0], &[1.0]).is_err());
    }

    #[test]
    fn reward_gain_hand_case() {
        // with: r = (1, 3), π = (0.25, 0.75) -> 2.5; without: r = (1, 1), π = (0.5, 0.5) -> 1.
        let g = reward_gain(&[1.0, 3.0], &[0.25, 0.75], &[1.0, 1.0], &[0.5, 0.5]).unwrap();
        assert!((g - 1.5).abs() < 1e-15);
        assert!((utility_gain(g, 0.5) - 1.0).abs() < 1e-15);
    }
}
