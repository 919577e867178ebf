//! Shared helpers of the property proofs: per-property proptest configuration (case counts, the
//! `@@prop` report line read by `cargo xtask verify`, the seed and the regression files), and the
//! independent oracles the properties compare the crate against: log-space utilities, adaptive
//! Gauss-Kronrod quadrature, the Rochet (envelope) utility of a softmax allocation, and a binomial
//! tail bound. None of them calls the crate under test.

use crate::catalog::CATALOG;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed};

/// Environment variable holding the base case count. (Not `PROPTEST_CASES`: proptest applies that
/// one to every test after our configuration, which would undo the per-property divisors.)
pub const CASES_VAR: &str = "LLM_AUCTION_CASES";

/// The proptest seed of `cargo test` when `PROPTEST_RNG_SEED` is not set (`cargo xtask verify`
/// sets it, to a fresh seed per run unless `--seed` is given).
pub const DEFAULT_SEED: u64 = 0x5EED_A0C7;

/// Base case count: `$LLM_AUCTION_CASES`, or 64.
fn base_cases() -> u32 {
    std::env::var(CASES_VAR)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64)
}

/// Number of cases property `id` runs with.
pub fn cases(id: &str) -> u32 {
    let prop = CATALOG
        .iter()
        .find(|p| p.id == id)
        .expect("property id is in the catalog");
    (base_cases() / prop.divisor).max(1)
}

/// The proptest configuration of property `id`; prints the report line `@@prop|id|cases|...` on
/// stderr (libtest owns stdout, so the two never interleave within a line).
///
/// * Seed: `PROPTEST_RNG_SEED` when set (proptest's own `Config::default()` reads it), else the
///   fixed [`DEFAULT_SEED`], so plain `cargo test` runs are reproducible.
/// * Failures persist next to the test source, in `tests/lemmas/<file>.proptest-regressions`
///   (proptest's default would be `tests/proptest-regressions/<file>.txt`); proptest replays every
///   seed listed there before generating new cases, so commit those files.
pub fn config(id: &str) -> Config {
    let prop = CATALOG
        .iter()
        .find(|p| p.id == id)
        .expect("property id is in the catalog");
    let n = cases(id);
    eprintln!("@@prop|{}|{}|{}|{}", prop.id, n, prop.property, prop.source);
    let mut cfg = Config {
        cases: n,
        max_shrink_iters: 2048,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    };
    if std::env::var("PROPTEST_DISABLE_FAILURE_PERSISTENCE").is_ok() {
        cfg.failure_persistence = None;
    }
    if std::env::var("PROPTEST_RNG_SEED").is_err() {
        cfg.rng_seed = RngSeed::Fixed(DEFAULT_SEED);
    }
    cfg
}

/// Prints the report line of a deterministic property (one case).
pub fn report_fixed(id: &str) {
    let prop = CATALOG
        .iter()
        .find(|p| p.id == id)
        .expect("property id is in the catalog");
    eprintln!("@@prop|{}|1|{}|{}", prop.id, prop.property, prop.source);
}

