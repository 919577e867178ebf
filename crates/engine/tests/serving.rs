//! Serving tests on the mock model: requests that arrive while others run, cancellations, fair
//! sharing between owners, requests that fail alone, and the engine thread behind a channel shared
//! by many caller threads. Invariants are checked after every step and every result is compared
//! with the same request run alone.

mod common;

use common::*;
use llm_auction_engine::engine::{Engine, EngineConfig};
use llm_auction_engine::request::{JointDecider, JointSpec, Outcome, Request};
use llm_auction_engine::runner::{MockRunner, ModelRunner, RowOutput, RunnerSpec};
use llm_auction_engine::served::{self, Ticket};
use llm_auction_engine::{EngineError, Result};
use llm_auction_model::batch::ForwardBatch;
use proptest::prelude::*;
use std::time::Duration;

/// A request that arrives at step `at` for `owner`, and maybe is cancelled `cancel_after` steps
/// later.
#[derive(Debug, Clone)]
struct Arrival {
    at: usize,
    owner: u64,
    spec: Spec,
    cancel_after: Option<usize>,
}

fn arrival_strategy() -> impl Strategy<Value = Arrival> {
    (
        0usize..30,
        0u64..4,
        spec_strategy(),
        prop::option::weighted(0.3, 0usize..15),
    )
        .prop_map(|(at, owner, spec, cancel_after)| Arrival {
            at,
            owner,
            spec,
            cancel_after,
        })
}

/// Budget, batch limit and allocator invariants after a step.
fn check_step<R: ModelRunner>(
    e: &Engine<R>,
    st: &llm_auction_engine::StepStats,
    cfg: EngineConfig,
) {
    assert!(st.tokens <= cfg.token_budget, "budget exceeded: {st:?}");
    assert!(
        st.seqs <= cfg.max_seqs && e.running_seqs() <= cfg.max_seqs,
        "batch limit exceeded: {st:?}"
    );
    e.allocator().check().unwrap();
}

/// One step, then its checks.
fn step_checked<R: ModelRunner>(e: &mut Engine<R>, cfg: EngineConfig) {
    let st = e.step();
    check_step(e, &st, cfg);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]
    /// Requests arriving at random steps from several owners, some cancelled while they wait or
    /// run, under random limits: the invariants hold after every step, every block is returned, a
    /// cancelled request ends aborted (or with its full result, if it finished first), and every
    /// other result equals the request run alone.
    #[test]
    fn arrivals_and_cancellations(
        arrivals in prop::collection::vec(arrival_strategy(), 1..12),
        cfg in cfg_strategy(),
    ) {
        let mut e = Engine::new(MockRunner::new(VOCAB, 512), cfg).unwrap();
        let mut ids = vec![None; arrivals.len()];
        let mut step = 0;
        loop {
            for (k, a) in arrivals.iter().enumerate() {
                if a.at == step {
                    ids[k] = Some(e.submit_as(a.owner, request(&a.spec)).unwrap());
                }
                if a.cancel_after.map(|c| a.at + c) == Some(step)
                    && let Some(id) = ids[k]
                {
                    e.abort(id, "test");
                }
            }
            if ids.iter().all(Option::is_some) && !e.has_unfinished() {
                break;
            }
            let st = e.step();
            check_step(&e, &st, cfg);
            step += 1;
            prop_assert!(step < 100_000, "no progress");
        }
        prop_assert_eq!(e.allocator().num_free(), cfg.num_blocks, "every block is returned");
        for (k, a) in arrivals.iter().enumerate() {
            let out = e.take_outcome(ids[k].unwrap()).unwrap();
            match (out, a.cancel_after) {
                (Ok(o), _) => prop_assert_eq!(o, alone(&a.spec)),
                (Err(EngineError::Aborted(r)), Some(_)) => prop_assert_eq!(r, "test"),
                (Err(e), _) => prop_assert!(false, "request {} failed: {}", k, e),
            }
        }
    }
}

fn generation(seed: u32, max_new: usize) -> Spec {
    Spec::Gen {
        prompt: tokens(5, seed),
        max_new,
        seed: seed as u64,
        greedy: true,
    }
}

