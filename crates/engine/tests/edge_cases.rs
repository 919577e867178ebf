//! Edge cases of the engine on the mock model (issue "Hardening"): zero-length work in joint groups,
//! empty scoring continuations, a stop token at the first step, and failures of one request in the
//! middle of a step (a decider error, a non-finite logits row) that must not touch the others.

mod common;

use common::*;
use llm_auction_engine::engine::{Engine, EngineConfig};
use llm_auction_engine::request::{
    GenerateRequest, JointDecider, JointSpec, Outcome, Request, ScoreRequest,
};
use llm_auction_engine::runner::{MockRunner, ModelRunner, RowOutput, RunnerSpec};
use llm_auction_engine::{EngineError, Result};
use llm_auction_model::batch::ForwardBatch;
use llm_auction_model::generation::FinishReason;
use llm_auction_model::sampling::{SamplingParams, argmax};

fn small() -> EngineConfig {
    EngineConfig {
        token_budget: 16,
        max_seqs: 8,
        block_size: 4,
        num_blocks: 256,
        prefix_caching: true,
    }
}

/// Steps `e` to the end, checking the allocator after every step and that every block comes back.
fn drain<R: ModelRunner>(e: &mut Engine<R>) {
    let mut steps = 0;
    while e.has_unfinished() {
        e.step();
        e.allocator().check().unwrap();
        steps += 1;
        assert!(steps < 10_000, "no progress");
    }
    assert_eq!(e.allocator().num_free(), e.config().num_blocks);
}

