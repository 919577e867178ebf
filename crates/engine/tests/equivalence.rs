//! Equivalence of the engine with the model crate's one-request-at-a-time path, on a tiny random
//! Llama (every compiled CPU backend) and on the default model: the same sampled tokens with the same
//! seeds, whatever the arrival order and batch limits, and log-probabilities bitwise equal where the
//! model's pass is batch-invariant (the native CPU pass), else within 1e-4.

use llm_auction_engine::engine::{Engine, EngineConfig};
use llm_auction_engine::request::{GenerateRequest, Outcome, Request, ScoreRequest};
use llm_auction_engine::runner::BurnRunner;
use llm_auction_model::backend::ModelBackend;
use llm_auction_model::sampling::SamplingParams;
use llm_auction_model::standalone::{StandaloneConfig, generate, score};
use llm_auction_model::testing::{MapSource, random_weights, tiny_config};
use llm_auction_model::{Llama, for_each_backend};

fn seq(n: usize, s: u32, vocab: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|k| 4 + (k * 31 + s * 7) % (vocab - 4))
        .collect()
}

/// Generations and scorings sharing prompts, checked against the model crate's runner.
fn check<B: ModelBackend>(model: &Llama<B>, vocab: u32, max_new: usize, configs: &[EngineConfig]) {
    let params = SamplingParams {
        temperature: 0.8,
        top_p: 0.95,
        top_k: 0,
        greedy: false,
    };
    let prompts = [seq(21, 1, vocab), seq(9, 2, vocab), seq(40, 3, vocab)];
    let gens: Vec<GenerateRequest> = (0..6)
        .map(|k| GenerateRequest {
            prompt: prompts[k % 3].clone(),
            params,
            max_new_tokens: max_new,
            stop: vec![],
            seed: 50 + k as u64,
        })
        .collect();
    let scores: Vec<ScoreRequest> = (0..6)
        .map(|k| ScoreRequest {
            prompt: prompts[k % 2].clone(),
            continuation: seq(5 + k, 10 + k as u32, vocab),
        })
        .collect();
    let want_gen: Vec<_> = gens
        .iter()
        .map(|g| {
            generate(
                model,
                std::slice::from_ref(g),
                &StandaloneConfig::default(),
                &mut |_| {},
            )
            .unwrap()
            .remove(0)
        })
        .collect();
    let want_score: Vec<_> = scores
        .iter()
        .map(|s| {
            score(model, std::slice::from_ref(s), &StandaloneConfig::default())
                .unwrap()
                .remove(0)
        })
        .collect();
    let tol = if model.batch_invariant() { 0.0 } else { 1e-4 };
    for (c, cfg) in configs.iter().enumerate() {
        for reverse in [false, true] {
            let mut reqs: Vec<(usize, Request)> = gens
                .iter()
                .enumerate()
                .map(|(k, g)| (k, Request::Generate(g.clone())))
                .chain(scores.iter().enumerate().map(|(k, s)| {
                    (
                        100 + k,
                        Request::Score(ScoreRequest {
                            prompt: s.prompt.clone(),
                            continuation: s.continuation.clone(),
                        }),
                    )
                }))
                .collect();
            if reverse {
                reqs.reverse();
            }
            let keys: Vec<usize> = reqs.iter().map(|r| r.0).collect();
            let mut engine = Engine::new(BurnRunner::new(model), *cfg).unwrap();
            let outs = engine
                .run_all(reqs.into_iter().map(|r| r.1).collect(), &mut |_| {})
                .unwrap();
            for (key, out) in keys.into_iter().zip(outs) {
                match out {
                    Outcome::Generated(g) => {
                        let w = &want_gen[key];
                        assert_eq!(g.tokens, w.tokens, "config {c}, generation {key}: tokens");
                        for (a, b) in g.logprobs_raw.iter().zip(&w.logprobs_raw) {
                            assert!(
                                (a - b).abs() <= tol,
                                "config {c}, generation {key}: {a} vs {b}"
                            );
                        }
                    }
                    Outcome::Scored(s) => {
                        let w = &want_score[key - 100];
                        for (a, b) in s.token_logprobs.iter().zip(&w.token_logprobs) {
                            assert!(
                                f64::from((a - b).abs()) <= tol,
                                "config {c}, scoring {key}: {a} vs {b}"
                            );
                        }
                    }
                    Outcome::Joint(_) => unreachable!(),
                }
            }
        }
    }
}

fn configs() -> Vec<EngineConfig> {
    vec![
        EngineConfig::default(),
        EngineConfig {
            token_budget: 16,
            max_seqs: 3,
            block_size: 4,
            num_blocks: 64,
            prefix_caching: true,
        },
        EngineConfig {
            token_budget: 7,
            max_seqs: 12,
            block_size: 8,
            num_blocks: 20,
            prefix_caching: false,
        },
        EngineConfig {
            token_budget: 64,
            max_seqs: 1,
            block_size: 16,
            num_blocks: 8,
            prefix_caching: true,
        },
    ]
}

for_each_backend! {
    #[test]
    fn engine_equals_one_at_a_time_on_a_tiny_model() {
        let cfg = tiny_config();
        let model = Llama::<B>::load(cfg.clone(), &MapSource(random_weights(&cfg, 77, false)), &Default::default(), &mut |_, _, _| {}).unwrap();
        check(&model, cfg.vocab_size as u32, 10, &configs());
    }
}

#[test]
fn engine_equals_one_at_a_time_on_the_default_model() {
    let model = llm_auction_model::model::Model::<llm_auction_model::CpuBackend>::load_default(
        &Default::default(),
        &mut |m| eprintln!("{m}"),
        &mut |_, _, _| {},
    )
    .expect("default model");
    check(&model.llama, 49_152, 8, &configs()[..2]);
}
