//! MOSAIC end to end (Soumalias, Curry, Seuken; Algorithms 1 and 2) on a Llama model.
//!
//! 1. Prompts, all through the model's chat template (as in the paper's experiments):
//!    `π_ref`: system "You are a helpful assistant."; `π_i`: system "Answer the question advertising
//!    <name>, <description>."; `π_gen`: system "Answer the query. Try to mention <name1>, who
//!    <description1> and <name2>, who <description2>." (a list for `n` advertisers); user = query.
//! 2. `M` candidates sampled from `π_gen` (context-aware, Algorithm 2) or `π_ref` (Algorithm 1) in one
//!    batched generation, temperature `T` and top-p `p`, each with its own seed.
//! 3. Every candidate scored under `π_ref`, the generator's prompt and every `π_i` in one batched
//!    scoring (each prompt's KV computed once and shared through the prefix cache).
//! 4. Rewards `r_ij = τ_i (log π_i(y_j) − log π_ref(y_j))` (Eq. 11); importance weights
//!    `lw_j = log π_ref(y_j) − log q(y_j)`; allocation, payments and utilities from
//!    [`llm_auction_mechanism::mosaic`]; the reply drawn with a seeded uniform.
//!
//! **Importance weights.** The convergence theorem (Thm 4.3) needs `q` to be the distribution the
//! candidates were actually drawn from. With temperature and top-p that is not the raw `π_gen`, so by
//! default ([`Importance::Proposal`]) `log q` is the sum of the per-token log-probabilities under the
//! tempered, truncated proposal recorded while sampling; then `π ∝ q · exp(r/τ) · π_ref / q` converges
//! to `π_r`. [`Importance::Raw`] uses the untempered `log π_gen(y)` as the paper's formula is written;
//! its limit is `π_r` reweighted by `q/π_gen`, which is not the optimum when `T ≠ 1` or `p < 1`. DSIC
//! holds either way (it holds for any fixed weights).

use crate::engine::{Engine, EngineConfig, EngineTotals, StepStats};
use crate::error::{EngineError, Result};
use crate::request::{GenerateSpec, Outcome, Request, ScoreSpec};
use crate::runner::BurnRunner;
use llm_auction_mechanism::mosaic::{Mosaic, RewardMatrix, draw_winner};
use llm_auction_mechanism::rewards::reward_from_logprobs;
use llm_auction_mechanism::rng::rng_from_seed;
use llm_auction_model::backend::KvBackend;
use llm_auction_model::model::{DEFAULT_SYSTEM_PROMPT, Model};
use llm_auction_model::runner::FinishReason;
use llm_auction_model::sampling::SamplingParams;
use rand::Rng;
use serde::Serialize;
use std::time::Instant;

/// An advertiser: a name and a one-line description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Advertiser {
    /// Brand name.
    pub name: String,
    /// What it does (e.g. "producing baking ingredients").
    pub description: String,
}

impl Advertiser {
    /// Parses `"Name: description"`.
    ///
    /// # Errors
    /// [`EngineError::Auction`] when there is no colon or either side is empty.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || EngineError::Auction {
            field: "advertiser",
            message: format!("{s:?} must look like \"Name: description\""),
        };
        let (name, description) = s.split_once(':').ok_or_else(bad)?;
        let (name, description) = (name.trim(), description.trim());
        if name.is_empty() || description.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            name: name.into(),
            description: description.into(),
        })
    }
}

/// Where candidates come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Generator {
    /// `π_gen`, prompted with the advertisers (Algorithm 2).
    ContextAware,
    /// `π_ref` itself (Algorithm 1).
    Reference,
}

/// Which `log q` enters the importance weights (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Importance {
    /// The proposal actually sampled from (temperature and top-p applied); the default.
    Proposal,
    /// The untempered generator, as in the paper's formula.
    Raw,
}

/// Parameters of one MOSAIC auction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MosaicConfig {
    /// Candidates `M`.
    pub m: usize,
    /// The platform's weight `τ` of the KL term.
    pub tau: f64,
    /// Per-advertiser `τ_i` (empty: all 1).
    pub tau_i: Vec<f64>,
    /// Sampling temperature.
    pub temperature: f64,
    /// Nucleus mass.
    pub top_p: f64,
    /// Most tokens per candidate.
    pub max_new_tokens: usize,
    /// Seed of the candidates and of the final draw.
    pub seed: u64,
    /// Candidate generator.
    pub generator: Generator,
    /// Importance-weight convention.
    pub importance: Importance,
    /// The agent-specific offset of Eq. 13.
    pub offset: bool,
}

