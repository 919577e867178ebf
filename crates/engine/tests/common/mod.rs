//! What the scheduler tests share: reproducible request descriptions, the mock model's vocabulary,
//! strategies for requests and limits, and a request's outcome when it runs alone.
#![allow(dead_code)]

use llm_auction_engine::Result;
use llm_auction_engine::engine::{Engine, EngineConfig};
use llm_auction_engine::request::{
    GenerateRequest, JointDecider, JointSpec, Outcome, Request, ScoreRequest,
};
use llm_auction_engine::runner::MockRunner;
use llm_auction_model::sampling::SamplingParams;
use proptest::prelude::*;

pub const VOCAB: usize = 40;

/// A reproducible description of a request (requests themselves hold a boxed decider).
#[derive(Debug, Clone)]
pub enum Spec {
    Gen {
        prompt: Vec<u32>,
        max_new: usize,
        seed: u64,
        greedy: bool,
    },
    Score {
        prompt: Vec<u32>,
        cont: Vec<u32>,
    },
    Joint {
        prompts: Vec<Vec<u32>>,
        max_new: usize,
    },
}

/// Joint rule for tests: argmax of the members' summed logits.
pub struct SumArgmax;
impl JointDecider for SumArgmax {
    fn decide(&mut self, logits: &[Vec<f32>]) -> Result<u32> {
        let v = logits[0].len();
        let sums: Vec<f32> = (0..v).map(|t| logits.iter().map(|r| r[t]).sum()).collect();
        Ok(llm_auction_model::sampling::argmax(&sums) as u32)
    }
}

pub fn request(s: &Spec) -> Request {
    match s.clone() {
        Spec::Gen {
            prompt,
            max_new,
            seed,
            greedy,
        } => Request::Generate(GenerateRequest {
            prompt,
            params: if greedy {
                SamplingParams::greedy()
            } else {
                SamplingParams {
                    temperature: 0.9,
                    top_p: 0.9,
                    top_k: 0,
                    greedy: false,
                }
            },
            max_new_tokens: max_new,
            stop: vec![0],
            seed,
        }),
        Spec::Score { prompt, cont } => Request::Score(ScoreRequest {
            prompt,
            continuation: cont,
        }),
        Spec::Joint { prompts, max_new } => Request::Joint(JointSpec {
            prompts,
            max_new_tokens: max_new,
            stop: vec![0],
            decider: Box::new(SumArgmax),
        }),
    }
}

pub fn big() -> EngineConfig {
    EngineConfig {
        token_budget: 4096,
        max_seqs: 64,
        block_size: 4,
        num_blocks: 4096,
        prefix_caching: false,
    }
}

pub fn alone(s: &Spec) -> Outcome {
    let mut e = Engine::new(MockRunner::new(VOCAB, 512), big()).unwrap();
    e.run_all(vec![request(s)], &mut |_| {}).unwrap().remove(0)
}

pub fn tokens(len: usize, seed: u32) -> Vec<u32> {
    (0..len as u32)
        .map(|k| 1 + (k * 7 + seed * 13) % (VOCAB as u32 - 1))
        .collect()
}

pub fn spec_strategy() -> impl Strategy<Value = Spec> {
    let shared = prop::sample::select(vec![tokens(9, 1), tokens(17, 2), tokens(4, 3)]);
    prop_oneof![
        (shared.clone(), 1..12usize, any::<u64>(), any::<bool>()).prop_map(
            |(prompt, max_new, seed, greedy)| Spec::Gen {
                prompt,
                max_new,
                seed,
                greedy
            }
        ),
        (
            prop::collection::vec(1..VOCAB as u32, 1..30),
            1..10usize,
            any::<u64>()
        )
            .prop_map(|(prompt, max_new, seed)| Spec::Gen {
                prompt,
                max_new,
                seed,
                greedy: false
            }),
        (shared, prop::collection::vec(0..VOCAB as u32, 1..20))
            .prop_map(|(prompt, cont)| Spec::Score { prompt, cont }),
        (
            prop::collection::vec(prop::collection::vec(1..VOCAB as u32, 1..12), 1..4),
            1..8usize
        )
            .prop_map(|(prompts, max_new)| Spec::Joint { prompts, max_new }),
    ]
}

pub fn cfg_strategy() -> impl Strategy<Value = EngineConfig> {
    (
        3usize..40,
        3usize..10,
        prop::sample::select(vec![1usize, 2, 4, 8]),
        any::<bool>(),
        0usize..3,
    )
        .prop_map(|(budget, seqs, bs, prefix, tight)| {
            // Enough blocks for the largest request alone (prompt <= 30 + 12 new, 3 members of 12 + 8),
            // sometimes barely, so that preemption happens.
            let min_blocks = (3 * 20usize).div_ceil(bs).max(42usize.div_ceil(bs));
            let num_blocks = match tight {
                0 => min_blocks,
                1 => min_blocks * 2,
                _ => 4096,
            };
            EngineConfig {
                token_budget: budget,
                max_seqs: seqs,
                block_size: bs,
                num_blocks,
                prefix_caching: prefix,
            }
        })
}
