//! Both auctions end to end on a tiny random model loaded from a GGUF file (tokenizer and chat
//! template included): the report is consistent with the mechanism crate, the same seed gives the
//! same result, and bad input is a typed error.

use llm_auction_engine::EngineError;
use llm_auction_engine::engine::EngineConfig;
use llm_auction_engine::lm::LanguageModel;
use llm_auction_engine::lm::local::EngineModel;
use llm_auction_engine::mosaic::{
    Advertiser, Generator, Importance, MosaicConfig, MosaicModels, run_mosaic,
};
use llm_auction_engine::request::ScoreRequest;
use llm_auction_engine::token_auction::{
    Agent, TokenAuctionConfig, lambda_sweep, run_token_auction,
};
use llm_auction_mechanism::aggregate::Aggregation;
use llm_auction_mechanism::testing::rochet_payments;
use llm_auction_mechanism::token_auction::PaymentRule;
use llm_auction_model::CpuBackend;
use llm_auction_model::model::Model;
use llm_auction_model::testing::{random_weights, tiny_config, write_gguf};
use std::sync::Arc;

fn tiny() -> (tempfile::TempDir, EngineModel<CpuBackend>) {
    tiny_with(small())
}

/// The tiny model behind the request-level interface, each session an engine with `engine`.
fn tiny_with(engine: EngineConfig) -> (tempfile::TempDir, EngineModel<CpuBackend>) {
    let dir = tempfile::tempdir().unwrap();
    // A longer context than the default tiny model's: chat prompts of a byte-level tokenizer are long.
    let cfg = llm_auction_model::config::LlamaConfig {
        max_position: 512,
        ..tiny_config()
    };
    let path = dir.path().join("tiny.gguf");
    write_gguf(&path, &cfg, &random_weights(&cfg, 3, false));
    let model = Model::<CpuBackend>::load(&path, &Default::default(), &mut |_, _, _| {}).unwrap();
    (dir, EngineModel::new("default", Arc::new(model), engine))
}

/// Both agents on `m`.
fn two(m: &dyn LanguageModel) -> [&dyn LanguageModel; 2] {
    [m, m]
}

fn ads() -> Vec<Advertiser> {
    vec![
        Advertiser::parse("EasyBake: producing baking ingredients").unwrap(),
        Advertiser::parse("KitchenFix: kitchen appliances").unwrap(),
    ]
}

fn small() -> EngineConfig {
    EngineConfig {
        token_budget: 48,
        max_seqs: 6,
        block_size: 4,
        num_blocks: 256,
        prefix_caching: true,
    }
}