#[test]
fn a_newcomer_is_not_starved_by_a_flood() {
    // Owner 1 floods the queue with 40 generations; 4 seats. Owner 2 arrives after 3 steps and is
    // admitted at the next free seat, ahead of owner 1's 36 waiting requests (FIFO would make it
    // wait for all of them: about 10 rounds of 9 steps).
    let cfg = EngineConfig {
        token_budget: 64,
        max_seqs: 4,
        block_size: 4,
        num_blocks: 4096,
        prefix_caching: false,
    };
    let mut e = Engine::new(MockRunner::new(VOCAB, 512), cfg).unwrap();
    let flood: Vec<_> = (0..40)
        .map(|k| e.submit_as(1, request(&generation(k, 8))).unwrap())
        .collect();
    for _ in 0..3 {
        step_checked(&mut e, cfg);
    }
    let newcomer = generation(99, 8);
    let id = e.submit_as(2, request(&newcomer)).unwrap();
    let mut steps = 0;
    let out = loop {
        step_checked(&mut e, cfg);
        steps += 1;
        if let Some(out) = e.take_outcome(id) {
            break out.unwrap();
        }
    };
    // A seat frees within 8 steps (the running requests' remaining tokens); then one prefill
    // step and 7 decode steps.
    assert!(steps <= 6 + 8, "the newcomer took {steps} steps");
    assert_eq!(out, alone(&newcomer));
    let unfinished = flood.iter().filter(|&&f| e.progress(f).is_some()).count();
    assert!(
        unfinished >= 30,
        "the newcomer went first: {unfinished} of the flood still unfinished"
    );
    // Everything else still completes, equal to running alone.
    while e.has_unfinished() {
        step_checked(&mut e, cfg);
    }
    for (k, f) in flood.into_iter().enumerate() {
        assert_eq!(
            e.take_outcome(f).unwrap().unwrap(),
            alone(&generation(k as u32, 8))
        );
    }
    assert_eq!(e.allocator().num_free(), cfg.num_blocks);
}

/// Decides like the tests' rule but fails at its `n`-th decision.
struct FailAt(usize);
impl JointDecider for FailAt {
    fn decide(&mut self, logits: &[Vec<f32>]) -> Result<u32> {
        if self.0 == 0 {
            return Err(EngineError::Auction {
                field: "decider".into(),
                message: "the decider gave up".into(),
            });
        }
        self.0 -= 1;
        SumArgmax.decide(logits)
    }
}

/// The mock model, except that every row whose context ends with [`POISON`] is NaN.
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
            if batch.tokens[row] == POISON
                && let RowOutput::Logits(l) = &mut out[k]
            {
                l.fill(f32::NAN);
            }
        }
        Ok(out)
    }
}

#[test]
fn a_failing_decider_or_row_fails_its_own_request_only() {
    let cfg = big();
    let mut e = Engine::new(Poisoned(MockRunner::new(VOCAB, 512)), cfg).unwrap();
    let good = [
        generation(1, 6),
        generation(2, 9),
        Spec::Score {
            prompt: tokens(9, 3),
            cont: tokens(7, 4),
        },
    ];
    let ids: Vec<_> = good.iter().map(|s| e.submit(request(s)).unwrap()).collect();
    let failing = e
        .submit(Request::Joint(JointSpec {
            prompts: vec![tokens(4, 5), tokens(6, 6)],
            max_new_tokens: 8,
            stop: vec![],
            decider: Box::new(FailAt(2)),
        }))
        .unwrap();
    let mut poisoned_prompt = tokens(6, 7);
    poisoned_prompt.push(POISON);
    let poisoned = e
        .submit(request(&Spec::Gen {
            prompt: poisoned_prompt,
            max_new: 4,
            seed: 0,
            greedy: false,
        }))
        .unwrap();
    while e.has_unfinished() {
        step_checked(&mut e, cfg);
    }
    assert_eq!(e.allocator().num_free(), cfg.num_blocks);
    let err = e.take_outcome(failing).unwrap().unwrap_err();
    assert!(err.to_string().contains("the decider gave up"), "{err}");
    let err = e.take_outcome(poisoned).unwrap().unwrap_err();
    assert!(err.to_string().contains("NaN"), "{err}");
    for (s, id) in good.iter().zip(ids) {
        assert_eq!(e.take_outcome(id).unwrap().unwrap(), alone(s));
    }
}

