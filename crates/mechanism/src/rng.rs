//! Seeded randomness. Every random choice of the crate takes an explicit `&mut impl Rng`; these helpers
//! turn raw 64-bit words into the few variates the mechanisms need, so that the bits of every draw are
//! fixed by this crate (not by a distribution library's version).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The crate's seeded generator: ChaCha8 seeded from a `u64`.
pub fn rng_from_seed(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A uniform draw on the open interval `(0, 1)`: `(k + 1/2) · 2^-53` with `k` the top 53 bits of a
/// 64-bit word. Never returns 0 or 1, so `ln u` and `ln(1 - u)` are finite.
pub fn uniform_open01<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    let k = rng.next_u64() >> 11;
    (k as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
}

/// A standard exponential draw `Exp(1) = -ln U`, `U ~ U(0, 1)` (used by the exponential race).
pub fn exp1<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    -uniform_open01(rng).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_is_strictly_inside_unit_interval_and_seeded() {
        let mut a = rng_from_seed(7);
        let mut b = rng_from_seed(7);
        for _ in 0..1000 {
            let u = uniform_open01(&mut a);
            assert!(u > 0.0 && u < 1.0);
            assert_eq!(u.to_bits(), uniform_open01(&mut b).to_bits());
        }
    }

    #[test]
    fn exp1_has_mean_one() {
        let mut r = rng_from_seed(1);
        let n = 200_000;
        let mean: f64 = (0..n).map(|_| exp1(&mut r)).sum::<f64>() / n as f64;
        // sd of the mean = 1/sqrt(n) ≈ 0.0022; 5 sigma.
        assert!((mean - 1.0).abs() < 5.0 / (n as f64).sqrt());
    }
}