impl Default for MosaicConfig {
    fn default() -> Self {
        Self {
            m: 8,
            tau: 1.0,
            tau_i: vec![],
            temperature: 0.8,
            top_p: 0.95,
            max_new_tokens: 64,
            seed: 0,
            generator: Generator::ContextAware,
            importance: Importance::Proposal,
            offset: true,
        }
    }
}

/// The prompts used (after the chat template).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Prompts {
    /// `π_ref`'s prompt.
    pub reference: String,
    /// `π_gen`'s prompt.
    pub generator: String,
    /// Each `π_i`'s prompt.
    pub advertisers: Vec<String>,
}

/// One candidate reply and its scores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    /// Its text (a final end-of-sequence token is not shown).
    pub text: String,
    /// Its tokens (with a final end-of-sequence token, when generation stopped there).
    pub tokens: Vec<u32>,
    /// Why generation ended.
    pub finish: FinishReason,
    /// `log π_ref(y)`.
    pub log_ref: f64,
    /// `log q(y)` under the proposal sampled from.
    pub log_q: f64,
    /// `log π_gen(y)` (untempered generator prompt).
    pub log_gen: f64,
    /// `log π_i(y)` for every advertiser.
    pub log_adv: Vec<f64>,
    /// `r_i(y)` for every advertiser.
    pub rewards: Vec<f64>,
    /// The importance weight `lw` used.
    pub log_weight: f64,
}

/// Per-advertiser results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdvertiserResult {
    /// The advertiser.
    pub name: String,
    /// `r_i` of the returned reply.
    pub reward: f64,
    /// `π·r_i`.
    pub expected_reward: f64,
    /// `p_i`.
    pub payment: f64,
    /// `U_i = π·r_i − p_i`.
    pub utility: f64,
}

/// Wall-clock costs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Timings {
    /// Seconds generating candidates.
    pub generation_seconds: f64,
    /// Seconds scoring them.
    pub scoring_seconds: f64,
    /// Seconds overall (including the mechanism).
    pub total_seconds: f64,
    /// Candidate tokens generated.
    pub generated_tokens: usize,
    /// Tokens computed while scoring (prompts not shared through the cache, and continuations).
    pub scoring_tokens: u64,
    /// `generated_tokens / generation_seconds`.
    pub generation_tokens_per_second: f64,
    /// `scoring_tokens / scoring_seconds`.
    pub scoring_tokens_per_second: f64,
}

/// Everything one MOSAIC auction produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MosaicReport {
    /// The user query.
    pub query: String,
    /// The advertisers.
    pub advertisers: Vec<Advertiser>,
    /// The parameters.
    pub config: MosaicConfig,
    /// The prompts used.
    pub prompts: Prompts,
    /// All candidates.
    pub candidates: Vec<Candidate>,
    /// `π` over the candidates.
    pub allocation: Vec<f64>,
    /// Index of the returned candidate.
    pub winner: usize,
    /// The returned reply.
    pub reply: String,
    /// Per-advertiser reward, payment and utility.
    pub results: Vec<AdvertiserResult>,
    /// `Σ p_i`.
    pub revenue: f64,
    /// Engine counters of the run.
    pub engine: EngineStats,
    /// Wall-clock costs.
    pub timings: Timings,
}

/// Engine counters (serialisable copy of [`EngineTotals`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    /// Forward passes.
    pub passes: u64,
    /// Tokens computed.
    pub tokens: u64,
    /// Preemptions.
    pub preemptions: u64,
    /// KV blocks reused from the prefix cache.
    pub cache_hit_blocks: u64,
}

impl From<EngineTotals> for EngineStats {
    fn from(t: EngineTotals) -> Self {
        Self {
            passes: t.passes,
            tokens: t.tokens,
            preemptions: t.preemptions,
            cache_hit_blocks: t.cache_hit_blocks,
        }
    }
}

/// The phases reported to the progress callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Sampling candidates: `(tokens generated, most tokens)`.
    Generating,
    /// Scoring candidates: `(scorings finished, scorings)`.
    Scoring,
}

/// The system message of advertiser `a`'s LLM.
pub fn advertiser_system_prompt(a: &Advertiser) -> String {
    format!(
        "Answer the question advertising {}, {}.",
        a.name, a.description
    )
}

