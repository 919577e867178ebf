//! Token sampling on the host, in `f64`, from one row of `f32` logits.
//!
//! The proposal is built as Hugging Face's warpers do, in this order: temperature `T`, top-k, top-p
//! (the smallest set of most likely tokens whose mass reaches `p`), renormalised. For every drawn
//! token we return its log-probability under the raw model (`T = 1`, no truncation) and under the
//! proposal actually sampled from; MOSAIC's importance weights need both. Greedy decoding is the
//! deterministic proposal (log-probability 0). Ties are broken toward the lower token id, so a
//! seeded draw is reproducible bit for bit, and the draw is an inverse CDF over the kept tokens in
//! id order, so that logits perturbed by rounding (another batch composition) move the CDF's
//! boundaries by as little, and change the token as rarely, as possible.

use crate::error::{ModelError, Result};
use llm_auction_mechanism::rng::uniform_open01;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// How to turn logits into a next token.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Softmax temperature `T > 0` (ignored when greedy).
    pub temperature: f64,
    /// Nucleus mass `p ∈ (0, 1]` (1 disables top-p).
    pub top_p: f64,
    /// Keep only the `k` most likely tokens (0 disables top-k).
    pub top_k: usize,
    /// Always take the most likely token.
    pub greedy: bool,
}

impl Default for SamplingParams {
    /// Plain sampling from the model: `T = 1`, no truncation.
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            greedy: false,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self {
            greedy: true,
            ..Self::default()
        }
    }

    /// Checks the ranges.
    ///
    /// # Errors
    /// [`ModelError::Parameter`] naming `temperature` or `top_p`.
    pub fn validate(&self) -> Result<()> {
        if !(self.greedy || self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(ModelError::param(
                "temperature",
                format!("must be > 0, got {}", self.temperature),
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(ModelError::param(
                "top_p",
                format!("must be in (0, 1], got {}", self.top_p),
            ));
        }
        Ok(())
    }
}

/// A drawn token with its log-probabilities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampled {
    /// The token.
    pub token: u32,
    /// `log π(token)` under the raw model (temperature 1, no truncation).
    pub logprob_raw: f64,
    /// `log q(token)` under the proposal it was drawn from.
    pub logprob_proposal: f64,
}

/// `log Σ exp(x)` over `f32` logits, in `f64`: the logits widened to `f64` and passed to
/// [`llm_auction_mechanism::logspace::log_sum_exp`], the one implementation of the equation.
pub fn log_sum_exp(logits: &[f32]) -> f64 {
    let wide: Vec<f64> = logits.iter().map(|&x| f64::from(x)).collect();
    llm_auction_mechanism::logspace::log_sum_exp(&wide)
}

/// Draws one token from `logits` with `params`, using one uniform of `rng` (none when greedy).
///
/// # Errors
/// [`ModelError::Parameter`] for invalid parameters or logits without a finite entry.
pub fn sample<R: Rng + ?Sized>(
    logits: &[f32],
    params: &SamplingParams,
    rng: &mut R,
) -> Result<Sampled> {
    params.validate()?;
    if logits.is_empty()
        || logits.iter().any(|x| x.is_nan())
        || !logits.iter().any(|x| x.is_finite())
    {
        return Err(ModelError::param(
            "logits",
            "need at least one finite value and no NaN",
        ));
    }
    let lse = log_sum_exp(logits);
    let raw = |t: usize| logits[t] as f64 - lse;
    if params.greedy {
        let t = argmax(logits);
        return Ok(Sampled {
            token: t as u32,
            logprob_raw: raw(t),
            logprob_proposal: 0.0,
        });
    }
    let inv_t = 1.0 / params.temperature;
    let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    // Unnormalised tempered weights exp((z - max)/T).
    let w: Vec<f64> = logits
        .iter()
        .map(|&z| ((z as f64 - m) * inv_t).exp())
        .collect();
    let total: f64 = w.iter().sum();
    // The inverse CDF runs over the kept tokens in id order, not in probability order: two nearly
    // tied tokens would otherwise swap places under a 1e-6 change of the logits (a different batch
    // composition), and the same uniform would pick a different token.
    let mut kept = nucleus(&w, total, params.top_k, params.top_p);
    kept.sort_unstable();
    let mass: f64 = kept.iter().map(|&t| w[t]).sum();
    let u = uniform_open01(rng) * mass;
    let mut acc = 0.0;
    let mut chosen = kept[kept.len() - 1];
    for &t in &kept {
        acc += w[t];
        if acc > u {
            chosen = t;
            break;
        }
    }
    Ok(Sampled {
        token: chosen as u32,
        logprob_raw: raw(chosen),
        logprob_proposal: (w[chosen] / mass).ln(),
    })
}

