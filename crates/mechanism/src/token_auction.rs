//! The token auction of \[DMPXZ24\]: per decoding step, aggregate the agents' next-token distributions
//! with their bids, draw the token by stable sampling from an explicit seed, and charge per-token
//! payments. An agent's spend over a sequence is the sum of its per-token payments (T15, `docs/mechanisms.md` §3.2).
//!
//! Which sampler runs (see [`Sampler::for_input`]):
//!
//! | aggregation | `|T|` | sampler | second price |
//! | --- | --- | --- | --- |
//! | linear | any | exponential race (construction B) | yes: the winner pays `θ_winner` |
//! | log-linear | 2 | threshold (construction C) | yes: `θ_i` for agents whose side was drawn |
//! | log-linear | ≥ 3 | inverse CDF on one uniform | **no**: log-linear aggregation is not monotone in the robust (segment) order for 3+ tokens (`docs/mechanisms.md` §1.2), so no stable sampler and no critical bid exist; only `first_price` and `none` |
//!
//! Payment rules: [`PaymentRule::SecondPrice`] (critical bid), [`PaymentRule::FirstPrice`] (every agent
//! pays its bid for every token, the blog's naive rule) and [`PaymentRule::None`].

use crate::aggregate::{Aggregation, Bids, aggregate, check_shapes};
use crate::dist::Distribution;
use crate::error::{Error, Result};
use crate::rng::uniform_open01;
use crate::stable::{RaceSeed, race, two_token_threshold};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// How agents are charged for one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum PaymentRule {
    /// Second price: the critical bid `θ_i` when `i` is in its post-switch state, else 0.
    #[serde(alias = "second-price")]
    SecondPrice,
    /// Pay your bid: every agent pays `b_i` for every token.
    #[serde(alias = "first-price")]
    FirstPrice,
    /// No payments.
    None,
}

/// Which stable (or plain) sampler draws the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sampler {
    /// Exponential race (construction B); linear aggregation only.
    Race,
    /// Closed-form two-token thresholds (construction C); `|T| = 2`, either aggregation.
    Threshold,
    /// Inverse CDF of the aggregate on one uniform; not stable for `|T| >= 3`, so no second price.
    InverseCdf,
}

impl Sampler {
    /// The default sampler: race for linear, threshold for two-token log-linear, inverse CDF else.
    pub fn for_input(aggregation: Aggregation, vocab: usize) -> Self {
        match (aggregation, vocab) {
            (Aggregation::Linear, _) => Sampler::Race,
            (Aggregation::LogLinear, 2) => Sampler::Threshold,
            (Aggregation::LogLinear, _) => Sampler::InverseCdf,
        }
    }
}

/// The outcome of one token step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepOutcome {
    /// The aggregate `p(q, b)` the token is drawn from.
    pub aggregate: Distribution,
    /// The drawn token.
    pub token: usize,
    /// The race winner (construction B); `None` for the other samplers.
    pub winner: Option<usize>,
    /// The critical bids `θ_i` (`None` entries: no bid of `i` changes the outcome); `None` when the
    /// sampler is not stable.
    pub critical_bids: Option<Vec<Option<f64>>>,
    /// Each agent's payment for this token.
    pub payments: Vec<f64>,
}

/// A token-auction step rule: aggregation, payment rule and (optionally) a forced sampler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenAuction {
    /// The aggregation function.
    pub aggregation: Aggregation,
    /// The payment rule.
    pub payment: PaymentRule,
    /// The sampler; `None` picks [`Sampler::for_input`].
    pub sampler: Option<Sampler>,
}

impl TokenAuction {
    /// A rule with the default sampler.
    pub fn new(aggregation: Aggregation, payment: PaymentRule) -> Self {
        Self {
            aggregation,
            payment,
            sampler: None,
        }
    }

    /// Checks, before any step, that the rule can run on a vocabulary of `vocab` tokens.
    ///
    /// # Errors
    /// [`Error::SecondPriceUnavailable`] for second price with a non-stable sampler;
    /// [`Error::SamplerUnavailable`] for a forced sampler that does not fit.
    pub fn validate(&self, vocab: usize) -> Result<Sampler> {
        let sampler = self
            .sampler
            .unwrap_or(Sampler::for_input(self.aggregation, vocab));
        match sampler {
            Sampler::Race if self.aggregation != Aggregation::Linear => {
                return Err(Error::SamplerUnavailable {
                    reason: "the exponential race implements linear aggregation only",
                });
            }
            Sampler::Threshold if vocab != 2 => {
                return Err(Error::SamplerUnavailable {
                    reason: "the threshold sampler needs a two-token vocabulary",
                });
            }
            Sampler::InverseCdf if self.payment == PaymentRule::SecondPrice && vocab != 1 => {
                return Err(Error::SecondPriceUnavailable { vocab });
            }
            _ => {}
        }
        Ok(sampler)
    }

