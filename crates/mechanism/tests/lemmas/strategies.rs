//! The strategies themselves are tested: every generated value, and every value reached by
//! shrinking, is a valid input; and the extremes the proofs rely on actually occur.

use llm_auction_mechanism::aggregate::Bids;
use llm_auction_mechanism::dist::Distribution;
use llm_auction_mechanism::mosaic::{Mosaic, RewardMatrix};
use llm_auction_mechanism::testing::{mosaic_case, token_case};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngSeed, TestRunner};

fn runner() -> TestRunner {
    TestRunner::new(Config {
        rng_seed: RngSeed::Fixed(42),
        ..Config::default()
    })
}

fn valid_dist(d: &Distribution) -> bool {
    d.probs().iter().all(|&p| p.is_finite() && p >= 0.0)
        && (d.probs().iter().sum::<f64>() - 1.0).abs() <= 1e-9
}

/// Walks a value tree through `steps` shrink/complicate moves, checking each value.
fn check_tree<T: ValueTree>(mut tree: T, steps: usize, ok: impl Fn(&T::Value) -> bool) {
    assert!(ok(&tree.current()));
    for k in 0..steps {
        let moved = if k % 3 == 2 {
            tree.complicate()
        } else {
            tree.simplify()
        };
        if !moved {
            break;
        }
        assert!(ok(&tree.current()), "invalid value after {k} shrink steps");
    }
}

#[test]
fn mosaic_strategy_gives_valid_cases_and_extremes() {
    let mut r = runner();
    let (mut zeros, mut extremes, mut tiny_tau, mut alg2) = (0, 0, 0, 0);
    for _ in 0..500 {
        let tree = mosaic_case().new_tree(&mut r).unwrap();
        let c = tree.current();
        let flat: Vec<f64> = c.rewards.iter().flatten().copied().collect();
        zeros += flat.iter().filter(|&&x| x == 0.0).count().min(1);
        extremes += flat.iter().filter(|&&x| x.abs() == 200.0).count().min(1);
        tiny_tau += usize::from(c.tau <= 1e-3);
        alg2 += usize::from(c.log_weights.is_some());
        check_tree(tree, 60, |c| {
            let r = RewardMatrix::from_rows(&c.rewards);
            r.is_ok()
                && (1..=6).contains(&c.rewards.len())
                && (1..=64).contains(&c.rewards[0].len())
                && c.tau > 0.0
                && Mosaic::new(c.tau)
                    .unwrap()
                    .run(&r.unwrap(), c.log_weights.as_deref())
                    .is_ok()
        });
    }
    assert!(
        zeros > 50 && extremes > 50 && tiny_tau > 20 && alg2 > 100,
        "{zeros} {extremes} {tiny_tau} {alg2}"
    );
}

#[test]
fn token_strategy_gives_valid_cases_and_extremes() {
    let mut r = runner();
    let (mut zero_bids, mut zero_probs, mut one_hot) = (0, 0, 0);
    for _ in 0..500 {
        let tree = token_case(1..=6, 2..=8).new_tree(&mut r).unwrap();
        let c = tree.current();
        zero_bids += usize::from(c.bids.contains(&0.0));
        zero_probs += usize::from(c.dists.iter().any(|d| d.probs().contains(&0.0)));
        one_hot += usize::from(c.dists.iter().any(|d| d.probs().contains(&1.0)));
        check_tree(tree, 60, |c| {
            let v = c.dists[0].len();
            Bids::new(c.bids.clone()).is_ok()
                && c.bids.len() == c.dists.len()
                && c.bids.iter().all(|&b| (0.0..=10.0).contains(&b))
                && c.dists.iter().all(|d| d.len() == v && valid_dist(d))
        });
    }
    assert!(
        zero_bids > 50 && zero_probs > 50 && one_hot > 20,
        "{zero_bids} {zero_probs} {one_hot}"
    );
}