/// The system message of the context-aware generator.
pub fn generator_system_prompt(ads: &[Advertiser]) -> String {
    let parts: Vec<String> = ads
        .iter()
        .map(|a| format!("{}, who {}", a.name, a.description))
        .collect();
    let list = match parts.len() {
        0 => String::new(),
        1 => parts[0].clone(),
        n => format!("{} and {}", parts[..n - 1].join(", "), parts[n - 1]),
    };
    format!("Answer the query. Try to mention {list}.")
}

fn check(cfg: &MosaicConfig, query: &str, ads: &[Advertiser]) -> Result<Vec<f64>> {
    let bad = |field, message: String| Err(EngineError::Auction { field, message });
    if query.trim().is_empty() {
        return bad("query", "must not be empty".into());
    }
    if ads.is_empty() {
        return bad("advertiser", "at least one advertiser is needed".into());
    }
    if cfg.m == 0 {
        return bad("M", "at least one candidate is needed".into());
    }
    if !(cfg.tau.is_finite() && cfg.tau > 0.0) {
        return bad(
            "tau",
            format!("must be a finite number > 0, got {}", cfg.tau),
        );
    }
    if cfg.max_new_tokens == 0 {
        return bad("max_new_tokens", "must be at least 1".into());
    }
    let tau_i = if cfg.tau_i.is_empty() {
        vec![1.0; ads.len()]
    } else {
        cfg.tau_i.clone()
    };
    if tau_i.len() != ads.len() {
        return bad(
            "tau_i",
            format!("{} values for {} advertisers", tau_i.len(), ads.len()),
        );
    }
    if let Some(t) = tau_i.iter().find(|t| !(t.is_finite() && **t > 0.0)) {
        return bad("tau_i", format!("must be finite and > 0, got {t}"));
    }
    SamplingParams {
        temperature: cfg.temperature,
        top_p: cfg.top_p,
        top_k: 0,
        greedy: false,
    }
    .validate()?;
    Ok(tau_i)
}

/// How the forward passes of an auction are executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Execution {
    /// Through the engine: batched, scheduled, prompts shared through the prefix cache.
    Scheduled(EngineConfig),
    /// The baseline of the engine benchmark: each candidate generated alone and each scoring run
    /// alone, recomputing its prompt (no batching, no prefix reuse). Same prompts, seeds, candidates
    /// and mechanism.
    Naive,
}

/// Runs one MOSAIC auction on `model` through the engine.
///
/// # Errors
/// [`EngineError::Auction`] for unusable input (no advertisers, `M = 0`, `τ <= 0`, ...),
/// [`EngineError::PromptTooLong`] when a prompt plus `max_new_tokens` exceeds the context, and
/// model or mechanism errors.
pub fn run_mosaic<B: KvBackend>(
    model: &Model<B>,
    query: &str,
    ads: &[Advertiser],
    cfg: &MosaicConfig,
    engine_cfg: EngineConfig,
    progress: &mut dyn FnMut(Phase, usize, usize),
) -> Result<MosaicReport> {
    run_mosaic_with(
        model,
        query,
        ads,
        cfg,
        Execution::Scheduled(engine_cfg),
        progress,
    )
}