#[test]
fn mosaic_report_is_consistent_with_the_mechanism() {
    let (_d, model) = tiny();
    let cfg = MosaicConfig {
        m: 5,
        max_new_tokens: 6,
        seed: 11,
        ..MosaicConfig::default()
    };
    let r = run_mosaic(
        &MosaicModels::single(&model, 2),
        "How do I bake cookies?",
        &ads(),
        &cfg,
        &mut |_, _, _| {},
    )
    .unwrap();
    assert_eq!(r.candidates.len(), 5);
    assert!((r.allocation.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    assert!(r.winner < 5);
    assert_eq!(r.reply, r.candidates[r.winner].text);
    for c in &r.candidates {
        for (i, &rw) in c.rewards.iter().enumerate() {
            assert!(
                (rw - (c.log_adv[i] - c.log_ref)).abs() < 1e-12,
                "r_i = log π_i − log π_ref"
            );
        }
        assert!(
            (c.log_weight - (c.log_ref - c.log_q.unwrap())).abs() < 1e-12,
            "default weights use the proposal"
        );
        assert!(c.log_q.is_some_and(|q| q.is_finite() && q <= 0.0));
    }
    // Payments equal an independent oracle on the reported rewards and weights: the Rochet
    // envelope integral of the allocation curve (no code shared with the mechanism crate's
    // closed form), to the quadrature's accuracy.
    let rows: Vec<Vec<f64>> = (0..2)
        .map(|i| r.candidates.iter().map(|c| c.rewards[i]).collect())
        .collect();
    let lw: Vec<f64> = r.candidates.iter().map(|c| c.log_weight).collect();
    let (payments, utilities) = rochet_payments(&rows, &lw, 1.0, 20_000);
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-7 * b.abs().max(1.0);
    for i in 0..2 {
        assert!(
            close(r.results[i].payment, payments[i]),
            "payment {i}: {} vs {}",
            r.results[i].payment,
            payments[i]
        );
        assert!(
            close(r.results[i].utility, utilities[i]),
            "utility {i}: {} vs {}",
            r.results[i].utility,
            utilities[i]
        );
    }
    assert!(close(r.revenue, payments.iter().sum()));
    // log π_gen(y) comes from generation (nothing is scored twice): it equals a scoring of each
    // candidate under the generator's prompt, from the same logits (the native pass is
    // batch-invariant); scoring rounds each token's log-probability to f32, hence the tolerance.
    let gen_prompt = model.encode(&r.prompts.generator).unwrap();
    let specs = r
        .candidates
        .iter()
        .map(|c| ScoreRequest {
            prompt: gen_prompt.clone(),
            continuation: c.tokens.clone(),
        })
        .collect();
    let scored = model.session().unwrap().score(specs, &mut |_| {}).unwrap();
    for (c, sc) in r.candidates.iter().zip(&scored) {
        let tol = 1e-6 * (1.0 + c.log_gen.abs());
        assert!(
            (c.log_gen - sc.total_logprob).abs() <= tol,
            "log π_gen from generation {} vs scoring {}",
            c.log_gen,
            sc.total_logprob
        );
    }
    // Same seed, same everything (timings aside); another seed, other candidates.
    let (_d2, other_engine) = tiny_with(EngineConfig::default());
    let again = run_mosaic(
        &MosaicModels::single(&other_engine, 2),
        "How do I bake cookies?",
        &ads(),
        &cfg,
        &mut |_, _, _| {},
    )
    .unwrap();
    assert_eq!(
        again
            .candidates
            .iter()
            .map(|c| &c.tokens)
            .collect::<Vec<_>>(),
        r.candidates.iter().map(|c| &c.tokens).collect::<Vec<_>>()
    );
    assert_eq!(again.winner, r.winner);
    // Other batch limits, the same bits (the native pass is batch-invariant).
    for (a, b) in again.results.iter().zip(&r.results) {
        assert_eq!(a.payment, b.payment);
    }
    let other = run_mosaic(
        &MosaicModels::single(&model, 2),
        "How do I bake cookies?",
        &ads(),
        &MosaicConfig {
            seed: 12,
            ..cfg.clone()
        },
        &mut |_, _, _| {},
    )
    .unwrap();
    assert_ne!(
        other
            .candidates
            .iter()
            .map(|c| &c.tokens)
            .collect::<Vec<_>>(),
        r.candidates.iter().map(|c| &c.tokens).collect::<Vec<_>>()
    );
}

#[test]
fn reference_generator_with_raw_weights_is_algorithm_1() {
    let (_d, model) = tiny();
    let cfg = MosaicConfig {
        m: 3,
        max_new_tokens: 4,
        generator: Generator::Reference,
        importance: Importance::Raw,
        ..MosaicConfig::default()
    };
    let r = run_mosaic(
        &MosaicModels::single(&model, 2),
        "Any tips for tea?",
        &ads(),
        &cfg,
        &mut |_, _, _| {},
    )
    .unwrap();
    assert!(
        r.candidates
            .iter()
            .all(|c| c.log_weight == 0.0 && c.log_gen == c.log_ref)
    );
    assert!(r.prompts.generator.contains("Try to mention EasyBake, who producing baking ingredients and KitchenFix, who kitchen appliances."));
}

#[test]
fn mosaic_rejects_bad_input() {
    let (_d, model) = tiny();
    let ok = MosaicConfig {
        m: 2,
        max_new_tokens: 3,
        ..MosaicConfig::default()
    };
    let run = |q: &str, a: &[Advertiser], c: &MosaicConfig| {
        run_mosaic(
            &MosaicModels::single(&model, a.len()),
            q,
            a,
            c,
            &mut |_, _, _| {},
        )
    };
    let field = |r: Result<_, EngineError>| match r {
        Err(EngineError::Auction { field, .. }) => field,
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("accepted"),
    };
    assert_eq!(field(run("q", &[], &ok)), "advertiser");
    assert_eq!(
        field(run("q", &ads(), &MosaicConfig { m: 0, ..ok.clone() })),
        "M"
    );
    assert_eq!(
        field(run(
            "q",
            &ads(),
            &MosaicConfig {
                tau: 0.0,
                ..ok.clone()
            }
        )),
        "tau"
    );
    assert_eq!(
        field(run(
            "q",
            &ads(),
            &MosaicConfig {
                tau: -1.0,
                ..ok.clone()
            }
        )),
        "tau"
    );
    assert_eq!(
        field(run(
            "q",
            &ads(),
            &MosaicConfig {
                tau_i: vec![1.0],
                ..ok.clone()
            }
        )),
        "tau_i"
    );
    assert_eq!(field(run(" ", &ads(), &ok)), "query");
    assert!(
        run(
            "q",
            &ads(),
            &MosaicConfig {
                temperature: 0.0,
                ..ok.clone()
            }
        )
        .is_err()
    );
    let long = "word ".repeat(600);
    assert!(matches!(
        run(&long, &ads(), &ok),
        Err(EngineError::PromptTooLong { .. })
    ));
    assert!(Advertiser::parse("no colon").is_err());
    assert!(Advertiser::parse(": empty name").is_err());
}

fn agents() -> Vec<Agent> {
    vec![
        Agent::parse("Alpha Airlines: flights to Hawaii: 1").unwrap(),
        Agent::parse("Beta Resort: a beach resort: 2").unwrap(),
    ]
}

#[test]
fn token_auction_charges_per_token_and_replays() {
    let (_d, model) = tiny();
    let cfg = TokenAuctionConfig {
        max_new_tokens: 8,
        seed: 5,
        ..TokenAuctionConfig::default()
    };
    let r = run_token_auction(
        &two(&model),
        "Vacations in Hawaii",
        &agents(),
        &cfg,
        &mut |_, _| {},
    )
    .unwrap();
    assert!(!r.steps.is_empty() && r.steps.len() <= 8);
    for (i, total) in r.total_payments.iter().enumerate() {
        let sum: f64 = r.steps.iter().map(|s| s.payments[i]).sum();
        assert!((total - sum).abs() < 1e-12);
        assert!(
            r.steps
                .iter()
                .all(|s| s.payments[i] >= 0.0 && s.payments[i] <= agents()[i].bid)
        );
    }
    assert!(
        r.steps
            .iter()
            .all(|s| s.winner.is_some() && s.payments.iter().filter(|&&p| p > 0.0).count() <= 1)
    );
    let (_d2, other_engine) = tiny_with(EngineConfig::default());
    let again = run_token_auction(
        &two(&other_engine),
        "Vacations in Hawaii",
        &agents(),
        &cfg,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(again.steps, r.steps);
    assert_eq!(again.text, r.text);
    // Log-linear with first price: everyone pays its bid per token.
    let ll = TokenAuctionConfig {
        aggregation: Aggregation::LogLinear,
        payment: PaymentRule::FirstPrice,
        ..cfg
    };
    let r = run_token_auction(
        &two(&model),
        "Vacations in Hawaii",
        &agents(),
        &ll,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(
        r.total_payments,
        vec![r.steps.len() as f64, 2.0 * r.steps.len() as f64]
    );
}

#[test]
fn token_auction_rejects_bad_input() {
    let (_d, model) = tiny();
    let run = |a: &[Agent], c: &TokenAuctionConfig| {
        run_token_auction(
            &vec![&model as &dyn LanguageModel; a.len()],
            "q",
            a,
            c,
            &mut |_, _| {},
        )
    };
    let cfg = TokenAuctionConfig {
        max_new_tokens: 3,
        ..TokenAuctionConfig::default()
    };
    let second_ll = TokenAuctionConfig {
        aggregation: Aggregation::LogLinear,
        ..cfg
    };
    assert!(matches!(
        run(&agents(), &second_ll),
        Err(EngineError::Mechanism(
            llm_auction_mechanism::Error::SecondPriceUnavailable { .. }
        ))
    ));
    let mut zero = agents();
    zero.iter_mut().for_each(|a| a.bid = 0.0);
    assert!(matches!(
        run(&zero, &cfg),
        Err(EngineError::Mechanism(
            llm_auction_mechanism::Error::AllBidsZero
        ))
    ));
    assert!(matches!(run(&[], &cfg), Err(EngineError::Auction { .. })));
    assert!(Agent::parse("A: b: -1").is_err());
    assert!(Agent::parse("A: b: x").is_err());
    assert!(Agent::parse("A: 1").is_err());
}

#[test]
fn lambda_sweep_moves_from_one_agent_to_the_other() {
    let (_d, model) = tiny();
    let rows = lambda_sweep(
        &two(&model),
        "Vacations in Hawaii",
        &agents(),
        llm_auction_engine::token_auction::SweepConfig {
            points: 3,
            max_new_tokens: 5,
            seed: 9,
        },
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(rows.len(), 2);
    let (agg, linear) = &rows[0];
    assert_eq!(*agg, Aggregation::Linear);
    assert_eq!(
        linear.iter().map(|r| r.lambda).collect::<Vec<_>>(),
        vec![0.0, 0.5, 1.0]
    );
    // λ = 0: only the second agent bids, so it wins every token and pays nothing (no competitor).
    assert!(linear[0].report.steps.iter().all(|s| s.winner == Some(1)));
    assert_eq!(linear[0].report.total_payments, vec![0.0, 0.0]);
    assert!(linear[2].report.steps.iter().all(|s| s.winner == Some(0)));
    // Each sweep point equals the same auction run alone.
    let alone = run_token_auction(
        &two(&model),
        "Vacations in Hawaii",
        &linear[1].report.agents,
        &linear[1].report.config,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(alone.steps, linear[1].report.steps);
}
