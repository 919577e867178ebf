//! A local model served by one engine thread shared by every session ([`crate::served`]): the
//! sessions of concurrent auctions submit into the same engine, so their requests share forward
//! passes and the prefix cache. Each session is one owner (the unit of fair sharing) and carries its
//! auction's [`Ticket`] (cancellation and deadline).

use super::local::{EngineModel, next_token_rows};
use super::{LanguageModel, ModelInfo, ModelSession, OnStep, Sample, SessionCounters};
use crate::engine::{Engine, EngineConfig, Owner, StepStats};
use crate::error::{EngineError, Result};
use crate::request::{
    GenerateRequest, JointOutput, JointSpec, Outcome, Request, ScoreRequest, Scored,
};
use crate::runner::BurnRunner;
use crate::served::{EngineHandle, EngineThread, Gauges, Ticket, serve};
use llm_auction_model::backend::ModelBackend;
use llm_auction_model::model::Model;
use std::sync::Arc;

/// A local model whose sessions all run on one engine thread.
pub struct ServedModel {
    text: Box<dyn LanguageModel>,
    thread: EngineThread,
    /// The model's useful floating-point operations so far (`Llama::flops`).
    flops: Box<dyn Fn() -> u64 + Send + Sync>,
    batch_invariant: bool,
}

impl ServedModel {
    /// Starts the engine thread of `model` (entry name `name`) with `cfg`.
    ///
    /// # Errors
    /// An engine that cannot be built (limits, KV allocation).
    pub fn start<B: ModelBackend>(
        name: &str,
        model: Arc<Model<B>>,
        cfg: EngineConfig,
    ) -> Result<Self>
    where
        Model<B>: Send + Sync,
    {
        let text = Box::new(EngineModel::new(name, model.clone(), cfg));
        let batch_invariant = model.llama.batch_invariant();
        let counted = model.clone();
        let flops = Box::new(move || counted.llama.flops());
        let thread = EngineThread::start(name, move |inbox, ready| {
            match Engine::new(BurnRunner::new(&model.llama), cfg) {
                Ok(engine) => {
                    ready(Ok(()));
                    serve(engine, inbox);
                }
                Err(e) => ready(Err(e)),
            }
        })?;
        Ok(Self {
            text,
            thread,
            flops,
            batch_invariant,
        })
    }

    /// Floating-point operations of the useful work of the model's forward passes so far, as
    /// `Llama::flops` counts them (benchmarks divide by the measured GEMM peak for a time bound).
    pub fn flops(&self) -> u64 {
        (self.flops)()
    }

    /// Whether the model runs the native CPU pass (`Llama::batch_invariant`), whose GEMM peak
    /// `llm_auction_model::cpu::kernels::measured_peak_gflops` measures.
    pub fn batch_invariant(&self) -> bool {
        self.batch_invariant
    }

    /// The engine's live figures.
    pub fn gauges(&self) -> &Gauges {
        self.thread.handle().gauges()
    }
}

impl LanguageModel for ServedModel {
    fn info(&self) -> &ModelInfo {
        self.text.info()
    }

    fn chat_turn(&self, system: &str, user: &str) -> Result<String> {
        self.text.chat_turn(system, user)
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.text.encode(text)
    }

    fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        self.text.encode_plain(text)
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.text.decode(ids)
    }

    fn session(&self) -> Result<Box<dyn ModelSession + '_>> {
        self.session_for(&Ticket::default())
    }

    fn session_for(&self, ticket: &Ticket) -> Result<Box<dyn ModelSession + '_>> {
        let handle = self.thread.handle();
        Ok(Box::new(ServedSession {
            handle,
            owner: handle.new_owner(),
            ticket: ticket.clone(),
            counters: SessionCounters::default(),
        }))
    }
}

/// One owner's requests on the shared engine.
struct ServedSession<'m> {
    handle: &'m EngineHandle,
    owner: Owner,
    ticket: Ticket,
    counters: SessionCounters,
}