#[test]
fn zero_tokens_in_a_joint_group_and_an_empty_continuation_finish_at_once() {
    let mut e = Engine::new(MockRunner::new(VOCAB, 512), small()).unwrap();
    let joint = e
        .submit(Request::Joint(JointSpec {
            prompts: vec![tokens(5, 1), tokens(3, 2)],
            max_new_tokens: 0,
            stop: vec![0],
            decider: Box::new(SumArgmax),
        }))
        .unwrap();
    let empty = e
        .submit(Request::Score(ScoreRequest {
            prompt: tokens(6, 3),
            continuation: vec![],
        }))
        .unwrap();
    let normal = Spec::Gen {
        prompt: tokens(7, 4),
        max_new: 5,
        seed: 9,
        greedy: false,
    };
    let gen_id = e.submit(request(&normal)).unwrap();
    drain(&mut e);
    match e.take_outcome(joint) {
        Some(Ok(Outcome::Joint(j))) => {
            assert!(j.tokens.is_empty());
            assert_eq!(j.finish, FinishReason::Length);
        }
        other => panic!("{other:?}"),
    }
    match e.take_outcome(empty) {
        Some(Ok(Outcome::Scored(s))) => {
            assert!(s.token_logprobs.is_empty());
            assert_eq!(s.total_logprob, 0.0);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.take_outcome(gen_id).unwrap().unwrap(), alone(&normal));
}

#[test]
fn a_stop_token_at_the_first_step_ends_with_that_token() {
    let prompt = tokens(6, 5);
    let first = argmax(&MockRunner::logits_of(VOCAB, &prompt)) as u32;
    let mut e = Engine::new(MockRunner::new(VOCAB, 512), small()).unwrap();
    let id = e
        .submit(Request::Generate(GenerateRequest {
            prompt: prompt.clone(),
            params: SamplingParams::greedy(),
            max_new_tokens: 10,
            stop: vec![first],
            seed: 0,
        }))
        .unwrap();
    let joint = e
        .submit(Request::Joint(JointSpec {
            prompts: vec![prompt.clone()],
            max_new_tokens: 10,
            stop: vec![first],
            decider: Box::new(SumArgmax),
        }))
        .unwrap();
    drain(&mut e);
    let g = e.take_outcome(id).unwrap().unwrap().generated().unwrap();
    assert_eq!(g.tokens, vec![first]);
    assert_eq!(g.finish, FinishReason::Stop);
    let j = e.take_outcome(joint).unwrap().unwrap().joint().unwrap();
    assert_eq!(j.tokens, vec![first]);
    assert_eq!(j.finish, FinishReason::Stop);
}

/// Picks like [`SumArgmax`] but fails at its `fail_at`-th decision.
struct FailsAt {
    calls: usize,
    fail_at: usize,
}

impl JointDecider for FailsAt {
    fn decide(&mut self, logits: &[Vec<f32>]) -> Result<u32> {
        self.calls += 1;
        if self.calls == self.fail_at {
            return Err(EngineError::Auction {
                field: "decider".into(),
                message: "the decider gave up".into(),
            });
        }
        SumArgmax.decide(logits)
    }
}

#[test]
fn a_decider_error_mid_step_fails_only_its_request() {
    let others = [
        Spec::Joint {
            prompts: vec![tokens(4, 6), tokens(9, 7)],
            max_new: 6,
        },
        Spec::Gen {
            prompt: tokens(5, 8),
            max_new: 8,
            seed: 3,
            greedy: false,
        },
        Spec::Score {
            prompt: tokens(3, 9),
            cont: tokens(7, 10),
        },
    ];
    let mut e = Engine::new(MockRunner::new(VOCAB, 512), small()).unwrap();
    let failing = e
        .submit(Request::Joint(JointSpec {
            prompts: vec![tokens(4, 11), tokens(6, 12)],
            max_new_tokens: 8,
            stop: vec![],
            decider: Box::new(FailsAt {
                calls: 0,
                fail_at: 3,
            }),
        }))
        .unwrap();
    let ids: Vec<_> = others
        .iter()
        .map(|s| e.submit(request(s)).unwrap())
        .collect();
    drain(&mut e);
    match e.take_outcome(failing) {
        Some(Err(err)) => assert!(err.to_string().contains("the decider gave up"), "{err}"),
        other => panic!("the failing request: {other:?}"),
    }
    for (id, s) in ids.into_iter().zip(&others) {
        assert_eq!(e.take_outcome(id).unwrap().unwrap(), alone(s), "{s:?}");
    }
}

/// The mock model, except that a row whose token is [`POISON`] has NaN logits (a model with NaN
/// weights on some inputs).
struct Poisoned(MockRunner);

const POISON: u32 = 37;

impl ModelRunner for Poisoned {
    fn spec(&self) -> RunnerSpec {
        self.0.spec()
    }

    fn init_cache(&mut self, num_slots: usize) -> Result<()> {
        self.0.init_cache(num_slots)
    }

    fn forward(&mut self, batch: &ForwardBatch, targets: &[Option<u32>]) -> Result<Vec<RowOutput>> {
        let mut out = self.0.forward(batch, targets)?;
        for (k, &row) in batch.logits_rows.iter().enumerate() {
            if batch.tokens[row] == POISON {
                out[k] = match &out[k] {
                    RowOutput::Logits(l) => RowOutput::Logits(vec![f32::NAN; l.len()]),
                    RowOutput::Logprob(_) => RowOutput::Logprob(f32::NAN),
                };
            }
        }
        Ok(out)
    }
}

#[test]
fn non_finite_logits_fail_their_request_not_the_step() {
    // Regression: NaN weights gave `null` log-probabilities reported as a success.
    let mut poisoned_prompt = tokens(5, 13);
    poisoned_prompt.retain(|&t| t != POISON);
    let clean: Vec<Spec> = [tokens(6, 14), tokens(8, 15)]
        .into_iter()
        .map(|mut p| {
            p.retain(|&t| t != POISON);
            p
        })
        .enumerate()
        .map(|(i, prompt)| Spec::Gen {
            prompt,
            max_new: 4,
            seed: i as u64,
            greedy: true,
        })
        .collect();
    let mut e = Engine::new(Poisoned(MockRunner::new(VOCAB, 512)), small()).unwrap();
    let mut generate_prompt = poisoned_prompt.clone();
    generate_prompt.push(POISON);
    let bad_gen = e
        .submit(Request::Generate(GenerateRequest {
            prompt: generate_prompt,
            params: SamplingParams::greedy(),
            max_new_tokens: 4,
            stop: vec![],
            seed: 0,
        }))
        .unwrap();
    let bad_score = e
        .submit(Request::Score(ScoreRequest {
            prompt: poisoned_prompt,
            continuation: vec![POISON, 3, 4],
        }))
        .unwrap();
    let ids: Vec<_> = clean
        .iter()
        .map(|s| e.submit(request(s)).unwrap())
        .collect();
    drain(&mut e);
    for id in [bad_gen, bad_score] {
        match e.take_outcome(id) {
            Some(Err(EngineError::Forward(m))) => assert!(m.contains("non-finite"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    for (id, s) in ids.into_iter().zip(&clean) {
        let expected = alone(s);
        let reaches_poison =
            matches!(&expected, Outcome::Generated(g) if g.tokens.contains(&POISON));
        match e.take_outcome(id).unwrap() {
            // A clean request whose own generation reaches the poisoned token fails too.
            Err(EngineError::Forward(_)) if reaches_poison => {}
            got => assert_eq!(got.unwrap(), expected, "{s:?}"),
        }
    }
}