/// The first index of the maximum.
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

/// Order: weight descending, then id ascending.
fn by_weight(w: &[f64]) -> impl Fn(&usize, &usize) -> std::cmp::Ordering + '_ {
    move |&a, &b| w[b].total_cmp(&w[a]).then(a.cmp(&b))
}

/// The tokens kept by top-k then top-p. `w` are unnormalised weights summing to `total`. With
/// top-p, the kept tokens are returned most likely first; only the head of the distribution is
/// sorted (partial selection of 256 candidates, grown ×8 until they hold the nucleus). Without any
/// truncation every token is kept in id order.
fn nucleus(w: &[f64], total: f64, top_k: usize, top_p: f64) -> Vec<usize> {
    let v = w.len();
    let cmp = by_weight(w);
    let mut idx: Vec<usize> = (0..v).collect();
    let mut kept_total = total;
    if top_k > 0 && top_k < v {
        idx.select_nth_unstable_by(top_k - 1, &cmp);
        idx.truncate(top_k);
        kept_total = idx.iter().map(|&t| w[t]).sum();
    }
    if top_p >= 1.0 {
        if idx.len() < v {
            idx.sort_unstable_by(&cmp);
        }
        return idx;
    }
    let target = top_p * kept_total;
    let mut head = idx.len().min(256);
    loop {
        if head < idx.len() {
            idx.select_nth_unstable_by(head - 1, &cmp);
        }
        let mut cand = idx[..head].to_vec();
        cand.sort_unstable_by(&cmp);
        let mut acc = 0.0;
        for (k, &t) in cand.iter().enumerate() {
            acc += w[t];
            if acc >= target {
                cand.truncate(k + 1);
                return cand;
            }
        }
        if head == idx.len() {
            return cand;
        }
        head = (head * 8).min(idx.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn logits() -> Vec<f32> {
        vec![2.0, 1.0, 0.5, -1.0, 3.0, 3.0]
    }

    #[test]
    fn log_sum_exp_is_bitwise_the_f32_max_formula() {
        // The formula this crate used before it called the mechanism crate's: the maximum taken
        // over the f32 logits, the sum of exp(x - max) in f64 in index order. Seeded outputs depend
        // on these bits.
        let by_hand = |z: &[f32]| {
            let m = z.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
            if !m.is_finite() {
                return m;
            }
            m + z.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for n in [1usize, 2, 7, 1000] {
            let z: Vec<f32> = (0..n)
                .map(|_| (uniform_open01(&mut rng) * 40.0 - 20.0) as f32)
                .collect();
            assert_eq!(log_sum_exp(&z).to_bits(), by_hand(&z).to_bits(), "n = {n}");
        }
        for z in [
            vec![f32::NEG_INFINITY, 1.5],
            vec![f32::NEG_INFINITY; 3],
            vec![f32::INFINITY, 0.0],
        ] {
            assert_eq!(log_sum_exp(&z).to_bits(), by_hand(&z).to_bits(), "{z:?}");
        }
    }

    #[test]
    fn greedy_takes_first_maximum() {
        let s = sample(
            &logits(),
            &SamplingParams::greedy(),
            &mut ChaCha8Rng::seed_from_u64(0),
        )
        .unwrap();
        assert_eq!(s.token, 4);
        assert_eq!(s.logprob_proposal, 0.0);
        assert!((s.logprob_raw - (3.0 - log_sum_exp(&logits()))).abs() < 1e-12);
    }

    #[test]
    fn proposal_logprob_is_exact_for_top_p_and_top_k() {
        let z = logits();
        // T = 0.5, top-k 3 -> tokens 4, 5, 0; top_p 0.9 of that.
        let p = SamplingParams {
            temperature: 0.5,
            top_p: 0.9,
            top_k: 3,
            greedy: false,
        };
        let w: Vec<f64> = z.iter().map(|&x| ((x as f64 - 3.0) / 0.5).exp()).collect();
        let top3 = w[4] + w[5] + w[0];
        // Mass of tokens 4, 5 alone = 2 / (2 + e^-2) = 0.937 >= 0.9, so token 0 is cut.
        assert!((w[4] + w[5]) / top3 >= 0.9);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut counts = [0usize; 6];
        for _ in 0..2000 {
            let s = sample(&z, &p, &mut rng).unwrap();
            counts[s.token as usize] += 1;
            assert!((s.logprob_proposal - 0.5f64.ln()).abs() < 1e-12);
            assert!((s.logprob_raw - (z[s.token as usize] as f64 - log_sum_exp(&z))).abs() < 1e-12);
        }
        assert_eq!(counts[0] + counts[1] + counts[2] + counts[3], 0);
        assert!(counts[4] > 800 && counts[5] > 800);
    }

    #[test]
    fn untruncated_sampling_matches_softmax() {
        let z = logits();
        let p = SamplingParams::default();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let n = 60_000;
        let mut counts = [0usize; 6];
        for _ in 0..n {
            counts[sample(&z, &p, &mut rng).unwrap().token as usize] += 1;
        }
        let lse = log_sum_exp(&z);
        for t in 0..6 {
            let pt = (z[t] as f64 - lse).exp();
            let sd = (n as f64 * pt * (1.0 - pt)).sqrt();
            assert!(
                (counts[t] as f64 - n as f64 * pt).abs() <= 5.0 * sd + 3.0,
                "token {t}"
            );
        }
    }

    #[test]
    fn large_vocabulary_nucleus_is_the_sorted_head() {
        let v = 49_152;
        let z: Vec<f32> = (0..v).map(|i| ((i * 7919) % 1000) as f32 / 50.0).collect();
        let p = SamplingParams {
            temperature: 0.8,
            top_p: 0.95,
            top_k: 0,
            greedy: false,
        };
        let w: Vec<f64> = {
            let m = z.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
            z.iter().map(|&x| ((x as f64 - m) / 0.8).exp()).collect()
        };
        let total: f64 = w.iter().sum();
        let kept = nucleus(&w, total, 0, 0.95);
        let mut all: Vec<usize> = (0..v).collect();
        all.sort_by(by_weight(&w));
        let mut acc = 0.0;
        let mut expected = 0;
        for (k, &t) in all.iter().enumerate() {
            acc += w[t];
            if acc >= 0.95 * total {
                expected = k + 1;
                break;
            }
        }
        assert_eq!(kept, all[..expected].to_vec());
        assert!(sample(&z, &p, &mut ChaCha8Rng::seed_from_u64(3)).is_ok());
    }

    #[test]
    fn bad_parameters_are_errors() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let bad_t = SamplingParams {
            temperature: 0.0,
            ..Default::default()
        };
        assert!(sample(&logits(), &bad_t, &mut rng).is_err());
        let bad_p = SamplingParams {
            top_p: 1.5,
            ..Default::default()
        };
        assert!(sample(&logits(), &bad_p, &mut rng).is_err());
        assert!(sample(&[f32::NAN, 1.0], &SamplingParams::default(), &mut rng).is_err());
        assert!(sample(&[], &SamplingParams::default(), &mut rng).is_err());
    }
}
