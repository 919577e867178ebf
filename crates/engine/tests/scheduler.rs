//! Scheduler tests on the deterministic mock model: whatever the limits, arrival order, prefix
//! caching and memory pressure, every request's outcome equals what it produces alone, and the
//! allocator's invariants hold after every step.

mod common;

use common::*;
use llm_auction_engine::EngineError;
use llm_auction_engine::engine::{Engine, EngineConfig};
use llm_auction_engine::request::{GenerateRequest, JointSpec, Outcome, Request};
use llm_auction_engine::runner::MockRunner;
use llm_auction_model::sampling::SamplingParams;
use proptest::prelude::*;

/// Runs all specs through one engine, checking invariants every step.
fn together(
    specs: &[Spec],
    cfg: EngineConfig,
) -> (Vec<Outcome>, llm_auction_engine::engine::EngineTotals) {
    let mut e = Engine::new(MockRunner::new(VOCAB, 512), cfg).unwrap();
    let ids: Vec<_> = specs
        .iter()
        .map(|s| e.submit(request(s)).unwrap())
        .collect();
    let mut steps = 0;
    while e.has_unfinished() {
        let st = e.step();
        assert!(st.tokens <= cfg.token_budget, "budget exceeded: {st:?}");
        assert!(
            st.seqs <= cfg.max_seqs && e.running_seqs() <= cfg.max_seqs,
            "batch limit exceeded: {st:?}"
        );
        e.allocator().check().unwrap();
        steps += 1;
        assert!(steps < 100_000, "no progress");
    }
    assert_eq!(
        e.allocator().num_free(),
        cfg.num_blocks,
        "every block is returned"
    );
    let totals = e.totals();
    (
        ids.into_iter()
            .map(|id| e.take_outcome(id).unwrap().unwrap())
            .collect(),
        totals,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    /// Batched, scheduled results equal one-request-at-a-time results, for any arrival order and
    /// limits (budget, batch size, block size, memory pressure, prefix caching on or off).
    #[test]
    fn scheduled_equals_alone(specs in prop::collection::vec(spec_strategy(), 1..10), cfg in cfg_strategy()) {
        let expected: Vec<Outcome> = specs.iter().map(alone).collect();
        let (got, _) = together(&specs, cfg);
        prop_assert_eq!(got, expected);
    }
}

#[test]
fn shared_prompts_are_computed_once() {
    // Eight generations from one 40-token prompt, block size 8: with prefix caching the prompt's 4
    // full blocks are computed once and reused 7 times.
    let prompt = tokens(40, 9);
    let specs: Vec<Spec> = (0..8)
        .map(|k| Spec::Gen {
            prompt: prompt.clone(),
            max_new: 5,
            seed: k,
            greedy: false,
        })
        .collect();
    let cfg = EngineConfig {
        token_budget: 256,
        max_seqs: 16,
        block_size: 8,
        num_blocks: 256,
        prefix_caching: true,
    };
    let (with_cache, t1) = together(&specs, cfg);
    let (without, t0) = together(
        &specs,
        EngineConfig {
            prefix_caching: false,
            ..cfg
        },
    );
    assert_eq!(with_cache, without);
    assert!(t1.cache_hit_blocks >= 7 * 4, "{t1:?}");
    assert!(
        t1.tokens + 7 * 32 <= t0.tokens,
        "cache saved the shared prompt: {t1:?} vs {t0:?}"
    );
    // Scoring under a shared prompt shares it too.
    let specs: Vec<Spec> = (0..6)
        .map(|k| Spec::Score {
            prompt: prompt.clone(),
            cont: tokens(10, k),
        })
        .collect();
    let (_, t) = together(&specs, cfg);
    assert!(t.cache_hit_blocks >= 5 * 4, "{t:?}");
}

#[test]
fn full_prefix_hit_still_computes_the_last_token() {
    let prompt = tokens(16, 4); // exactly two blocks of 8
    let cfg = EngineConfig {
        token_budget: 64,
        max_seqs: 4,
        block_size: 8,
        num_blocks: 16,
        prefix_caching: true,
    };
    let mut e = Engine::new(MockRunner::new(VOCAB, 512), cfg).unwrap();
    let spec = Spec::Score {
        prompt: prompt.clone(),
        cont: vec![3],
    };
    let a = e.run_all(vec![request(&spec)], &mut |_| {}).unwrap();
    let before = e.totals().tokens;
    let b = e.run_all(vec![request(&spec)], &mut |_| {}).unwrap();
    assert_eq!(a, b);
    let computed = e.totals().tokens - before;
    // The first block is reused; the second holds the last prompt token, which is recomputed.
    assert!((1..=9).contains(&computed), "computed {computed}");
    assert!(e.totals().cache_hit_blocks >= 1);
}

#[test]
fn memory_pressure_preempts_and_recomputes() {
    let specs: Vec<Spec> = (0..6)
        .map(|k| Spec::Gen {
            prompt: tokens(12, k),
            max_new: 12,
            seed: k as u64,
            greedy: false,
        })
        .collect();
    // Each request alone needs 24 tokens = 6 blocks of 4; 8 blocks cannot hold two at full length.
    let cfg = EngineConfig {
        token_budget: 64,
        max_seqs: 6,
        block_size: 4,
        num_blocks: 8,
        prefix_caching: false,
    };
    let (got, totals) = together(&specs, cfg);
    assert!(totals.preemptions > 0, "{totals:?}");
    let expected: Vec<Outcome> = specs.iter().map(alone).collect();
    assert_eq!(got, expected);
}

#[test]
fn joint_members_step_together() {
    let spec = Spec::Joint {
        prompts: vec![tokens(3, 1), tokens(11, 2), tokens(6, 3)],
        max_new: 7,
    };
    // A budget smaller than the prompts forces chunked prefill, but the last tokens go together.
    let cfg = EngineConfig {
        token_budget: 5,
        max_seqs: 3,
        block_size: 2,
        num_blocks: 64,
        prefix_caching: true,
    };
    let (got, _) = together(std::slice::from_ref(&spec), cfg);
    assert_eq!(got[0], alone(&spec));
    let Outcome::Joint(j) = &got[0] else {
        panic!("joint outcome")
    };
    assert!(!j.tokens.is_empty());
}

#[test]
fn impossible_requests_are_rejected_at_submission() {
    let cfg = EngineConfig {
        token_budget: 8,
        max_seqs: 2,
        block_size: 4,
        num_blocks: 4,
        prefix_caching: true,
    };
    let mut e = Engine::new(MockRunner::new(VOCAB, 64), cfg).unwrap();
    let generate = |prompt: Vec<u32>, max_new| {
        Request::Generate(GenerateRequest {
            prompt,
            params: SamplingParams::greedy(),
            max_new_tokens: max_new,
            stop: vec![],
            seed: 0,
        })
    };
    assert!(matches!(
        e.submit(generate(tokens(10, 1), 10)),
        Err(EngineError::KvCapacity {
            needed: 5,
            available: 4
        })
    ));
    assert!(matches!(
        e.submit(generate(tokens(60, 1), 10)),
        Err(EngineError::PromptTooLong { len: 70, max: 64 })
    ));
    assert!(matches!(
        e.submit(generate(vec![], 3)),
        Err(EngineError::EmptyInput { .. })
    ));
    assert!(matches!(
        e.submit(generate(vec![1, 99], 3)),
        Err(EngineError::TokenOutOfVocab { token: 99, .. })
    ));
    let bad_t = Request::Generate(GenerateRequest {
        prompt: vec![1],
        params: SamplingParams {
            temperature: 0.0,
            ..Default::default()
        },
        max_new_tokens: 2,
        stop: vec![],
        seed: 0,
    });
    assert!(e.submit(bad_t).is_err());
    let joint = Request::Joint(JointSpec {
        prompts: vec![vec![1]; 3],
        max_new_tokens: 1,
        stop: vec![],
        decider: Box::new(SumArgmax),
    });
    assert!(matches!(e.submit(joint), Err(EngineError::Config(_))));
    // Zero-length work finishes immediately.
    let id = e.submit(generate(vec![1], 0)).unwrap();
    assert!(!e.has_unfinished());
    assert!(matches!(e.take_outcome(id), Some(Ok(Outcome::Generated(g))) if g.tokens.is_empty()));
    assert!(
        Engine::new(
            MockRunner::new(VOCAB, 64),
            EngineConfig {
                num_blocks: 0,
                ..cfg
            }
        )
        .is_err()
    );
}