    /// One token step: aggregate, draw with the seed stream `rng`, charge.
    ///
    /// The draw consumes `2n` words of `rng` for the race and one for the other samplers, so a step
    /// sequence replayed from the same seed reproduces tokens and payments bit for bit.
    ///
    /// # Errors
    /// Shape and bid errors, [`Error::DisjointSupports`], and those of [`TokenAuction::validate`].
    pub fn step<R: Rng + ?Sized>(
        &self,
        dists: &[Distribution],
        bids: &Bids,
        rng: &mut R,
    ) -> Result<StepOutcome> {
        let vocab = check_shapes(dists, bids)?;
        let sampler = self.validate(vocab)?;
        let agg = aggregate(self.aggregation, dists, bids)?;
        let b = bids.values();
        let n = b.len();
        let (token, winner, critical_bids, second_price) = match sampler {
            Sampler::Race => {
                let seed = RaceSeed::draw(n, rng);
                let r = race(dists, bids, &seed)?;
                let mut pay = vec![0.0; n];
                pay[r.winner] = r.critical_bids[r.winner].min(b[r.winner]);
                let theta = r.critical_bids.into_iter().map(Some).collect();
                (r.token, Some(r.winner), Some(theta), pay)
            }
            Sampler::Threshold => {
                let u = uniform_open01(rng);
                let r = two_token_threshold(self.aggregation, dists, bids, u)?;
                let pay = (0..n)
                    .map(|i| match (r.pulls_toward[i], r.critical_bids[i]) {
                        (Some(side), Some(theta)) if side == r.token && theta <= b[i] => theta,
                        _ => 0.0,
                    })
                    .collect();
                (r.token, None, Some(r.critical_bids), pay)
            }
            Sampler::InverseCdf => {
                let u = uniform_open01(rng);
                (agg.inverse_cdf(u), None, None, vec![0.0; n])
            }
        };
        let payments = match self.payment {
            PaymentRule::SecondPrice => second_price,
            PaymentRule::FirstPrice => b.to_vec(),
            PaymentRule::None => vec![0.0; n],
        };
        Ok(StepOutcome {
            aggregate: agg,
            token,
            winner,
            critical_bids,
            payments,
        })
    }
}

/// A running token auction over a sequence: fixed bids, one seeded stream, accumulated spend.
#[derive(Debug, Clone)]
pub struct TokenAuctionRun<R> {
    rule: TokenAuction,
    bids: Bids,
    rng: R,
    spend: Vec<f64>,
    tokens: Vec<usize>,
}

impl<R: Rng> TokenAuctionRun<R> {
    /// Starts a run with the given rule, bids and seeded stream.
    pub fn new(rule: TokenAuction, bids: Bids, rng: R) -> Self {
        let n = bids.len();
        Self {
            rule,
            bids,
            rng,
            spend: vec![0.0; n],
            tokens: Vec::new(),
        }
    }

    /// One step with the agents' current distributions; adds the payments to the running spend.
    ///
    /// # Errors
    /// As [`TokenAuction::step`]; a failed step leaves the run unchanged except for the RNG state.
    pub fn step(&mut self, dists: &[Distribution]) -> Result<StepOutcome> {
        let out = self.rule.step(dists, &self.bids, &mut self.rng)?;
        self.spend
            .iter_mut()
            .zip(&out.payments)
            .for_each(|(s, p)| *s += p);
        self.tokens.push(out.token);
        Ok(out)
    }

    /// Each agent's total spend so far: the sum of its per-token payments (T15).
    pub fn spend(&self) -> &[f64] {
        &self.spend
    }

    /// The tokens drawn so far.
    pub fn tokens(&self) -> &[usize] {
        &self.tokens
    }

    /// The bids.
    pub fn bids(&self) -> &Bids {
        &self.bids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::rng_from_seed;

    fn d(p: &[f64]) -> Distribution {
        Distribution::from_probs(p.to_vec(), "q").unwrap()
    }

    #[test]
    fn second_price_log_linear_three_tokens_is_rejected() {
        let q = [d(&[0.2, 0.3, 0.5]), d(&[0.5, 0.3, 0.2])];
        let bids = Bids::new(vec![1.0, 1.0]).unwrap();
        let rule = TokenAuction::new(Aggregation::LogLinear, PaymentRule::SecondPrice);
        let e = rule.step(&q, &bids, &mut rng_from_seed(0)).unwrap_err();
        assert!(matches!(e, Error::SecondPriceUnavailable { vocab: 3 }));
        let rule = TokenAuction::new(Aggregation::LogLinear, PaymentRule::FirstPrice);
        let out = rule.step(&q, &bids, &mut rng_from_seed(0)).unwrap();
        assert_eq!(out.payments, vec![1.0, 1.0]);
        assert!(out.critical_bids.is_none());
    }

    #[test]
    fn at_most_one_agent_pays_under_the_race() {
        let q = [
            d(&[0.2, 0.3, 0.5]),
            d(&[0.5, 0.3, 0.2]),
            d(&[1.0, 0.0, 0.0]),
        ];
        let bids = Bids::new(vec![1.0, 2.0, 3.0]).unwrap();
        let rule = TokenAuction::new(Aggregation::Linear, PaymentRule::SecondPrice);
        let mut rng = rng_from_seed(3);
        for _ in 0..100 {
            let out = rule.step(&q, &bids, &mut rng).unwrap();
            assert!(out.payments.iter().filter(|&&p| p > 0.0).count() <= 1);
        }
    }
}
