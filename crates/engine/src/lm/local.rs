//! In-process models behind the [`LanguageModel`] interface: [`EngineModel`] runs every session
//! through one continuous-batching [`Engine`]; [`NaiveModel`] runs each request alone (no batching,
//! no prefix reuse), the baseline of the engine benchmark.

use super::{LanguageModel, ModelInfo, ModelSession, OnStep, Sample, SessionCounters, expect_len};
use crate::engine::{Engine, EngineConfig, StepStats};
use crate::error::{EngineError, Result};
use crate::request::{
    GenerateRequest, JointDecider, JointOutput, JointSpec, Outcome, Request, ScoreRequest, Scored,
};
use crate::runner::BurnRunner;
use llm_auction_model::backend::ModelBackend;
use llm_auction_model::generation::Generation;
use llm_auction_model::model::Model;
use llm_auction_model::standalone::{StandaloneConfig, generate, score, score_with_top};
use std::sync::{Arc, Mutex};

fn local_info<B: ModelBackend>(name: &str, model: &Model<B>) -> ModelInfo {
    let c = model.config();
    ModelInfo {
        name: name.to_string(),
        kind: "local".into(),
        location: model.path().display().to_string(),
        vocab_size: c.vocab_size,
        context_length: c.max_position,
        eos_ids: model.eos_ids().to_vec(),
        raw_logprobs: true,
        proposal_logprobs: true,
    }
}

/// Tokenizer and chat template of a local model (shared by both implementations).
macro_rules! local_text {
    () => {
        fn info(&self) -> &ModelInfo {
            &self.info
        }

        fn chat_turn(&self, system: &str, user: &str) -> Result<String> {
            Ok(self.model.chat_turn(system, user)?)
        }

        fn encode(&self, text: &str) -> Result<Vec<u32>> {
            Ok(self.model.encode(text)?)
        }

        fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
            Ok(self.model.encode_plain(text)?)
        }

        fn decode(&self, ids: &[u32]) -> Result<String> {
            Ok(self.model.decode(ids)?)
        }
    };
}

pub(crate) fn sample_of(g: Generation) -> Sample {
    Sample {
        tokens: g.tokens,
        logprobs_raw: Some(g.logprobs_raw),
        logprobs_proposal: Some(g.logprobs_proposal),
        finish: g.finish,
    }
}

/// Log-probabilities of a logits row (log-sum-exp in f64).
fn log_softmax_row(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max
        + row
            .iter()
            .map(|&x| (x as f64 - max).exp())
            .sum::<f64>()
            .ln();
    row.iter().map(|&x| (x as f64 - lse) as f32).collect()
}

/// A local model served by the continuous-batching engine; each session owns one engine.
pub struct EngineModel<B: ModelBackend> {
    model: Arc<Model<B>>,
    cfg: EngineConfig,
    info: ModelInfo,
}

impl<B: ModelBackend> EngineModel<B> {
    /// `model` under the entry name `name`, each session an engine with `cfg`.
    pub fn new(name: &str, model: Arc<Model<B>>, cfg: EngineConfig) -> Self {
        let info = local_info(name, &model);
        Self { model, cfg, info }
    }

    /// The model.
    pub fn model(&self) -> &Model<B> {
        &self.model
    }
}

impl<B: ModelBackend> LanguageModel for EngineModel<B>
where
    Model<B>: Send + Sync,
{
    local_text!();

    fn session(&self) -> Result<Box<dyn ModelSession + '_>> {
        Ok(Box::new(EngineSession {
            engine: Engine::new(BurnRunner::new(&self.model.llama), self.cfg)?,
        }))
    }
}

/// One engine: every request of the session shares its batches and its prefix cache.
struct EngineSession<'m, B: ModelBackend> {
    engine: Engine<BurnRunner<'m, B>>,
}

/// Records the rows it is given and ends the joint request (used to read next-token rows).
struct RowTap(Arc<Mutex<Vec<Vec<f32>>>>);