/// [`run_mosaic`] with an explicit [`Execution`] (the benchmark compares the two).
///
/// # Errors
/// As [`run_mosaic`].
pub fn run_mosaic_with<B: KvBackend>(
    model: &Model<B>,
    query: &str,
    ads: &[Advertiser],
    cfg: &MosaicConfig,
    execution: Execution,
    progress: &mut dyn FnMut(Phase, usize, usize),
) -> Result<MosaicReport> {
    let start = Instant::now();
    let tau_i = check(cfg, query, ads)?;
    let prompts = Prompts {
        reference: model.chat_turn(DEFAULT_SYSTEM_PROMPT, query)?,
        generator: model.chat_turn(&generator_system_prompt(ads), query)?,
        advertisers: ads
            .iter()
            .map(|a| model.chat_turn(&advertiser_system_prompt(a), query))
            .collect::<std::result::Result<_, _>>()?,
    };
    let ref_ids = model.encode(&prompts.reference)?;
    let gen_ids = match cfg.generator {
        Generator::ContextAware => model.encode(&prompts.generator)?,
        Generator::Reference => ref_ids.clone(),
    };
    let adv_ids: Vec<Vec<u32>> = prompts
        .advertisers
        .iter()
        .map(|p| model.encode(p))
        .collect::<std::result::Result<_, _>>()?;
    let eos = model.eos_ids().to_vec();
    let mut exec = Executor::new(model, execution)?;

    // 1. Candidates.
    let mut seeds = rng_from_seed(cfg.seed);
    let params = SamplingParams {
        temperature: cfg.temperature,
        top_p: cfg.top_p,
        top_k: 0,
        greedy: false,
    };
    let gen_reqs: Vec<Request> = (0..cfg.m)
        .map(|_| {
            Request::Generate(GenerateSpec {
                prompt: gen_ids.clone(),
                params,
                max_new_tokens: cfg.max_new_tokens,
                stop: eos.clone(),
                seed: seeds.next_u64(),
            })
        })
        .collect();
    let final_seed = seeds.next_u64();
    let t_gen = Instant::now();
    let most = cfg.m * cfg.max_new_tokens;
    let mut generated = 0usize;
    let outs = exec.run(gen_reqs, &mut |s: &StepStats| {
        generated += s.sampled;
        progress(Phase::Generating, generated.min(most), most);
    })?;
    let gens: Vec<_> = outs.into_iter().filter_map(Outcome::generated).collect();
    let generation_seconds = t_gen.elapsed().as_secs_f64();
    let generated_tokens: usize = gens.iter().map(|g| g.tokens.len()).sum();

    // 2. Scores under every prompt (the generator's own prompt is π_ref's in Algorithm 1).
    let mut score_prompts: Vec<&Vec<u32>> = vec![&ref_ids];
    if cfg.generator == Generator::ContextAware {
        score_prompts.push(&gen_ids);
    }
    score_prompts.extend(adv_ids.iter());
    let reqs: Vec<Request> = score_prompts
        .iter()
        .flat_map(|p| {
            gens.iter().map(|g| {
                Request::Score(ScoreSpec {
                    prompt: (*p).clone(),
                    continuation: g.tokens.clone(),
                })
            })
        })
        .collect();
    let total_scores = reqs.len();
    let tokens_before = exec.tokens();
    let t_score = Instant::now();
    let mut done = 0usize;
    let scores = exec.run(reqs, &mut |s: &StepStats| {
        done += s.finished;
        progress(Phase::Scoring, done, total_scores);
    })?;
    let scoring_seconds = t_score.elapsed().as_secs_f64();
    let scoring_tokens = exec.tokens() - tokens_before;
    let totals: Vec<f64> = scores
        .into_iter()
        .filter_map(Outcome::scored)
        .map(|s| s.total_logprob)
        .collect();
    let m = cfg.m;
    let log_ref = &totals[..m];
    let (log_gen, adv_offset): (Vec<f64>, usize) = match cfg.generator {
        Generator::ContextAware => (totals[m..2 * m].to_vec(), 2 * m),
        Generator::Reference => (log_ref.to_vec(), m),
    };
    let log_adv = |i: usize, j: usize| totals[adv_offset + i * m + j];

    // 3. Rewards, weights, mechanism.
    let mut rows = vec![vec![0.0; m]; ads.len()];
    let mut candidates = Vec::with_capacity(m);
    let mut lw = Vec::with_capacity(m);
    for (j, g) in gens.iter().enumerate() {
        let log_q: f64 = g.logprobs_proposal.iter().sum();
        let weight = match cfg.importance {
            Importance::Proposal => log_ref[j] - log_q,
            Importance::Raw => log_ref[j] - log_gen[j],
        };
        let mut rewards = Vec::with_capacity(ads.len());
        for (i, row) in rows.iter_mut().enumerate() {
            let r = reward_from_logprobs(tau_i[i], log_adv(i, j), log_ref[j], 0.0)?;
            row[j] = r;
            rewards.push(r);
        }
        lw.push(weight);
        let visible: Vec<u32> = g
            .tokens
            .iter()
            .copied()
            .filter(|t| !eos.contains(t))
            .collect();
        candidates.push(Candidate {
            text: model.decode(&visible)?,
            tokens: g.tokens.clone(),
            finish: g.finish,
            log_ref: log_ref[j],
            log_q,
            log_gen: log_gen[j],
            log_adv: (0..ads.len()).map(|i| log_adv(i, j)).collect(),
            rewards,
            log_weight: weight,
        });
    }
    let mech = Mosaic::new(cfg.tau)?.with_offset(cfg.offset);
    let out = mech.run(&RewardMatrix::from_rows(&rows)?, Some(&lw))?;
    let winner = draw_winner(&out.allocation, &mut rng_from_seed(final_seed));
    let results = ads
        .iter()
        .enumerate()
        .map(|(i, a)| AdvertiserResult {
            name: a.name.clone(),
            reward: rows[i][winner],
            expected_reward: out.expected_rewards[i],
            payment: out.payments[i],
            utility: out.utilities[i],
        })
        .collect();
    let timings = Timings {
        generation_seconds,
        scoring_seconds,
        total_seconds: start.elapsed().as_secs_f64(),
        generated_tokens,
        scoring_tokens,
        generation_tokens_per_second: generated_tokens as f64 / generation_seconds.max(1e-9),
        scoring_tokens_per_second: scoring_tokens as f64 / scoring_seconds.max(1e-9),
    };
    Ok(MosaicReport {
        query: query.to_string(),
        advertisers: ads.to_vec(),
        config: MosaicConfig {
            tau_i,
            ..cfg.clone()
        },
        prompts,
        reply: candidates[winner].text.clone(),
        candidates,
        allocation: out.allocation,
        winner,
        results,
        revenue: out.revenue,
        engine: exec.stats(),
        timings,
    })
}