/// Independent log-sum-exp (not the crate's).
pub fn lse(xs: &[f64]) -> f64 {
    let m = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + xs.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// Independent softmax (not the crate's).
pub fn softmax(xs: &[f64]) -> Vec<f64> {
    let m = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = xs.iter().map(|x| (x - m).exp()).collect();
    let z: f64 = e.iter().sum();
    e.iter().map(|x| x / z).collect()
}

/// `s = 1 + max |x|` over several slices.
pub fn scale(parts: &[&[f64]]) -> f64 {
    1.0 + parts
        .iter()
        .flat_map(|p| p.iter())
        .fold(0.0f64, |m, x| m.max(x.abs()))
}

/// Dot product.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

// ---------------------------------------------------------------------------------------------
// Quadrature.

/// Kronrod nodes of the 15-point rule on `[-1, 1]` (QUADPACK `qk15`); the odd-indexed ones (and
/// the centre) are the 7-point Gauss nodes.
const XGK: [f64; 8] = [
    0.991_455_371_120_812_6,
    0.949_107_912_342_758_5,
    0.864_864_423_359_769_1,
    0.741_531_185_599_394_4,
    0.586_087_235_467_691_1,
    0.405_845_151_377_397_2,
    0.207_784_955_007_898_5,
    0.0,
];
/// Kronrod weights.
const WGK: [f64; 8] = [
    0.022_935_322_010_529_22,
    0.063_092_092_629_978_55,
    0.104_790_010_322_250_2,
    0.140_653_259_715_525_9,
    0.169_004_726_639_267_9,
    0.190_350_578_064_785_4,
    0.204_432_940_075_298_9,
    0.209_482_141_084_727_8,
];
/// Gauss weights of nodes `XGK[1], XGK[3], XGK[5], XGK[7]`.
const WG: [f64; 4] = [
    0.129_484_966_168_869_7,
    0.279_705_391_489_276_7,
    0.381_830_050_505_118_9,
    0.417_959_183_673_469_4,
];

/// One Gauss-Kronrod 7/15 panel: `(K15, |K15 - G7|)`.
fn gk15(f: &mut impl FnMut(f64) -> f64, a: f64, b: f64) -> (f64, f64) {
    let c = 0.5 * (a + b);
    let h = 0.5 * (b - a);
    let fc = f(c);
    let mut k = WGK[7] * fc;
    let mut g = WG[3] * fc;
    for (j, (&x, &w)) in XGK.iter().zip(&WGK).take(7).enumerate() {
        let pair = f(c - h * x) + f(c + h * x);
        k += w * pair;
        if j % 2 == 1 {
            g += WG[j / 2] * pair;
        }
    }
    (k * h, ((k - g) * h).abs())
}

/// Most panels [`integrate`] splits one integral into.
pub const MAX_PANELS: usize = 200;

/// `∫_a^b f` by globally adaptive Gauss-Kronrod 7/15 quadrature (QUADPACK `qag` style): the panel
/// with the largest error estimate `|K15 - G7|` is bisected until the estimates add up to at most
/// `tol` or there are [`MAX_PANELS`] panels (so rounding noise cannot make it run away; an
/// integral that misses its target then shows as a failed comparison, not a hang). Features
/// narrower than the node spacing can hide between nodes: callers pass every known transition as
/// a breakpoint (see [`integrate_pieces`]).
pub fn integrate(f: &mut impl FnMut(f64) -> f64, a: f64, b: f64, tol: f64) -> f64 {
    if b <= a {
        return 0.0;
    }
    let (k, e) = gk15(f, a, b);
    let mut panels = vec![(a, b, k, e)];
    while panels.len() < MAX_PANELS {
        let total: f64 = panels.iter().map(|p| p.3).sum();
        if total <= tol {
            break;
        }
        let worst = (0..panels.len())
            .max_by(|&x, &y| panels[x].3.total_cmp(&panels[y].3))
            .unwrap_or(0);
        let (lo, hi, _, _) = panels.swap_remove(worst);
        let mid = 0.5 * (lo + hi);
        if !(mid > lo && mid < hi) {
            break; // the panel is as small as f64 allows
        }
        for (x, y) in [(lo, mid), (mid, hi)] {
            let (k, e) = gk15(f, x, y);
            panels.push((x, y, k, e));
        }
    }
    panels.iter().map(|p| p.2).sum()
}

/// `∫ f` over `[points[0], points[last]]`, integrating each piece between consecutive (sorted,
/// deduplicated) breakpoints separately, with total error target `tol`.
pub fn integrate_pieces(f: &mut impl FnMut(f64) -> f64, points: &mut Vec<f64>, tol: f64) -> f64 {
    points.sort_by(f64::total_cmp);
    points.dedup();
    let span = points[points.len() - 1] - points[0];
    points
        .windows(2)
        .map(|w| integrate(f, w[0], w[1], tol * (w[1] - w[0]) / span))
        .sum()
}

/// The Rochet (envelope) utility gain of a softmax allocation, computed by quadrature from the
/// allocation rule alone: with the other agents' scores `β` fixed and agent `i` reporting `t·r`,
/// the allocation is `π(t) = softmax(β + t r/τ)` and, by the envelope theorem (\[SCS25\] Thm 5.1,
/// Rochet), `U(r) - U(0) = ∫_0^1 π(t)·r dt`. So `p = π(1)·r - ∫_0^1 π(t)·r dt - U(0)`, where
/// `U(0)` is the offset's choice: 0 with the offset (Lemma 5.2), `τ LSE(β)` without it.
///
/// The integrand is smooth but has transitions of width `τ / |r_a - r_b|` where two candidates'
/// scores cross near the top; each such crossing in `(0, 1)` and a geometric grid around it are
/// breakpoints, so the quadrature cannot miss it. Error target `tol` (absolute).
pub fn rochet_gain(beta: &[f64], r: &[f64], tau: f64, tol: f64) -> f64 {
    let m = r.len();
    let slope: Vec<f64> = r.iter().map(|x| x / tau).collect();
    let score = |t: f64, j: usize| beta[j] + t * slope[j];
    let mut f = |t: f64| {
        let s: Vec<f64> = (0..m).map(|j| score(t, j)).collect();
        let top = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let (mut num, mut den) = (0.0, 0.0);
        for j in 0..m {
            let w = (s[j] - top).exp();
            num += w * r[j];
            den += w;
        }
        num / den
    };
    // Crossings `(t, |slope difference|)` that can shape the integrand on [0, 1].
    let mut crossings: Vec<(f64, f64)> = Vec::new();
    for a in 0..m {
        for b in (a + 1)..m {
            let d = slope[a] - slope[b];
            if d == 0.0 {
                continue;
            }
            let t = (beta[b] - beta[a]) / d;
            let width = 1.0 / d.abs();
            // A crossing just outside [0, 1] still shapes the integrand within 40 widths of it.
            if !(t > -40.0 * width && t < 1.0 + 40.0 * width) {
                continue;
            }
            // Only crossings within 40 nats of the top move the integrand (e^-40 ≈ 4e-18).
            let top = (0..m)
                .map(|j| score(t, j))
                .fold(f64::NEG_INFINITY, f64::max);
            if score(t, a) < top - 40.0 {
                continue;
            }
            crossings.push((t, d.abs()));
        }
    }
    // Coinciding crossings (e.g. every pair at t = 0 when β is constant) share one grid, at the
    // finest of their widths; a geometric grid covers every coarser width too.
    crossings.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut grouped: Vec<(f64, f64)> = Vec::new();
    for (t, d) in crossings {
        match grouped.last_mut() {
            Some(last) if t - last.0 <= 1e-12 => last.1 = last.1.max(d),
            _ => grouped.push((t, d)),
        }
    }
    let mut points = vec![0.0, 1.0];
    let inside = |x: &f64| *x > 0.0 && *x < 1.0;
    for (t, d) in grouped {
        points.extend([t].into_iter().filter(inside));
        let mut h = 1.0 / d;
        while h < 1.0 {
            points.extend([t - h, t + h].into_iter().filter(inside));
            h *= 4.0;
        }
    }
    integrate_pieces(&mut f, &mut points, tol)
}

// ---------------------------------------------------------------------------------------------
// Statistics.

/// `ln(2/α)` for the per-test false-alarm probability `α = 1e-9` of the statistical properties.
pub const LOG_2_OVER_ALPHA: f64 = 21.416_413_017_506_358;

/// Bernstein's bound for a binomial count: `P(|X - N p| >= t) <= 2 exp(-t² / (2 (N p (1-p) + t/3)))`,
/// solved for the `t` at which the right side is `α` (`ln(2/α) = LOG_2_OVER_ALPHA`). Rigorous for
/// every `N` and `p` (no normal approximation), so it holds for `p ≈ 0` too.
pub fn binomial_slack(n: u64, p: f64) -> f64 {
    let l = LOG_2_OVER_ALPHA;
    let var = n as f64 * p * (1.0 - p);
    l / 3.0 + (l * l / 9.0 + 2.0 * l * var).sqrt()
}

/// Running mean and variance (Welford) of a Monte-Carlo estimate.
#[derive(Default, Clone, Copy)]
pub struct Moments {
    n: f64,
    mean: f64,
    m2: f64,
}

impl Moments {
    /// Adds one observation.
    pub fn push(&mut self, x: f64) {
        self.n += 1.0;
        let d = x - self.mean;
        self.mean += d / self.n;
        self.m2 += d * (x - self.mean);
    }

    /// The sample mean.
    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// The standard error of the mean.
    pub fn sem(&self) -> f64 {
        if self.n < 2.0 {
            return 0.0;
        }
        (self.m2 / (self.n - 1.0) / self.n).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauss_kronrod_is_exact_for_polynomials_and_accurate_for_smooth_functions() {
        // K15 is exact up to degree 22, G7 up to degree 13.
        let (k, _) = gk15(&mut |x: f64| x.powi(22), 0.0, 1.0);
        assert!((k - 1.0 / 23.0).abs() < 1e-15);
        let v = integrate(&mut |x: f64| x.exp(), 0.0, 3.0, 1e-13);
        assert!((v - (3f64.exp() - 1.0)).abs() < 1e-12);
        // A transition of width 1e-6 at a breakpoint.
        let mut pts = vec![
            0.0,
            0.3,
            0.3 - 1e-6,
            0.3 + 1e-6,
            0.3 + 4e-6,
            0.3 - 4e-6,
            1.0,
        ];
        let v = integrate_pieces(
            &mut |x: f64| 1.0 / (1.0 + (-(x - 0.3) / 1e-6).exp()),
            &mut pts,
            1e-13,
        );
        assert!((v - 0.7).abs() < 1e-11, "{v}");
    }

    #[test]
    fn rochet_gain_matches_the_log_partition_on_hand_cases() {
        // ∫_0^1 softmax(β + t r/τ)·r dt = τ [LSE(β + r/τ) - LSE(β)] (the envelope identity),
        // here on a sharp instance: τ = 1e-3, rewards ±200, a crossing inside (0, 1).
        for (beta, r, tau) in [
            (vec![0.0, 0.0, 0.0], vec![1.0, 2.0, 3.0], 1.0),
            (vec![3e4, 0.0, -1e3], vec![-200.0, 200.0, 0.0], 1e-3),
            (vec![0.0; 4], vec![200.0, -200.0, 0.0, 199.999], 1e-3),
        ] {
            let shifted: Vec<f64> = beta.iter().zip(&r).map(|(b, x)| b + x / tau).collect();
            let exact = tau * (lse(&shifted) - lse(&beta));
            let got = rochet_gain(&beta, &r, tau, 1e-12);
            assert!((got - exact).abs() < 1e-9, "{got} vs {exact}");
        }
    }

    #[test]
    fn bernstein_slack_covers_its_quantile() {
        // At p = 0.5, N = 1e4: sd 50; the bound is about 6.6 sd (a 1e-9 two-sided normal tail is
        // 6.1 sd), and 2L/3 at p = 0.
        let t = binomial_slack(10_000, 0.5);
        assert!(t > 6.1 * 50.0 && t < 7.5 * 50.0, "{t}");
        assert!((binomial_slack(10_000, 0.0) - 2.0 * LOG_2_OVER_ALPHA / 3.0).abs() < 1e-12);
    }
}