/// The next-token log-probability rows after `contexts`, read through one joint step that `run`
/// runs to its end on an engine (the engine's own path to full rows).
pub(crate) fn next_token_rows(
    contexts: &[Vec<u32>],
    run: &mut dyn FnMut(Request) -> Result<()>,
) -> Result<Vec<Vec<f32>>> {
    if contexts.is_empty() {
        return Ok(vec![]);
    }
    let rows = Arc::new(Mutex::new(Vec::new()));
    run(Request::Joint(JointSpec {
        prompts: contexts.to_vec(),
        max_new_tokens: 1,
        stop: vec![],
        decider: Box::new(RowTap(rows.clone())),
    }))?;
    let rows = rows.lock().map(|r| r.clone()).unwrap_or_default();
    if rows.len() != contexts.len() {
        return Err(EngineError::Internal("joint step produced no rows".into()));
    }
    Ok(rows.iter().map(|r| log_softmax_row(r)).collect())
}

impl JointDecider for RowTap {
    fn decide(&mut self, logits: &[Vec<f32>]) -> Result<u32> {
        if let Ok(mut rows) = self.0.lock() {
            *rows = logits.to_vec();
        }
        Ok(0)
    }
}

impl<B: ModelBackend> ModelSession for EngineSession<'_, B> {
    fn generate(&mut self, reqs: Vec<GenerateRequest>, on_step: OnStep<'_>) -> Result<Vec<Sample>> {
        self.generate_each(reqs, on_step, &mut |_, _| {})
    }

    /// Steps until every request is done (as `Engine::run_all`), reporting each sample as it
    /// finishes; the first failed request's error (in request order) is returned at the end.
    fn generate_each(
        &mut self,
        reqs: Vec<GenerateRequest>,
        on_step: OnStep<'_>,
        on_sample: &mut dyn FnMut(usize, &Sample),
    ) -> Result<Vec<Sample>> {
        self.generate_then_score(reqs, on_step, on_sample, &mut |_, _| vec![])
            .map(|(samples, _)| samples)
    }

    fn score(&mut self, reqs: Vec<ScoreRequest>, on_step: OnStep<'_>) -> Result<Vec<Scored>> {
        let reqs = reqs.into_iter().map(Request::Score).collect();
        let outs = self.engine.run_all(reqs, on_step)?;
        Ok(outs.into_iter().filter_map(Outcome::scored).collect())
    }

    /// Submits each sample's scorings to the engine the step it finishes, so they share the
    /// batches of the samples still decoding.
    fn generate_then_score(
        &mut self,
        reqs: Vec<GenerateRequest>,
        on_step: OnStep<'_>,
        on_sample: &mut dyn FnMut(usize, &Sample),
        follow: &mut dyn FnMut(usize, &Sample) -> Vec<ScoreRequest>,
    ) -> Result<(Vec<Sample>, Vec<Vec<Scored>>)> {
        let ids = reqs
            .into_iter()
            .map(|r| self.engine.submit(Request::Generate(r)))
            .collect::<Result<Vec<_>>>()?;
        let n = ids.len();
        let mut samples: Vec<Option<Result<Sample>>> = (0..n).map(|_| None).collect();
        let mut follow_ids: Vec<Result<Vec<_>>> = (0..n).map(|_| Ok(vec![])).collect();
        let mut take = |engine: &mut Engine<BurnRunner<'_, B>>| {
            for (i, &id) in ids.iter().enumerate() {
                if samples[i].is_none()
                    && let Some(out) = engine.take_outcome(id)
                {
                    let sample = out.and_then(|o| {
                        o.generated().map(sample_of).ok_or_else(|| {
                            EngineError::Internal("a generation came back as another kind".into())
                        })
                    });
                    if let Ok(s) = &sample {
                        on_sample(i, s);
                        follow_ids[i] = follow(i, s)
                            .into_iter()
                            .map(|spec| engine.submit(Request::Score(spec)))
                            .collect();
                    }
                    samples[i] = Some(sample);
                }
            }
        };
        take(&mut self.engine);
        while self.engine.has_unfinished() {
            let stats = self.engine.step();
            on_step(&stats);
            take(&mut self.engine);
        }
        let samples = samples
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(EngineError::Internal("missing generation".into()))))
            .collect::<Result<Vec<_>>>()?;
        let scored = follow_ids
            .into_iter()
            .map(|ids| {
                ids?.into_iter()
                    .map(|id| {
                        let out = self
                            .engine
                            .take_outcome(id)
                            .ok_or_else(|| EngineError::Internal("missing scoring".into()))??;
                        out.scored().ok_or_else(|| {
                            EngineError::Internal("a scoring came back as another kind".into())
                        })
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((samples, scored))
    }

    fn next_token_logprobs(&mut self, contexts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        next_token_rows(contexts, &mut |req| {
            self.engine.run_all(vec![req], &mut |_| {}).map(|_| ())
        })
    }

    fn joint(&mut self, specs: Vec<JointSpec>, on_step: OnStep<'_>) -> Result<Vec<JointOutput>> {
        let ids = specs
            .into_iter()
            .map(|s| self.engine.submit(Request::Joint(s)))
            .collect::<Result<Vec<_>>>()?;
        while self.engine.has_unfinished() {
            let stats = self.engine.step();
            on_step(&stats);
        }
        ids.into_iter()
            .map(|id| {
                self.engine
                    .take_outcome(id)
                    .transpose()?
                    .and_then(Outcome::joint)
                    .ok_or_else(|| EngineError::Internal("missing joint outcome".into()))
            })
            .collect()
    }

    fn counters(&self) -> SessionCounters {
        let t = self.engine.totals();
        SessionCounters {
            passes: t.passes,
            tokens: t.tokens,
            preemptions: t.preemptions,
            cache_hit_blocks: t.cache_hit_blocks,
        }
    }
}

/// A local model run one request at a time: each generation and each scoring alone, recomputing its
/// prompt (the benchmark's baseline).
pub struct NaiveModel<B: ModelBackend> {
    model: Arc<Model<B>>,
    info: ModelInfo,
}

impl<B: ModelBackend> NaiveModel<B> {
    /// `model` under the entry name `name`.
    pub fn new(name: &str, model: Arc<Model<B>>) -> Self {
        let info = local_info(name, &model);
        Self { model, info }
    }
}

impl<B: ModelBackend> LanguageModel for NaiveModel<B>
where
    Model<B>: Send + Sync,
{
    local_text!();

    fn session(&self) -> Result<Box<dyn ModelSession + '_>> {
        Ok(Box::new(NaiveSession {
            model: &self.model,
            info: &self.info,
            counters: SessionCounters::default(),
        }))
    }
}

struct NaiveSession<'m, B: ModelBackend> {
    model: &'m Model<B>,
    info: &'m ModelInfo,
    counters: SessionCounters,
}