/// Runs requests either through one engine or one at a time (see [`Execution`]).
enum Executor<'m, B: KvBackend> {
    Scheduled(Box<Engine<BurnRunner<'m, B>>>),
    Naive {
        model: &'m Model<B>,
        tokens: u64,
        passes: u64,
    },
}

impl<'m, B: KvBackend> Executor<'m, B> {
    fn new(model: &'m Model<B>, execution: Execution) -> Result<Self> {
        Ok(match execution {
            Execution::Scheduled(cfg) => {
                Executor::Scheduled(Box::new(Engine::new(BurnRunner::new(&model.llama), cfg)?))
            }
            Execution::Naive => Executor::Naive {
                model,
                tokens: 0,
                passes: 0,
            },
        })
    }

    fn run(
        &mut self,
        reqs: Vec<Request>,
        on_step: &mut dyn FnMut(&StepStats),
    ) -> Result<Vec<Outcome>> {
        match self {
            Executor::Scheduled(engine) => engine.run_all(reqs, on_step),
            Executor::Naive {
                model,
                tokens,
                passes,
            } => {
                use llm_auction_model::runner::{
                    GenerateRequest, RunnerConfig, ScoreRequest, generate, score,
                };
                // One sequence per pass, fresh cache per request: no batching, no prefix reuse.
                let one = RunnerConfig {
                    max_batch: 1,
                    ..RunnerConfig::default()
                };
                let mut out = Vec::with_capacity(reqs.len());
                for r in reqs {
                    match r {
                        Request::Generate(g) => {
                            let req = GenerateRequest {
                                prompt: g.prompt.clone(),
                                params: g.params,
                                max_new_tokens: g.max_new_tokens,
                                stop: g.stop,
                                seed: g.seed,
                            };
                            let produced =
                                generate(&model.llama, &[req], &one, &mut |_| {})?.remove(0);
                            *tokens += (g.prompt.len() + produced.tokens.len()) as u64;
                            *passes += 1 + produced.tokens.len() as u64;
                            on_step(&StepStats {
                                sampled: produced.tokens.len(),
                                finished: 1,
                                ..Default::default()
                            });
                            out.push(Outcome::Generated(produced));
                        }
                        Request::Score(s) => {
                            *tokens += (s.prompt.len() + s.continuation.len()) as u64;
                            *passes += 1;
                            let req = ScoreRequest {
                                prompt: s.prompt,
                                continuation: s.continuation,
                                top_k: 0,
                            };
                            let r = score(&model.llama, &[req], &one)?.remove(0);
                            on_step(&StepStats {
                                finished: 1,
                                ..Default::default()
                            });
                            out.push(Outcome::Scored(crate::request::Scored {
                                token_logprobs: r.token_logprobs,
                                total_logprob: r.total_logprob,
                            }));
                        }
                        Request::Joint(_) => {
                            return Err(EngineError::Config(
                                "joint requests need the engine".into(),
                            ));
                        }
                    }
                }
                Ok(out)
            }
        }
    }

    fn tokens(&self) -> u64 {
        match self {
            Executor::Scheduled(e) => e.totals().tokens,
            Executor::Naive { tokens, .. } => *tokens,
        }
    }

    fn stats(&self) -> EngineStats {
        match self {
            Executor::Scheduled(e) => e.totals().into(),
            Executor::Naive { tokens, passes, .. } => EngineStats {
                passes: *passes,
                tokens: *tokens,
                preemptions: 0,
                cache_hit_blocks: 0,
            },
        }
    }
}