/// The mock model, slowed down so that deadlines and cancellations land mid-run.
struct Slow(MockRunner);

impl ModelRunner for Slow {
    fn spec(&self) -> RunnerSpec {
        self.0.spec()
    }

    fn init_cache(&mut self, num_slots: usize) -> Result<()> {
        self.0.init_cache(num_slots)
    }

    fn forward(&mut self, batch: &ForwardBatch, targets: &[Option<u32>]) -> Result<Vec<RowOutput>> {
        std::thread::sleep(Duration::from_millis(2));
        self.0.forward(batch, targets)
    }
}

#[test]
fn callers_on_many_threads_share_one_engine_thread() {
    let cfg = EngineConfig {
        token_budget: 64,
        max_seqs: 8,
        block_size: 4,
        num_blocks: 512,
        prefix_caching: true,
    };
    let (handle, inbox) = served::channel();
    let engine = std::thread::spawn(move || {
        served::serve(
            Engine::new(Slow(MockRunner::new(VOCAB, 512)), cfg).unwrap(),
            inbox,
        )
    });
    std::thread::scope(|s| {
        // Twelve callers, each with a few requests of every kind, submitted at staggered times.
        let callers: Vec<_> = (0..12u32)
            .map(|c| {
                let handle = handle.clone();
                s.spawn(move || {
                    std::thread::sleep(Duration::from_millis(3 * c as u64));
                    let specs = vec![
                        generation(c, 3 + c as usize % 5),
                        Spec::Score {
                            prompt: tokens(9, 1),
                            cont: tokens(3 + c as usize, c),
                        },
                        Spec::Joint {
                            prompts: vec![tokens(3, c), tokens(5, c + 1)],
                            max_new: 4,
                        },
                    ];
                    let owner = handle.new_owner();
                    let mut sampled = 0;
                    let outs = handle
                        .run(
                            owner,
                            &Ticket::default(),
                            specs.iter().map(request).collect(),
                            &mut |st| sampled += st.sampled,
                        )
                        .unwrap();
                    (specs, outs, sampled)
                })
            })
            .collect();
        // A caller cancelled mid-run, and one whose deadline passes mid-run.
        let cancelled = {
            let handle = handle.clone();
            s.spawn(move || {
                let ticket = Ticket::default();
                let t = ticket.clone();
                let mut steps = 0;
                handle.run(
                    handle.new_owner(),
                    &ticket,
                    vec![request(&generation(5, 400))],
                    &mut |_| {
                        steps += 1;
                        if steps == 3 {
                            t.cancel();
                        }
                    },
                )
            })
        };
        let late = {
            let handle = handle.clone();
            s.spawn(move || {
                let ticket = Ticket::new(Some(Duration::from_millis(60)));
                handle.run(
                    handle.new_owner(),
                    &ticket,
                    vec![request(&generation(6, 400))],
                    &mut |_| {},
                )
            })
        };
        for c in callers {
            let (specs, outs, sampled) = c.join().unwrap();
            let expected: Vec<Outcome> = specs.iter().map(alone).collect();
            assert_eq!(outs, expected);
            assert!(sampled > 0, "progress reached the caller");
        }
        let err = cancelled.join().unwrap().unwrap_err();
        assert!(
            matches!(&err, EngineError::Aborted(r) if r == served::CANCELLED),
            "{err}"
        );
        let err = late.join().unwrap().unwrap_err();
        assert!(
            matches!(&err, EngineError::Aborted(r) if r == served::DEADLINE),
            "{err}"
        );
    });
    // An invalid request comes back as its own error; the engine serves on.
    let err = handle
        .run(
            handle.new_owner(),
            &Ticket::default(),
            vec![request(&Spec::Gen {
                prompt: vec![VOCAB as u32 + 3],
                max_new: 2,
                seed: 0,
                greedy: true,
            })],
            &mut |_| {},
        )
        .unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
    assert!(
        handle
            .gauges()
            .steps
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    drop(handle);
    engine.join().unwrap();
}