impl ServedSession<'_> {
    /// Runs `reqs`, counting the steps that advanced them (`passes`) and their tokens.
    fn run(&mut self, reqs: Vec<Request>, on_step: OnStep<'_>) -> Result<Vec<Outcome>> {
        let counters = &mut self.counters;
        self.handle
            .run(self.owner, &self.ticket, reqs, &mut |s: &StepStats| {
                counters.passes += 1;
                counters.tokens += s.sampled as u64;
                on_step(s);
            })
    }
}

fn wrong_kind() -> EngineError {
    EngineError::Internal("the served engine returned an outcome of another kind".into())
}

impl ModelSession for ServedSession<'_> {
    fn generate(&mut self, reqs: Vec<GenerateRequest>, on_step: OnStep<'_>) -> Result<Vec<Sample>> {
        self.generate_each(reqs, on_step, &mut |_, _| {})
    }

    fn generate_each(
        &mut self,
        reqs: Vec<GenerateRequest>,
        on_step: OnStep<'_>,
        on_sample: &mut dyn FnMut(usize, &Sample),
    ) -> Result<Vec<Sample>> {
        let reqs = reqs.into_iter().map(Request::Generate).collect();
        let counters = &mut self.counters;
        let outs = self.handle.run_each(
            self.owner,
            &self.ticket,
            reqs,
            &mut |s: &StepStats| {
                counters.passes += 1;
                counters.tokens += s.sampled as u64;
                on_step(s);
            },
            &mut |i, o| {
                if let Outcome::Generated(g) = o {
                    on_sample(i, &super::local::sample_of(g.clone()));
                }
            },
        )?;
        outs.into_iter()
            .map(|o| {
                o.generated()
                    .map(super::local::sample_of)
                    .ok_or_else(wrong_kind)
            })
            .collect()
    }

    fn score(&mut self, reqs: Vec<ScoreRequest>, on_step: OnStep<'_>) -> Result<Vec<Scored>> {
        let reqs = reqs.into_iter().map(Request::Score).collect();
        self.run(reqs, on_step)?
            .into_iter()
            .map(|o| o.scored().ok_or_else(wrong_kind))
            .collect()
    }

    fn next_token_logprobs(&mut self, contexts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        next_token_rows(contexts, &mut |req| {
            self.run(vec![req], &mut |_| {}).map(|_| ())
        })
    }

    fn joint(&mut self, specs: Vec<JointSpec>, on_step: OnStep<'_>) -> Result<Vec<JointOutput>> {
        let reqs = specs.into_iter().map(Request::Joint).collect();
        self.run(reqs, on_step)?
            .into_iter()
            .map(|o| o.joint().ok_or_else(wrong_kind))
            .collect()
    }

    fn counters(&self) -> SessionCounters {
        self.counters
    }
}

/// A model seen by one auction: every session it opens carries the auction's ticket (for models
/// that honour tickets, see [`LanguageModel::session_for`]); everything else is the model's.
pub struct Ticketed<'a> {
    model: &'a dyn LanguageModel,
    ticket: Ticket,
}

impl<'a> Ticketed<'a> {
    /// `model` under `ticket`.
    pub fn new(model: &'a dyn LanguageModel, ticket: Ticket) -> Self {
        Self { model, ticket }
    }
}

impl LanguageModel for Ticketed<'_> {
    fn info(&self) -> &ModelInfo {
        self.model.info()
    }

    fn chat_turn(&self, system: &str, user: &str) -> Result<String> {
        self.model.chat_turn(system, user)
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.model.encode(text)
    }

    fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        self.model.encode_plain(text)
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.model.decode(ids)
    }

    fn session(&self) -> Result<Box<dyn ModelSession + '_>> {
        self.model.session_for(&self.ticket)
    }

    fn vocab_fingerprint(&self) -> Result<String> {
        self.model.vocab_fingerprint()
    }
}