impl<B: ModelBackend> ModelSession for NaiveSession<'_, B> {
    fn generate(&mut self, reqs: Vec<GenerateRequest>, on_step: OnStep<'_>) -> Result<Vec<Sample>> {
        let mut out = Vec::with_capacity(reqs.len());
        for g in reqs {
            let prompt_len = g.prompt.len();
            let produced = generate(
                &self.model.llama,
                &[g],
                &StandaloneConfig::default(),
                &mut |_| {},
            )?;
            let produced = expect_len(self.info, "generate", produced, 1)?.remove(0);
            self.counters.tokens += (prompt_len + produced.tokens.len()) as u64;
            self.counters.passes += 1 + produced.tokens.len() as u64;
            on_step(&StepStats {
                sampled: produced.tokens.len(),
                finished: 1,
                ..Default::default()
            });
            out.push(sample_of(produced));
        }
        Ok(out)
    }

    fn score(&mut self, reqs: Vec<ScoreRequest>, on_step: OnStep<'_>) -> Result<Vec<Scored>> {
        let mut out = Vec::with_capacity(reqs.len());
        for s in reqs {
            self.counters.tokens += (s.prompt.len() + s.continuation.len()) as u64;
            self.counters.passes += 1;
            let r = score(&self.model.llama, &[s], &StandaloneConfig::default())?;
            out.push(expect_len(self.info, "score", r, 1)?.remove(0));
            on_step(&StepStats {
                finished: 1,
                ..Default::default()
            });
        }
        Ok(out)
    }

    fn next_token_logprobs(&mut self, contexts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let vocab = self.info.vocab_size;
        let mut out = Vec::with_capacity(contexts.len());
        for c in contexts {
            self.counters.tokens += c.len() as u64;
            self.counters.passes += 1;
            let req = ScoreRequest {
                prompt: c.clone(),
                continuation: vec![],
            };
            let (_, top) =
                score_with_top(&self.model.llama, &req, vocab, &StandaloneConfig::default())?;
            let mut row = vec![f32::NEG_INFINITY; vocab];
            for (id, lp) in top {
                if let Some(x) = row.get_mut(id as usize) {
                    *x = lp;
                }
            }
            out.push(row);
        }
        Ok(out)
    }

    fn counters(&self) -> SessionCounters {
        self.counters
    }
}
