//! MOSAIC end to end (Soumalias, Curry, Seuken; Algorithms 1 and 2) on a Llama model.
//!
//! 1. Prompts, all through the model's chat template (as in the paper's experiments):
//!    `π_ref`: system "You are a helpful assistant."; `π_i`: system "Answer the question advertising
//!    `<name>`, `<description>`."; `π_gen`: system "Answer the query. Try to mention `<name1>`, who
//!    `<description1>` and `<name2>`, who `<description2>`." (a list for `n` advertisers); user = query.
//! 2. `M` candidates sampled from `π_gen` (context-aware, Algorithm 2) or `π_ref` (Algorithm 1) in one
//!    batched generation, temperature `T` and top-p `p`, each with its own seed.
//! 3. Every candidate scored under `π_ref` and every `π_i` (and under the generator's prompt only
//!    when its backend does not report the raw log-probabilities that generation computed anyway),
//!    each prompt's KV computed once and shared through the prefix cache. Scorings on the
//!    generator's own model start as each candidate finishes, in the same engine, while the others
//!    still decode ([`crate::lm::ModelSession::generate_then_score`]).
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

use crate::engine::StepStats;
use crate::error::{EngineError, Result};
use crate::limits;
use crate::lm::{LanguageModel, Sample, SessionCounters, reply_text};
use crate::request::{GenerateRequest, ScoreRequest};
use crate::roles::{RoleModel, Sessions};
use llm_auction_mechanism::mosaic::{Mosaic, RewardMatrix, draw_winner, importance_weights};
use llm_auction_mechanism::rewards::reward_from_logprobs;
use llm_auction_mechanism::rng::rng_from_seed;
use llm_auction_model::generation::FinishReason;
use llm_auction_model::model::DEFAULT_SYSTEM_PROMPT;
use llm_auction_model::sampling::SamplingParams;
use rand::Rng;
use serde::{Deserialize, Serialize};
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
            field: "advertiser".into(),
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Generator {
    /// `π_gen`, prompted with the advertisers (Algorithm 2).
    #[serde(alias = "context-aware")]
    #[cfg_attr(feature = "clap", value(alias = "context"))]
    ContextAware,
    /// `π_ref` itself (Algorithm 1).
    Reference,
}

/// Which `log q` enters the importance weights (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
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
    /// `log q(y)` under the proposal sampled from (`None` when the generator's backend does not
    /// report it).
    pub log_q: Option<f64>,
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
    /// Seconds generating candidates (with the scorings on the generator's own model, which run
    /// beside the decoding as each candidate finishes).
    pub generation_seconds: f64,
    /// Seconds of the scorings left after generation (those on other models).
    pub scoring_seconds: f64,
    /// Seconds overall (including the mechanism).
    pub total_seconds: f64,
    /// Candidate tokens generated.
    pub generated_tokens: usize,
    /// Tokens computed besides the generated ones: prompts not shared through the cache, and the
    /// scored continuations.
    pub scoring_tokens: u64,
    /// `generated_tokens / generation_seconds`.
    pub generation_tokens_per_second: f64,
    /// `scoring_tokens` over the seconds during which scorings ran (`scoring_seconds`, plus
    /// `generation_seconds` when some ran beside the decoding).
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
    /// Which model served each role.
    pub models: Vec<RoleModel>,
    /// Counters of the run, summed over the models' sessions.
    pub engine: SessionCounters,
    /// Wall-clock costs.
    pub timings: Timings,
}

/// The phases reported to the progress callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase<'a> {
    /// Sampling candidates: `(tokens generated, most tokens)`.
    Generating,
    /// A candidate has been generated: `(its index, M)`, with its text.
    Candidate {
        /// The reply's text.
        text: &'a str,
        /// Its tokens.
        tokens: usize,
        /// Why it ended.
        finish: FinishReason,
    },
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

/// Checks an auction's input (before any model work); returns the `τ_i` (all 1 when not given).
///
/// # Errors
/// [`EngineError::Auction`] naming the field: an empty query, no advertisers, `M = 0`, `τ <= 0`,
/// `τ_i` of the wrong length or not positive, bad sampling parameters, a size above its
/// [`limits`].
pub fn check_input(cfg: &MosaicConfig, query: &str, ads: &[Advertiser]) -> Result<Vec<f64>> {
    let bad = |field: &str, message: String| {
        Err(EngineError::Auction {
            field: field.into(),
            message,
        })
    };
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
    limits::check("M", cfg.m, limits::MAX_CANDIDATES)?;
    limits::check("advertiser", ads.len(), limits::MAX_ADVERTISERS)?;
    limits::check("max_new_tokens", cfg.max_new_tokens, limits::MAX_NEW_TOKENS)?;
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

/// The models behind MOSAIC's roles: the reference LLM `π_ref`, the context-aware generator
/// `π_gen`, and each advertiser's LLM `π_i` (in advertiser order). Roles may share a model.
#[derive(Clone)]
pub struct MosaicModels<'a> {
    /// `π_ref`.
    pub reference: &'a dyn LanguageModel,
    /// `π_gen` (used with [`Generator::ContextAware`]).
    pub generator: &'a dyn LanguageModel,
    /// `π_i`, one per advertiser.
    pub advertisers: Vec<&'a dyn LanguageModel>,
}

impl<'a> MosaicModels<'a> {
    /// Every role on `model` (the setting of the paper's experiments).
    pub fn single(model: &'a dyn LanguageModel, advertisers: usize) -> Self {
        Self {
            reference: model,
            generator: model,
            advertisers: vec![model; advertisers],
        }
    }
}

/// A candidate's tokens in the scoring model's own vocabulary: the generated ids when the scorer is
/// the model that generated it, otherwise its text (`text()`, asked for only then) re-tokenized by
/// the scorer (with the scorer's end-of-sequence token when generation stopped there).
pub fn continuation_for(
    scorer: &dyn LanguageModel,
    sampler: &dyn LanguageModel,
    sample: &Sample,
    text: &dyn Fn() -> Result<String>,
) -> Result<Vec<u32>> {
    if scorer.info().name == sampler.info().name {
        return Ok(sample.tokens.clone());
    }
    let mut ids = scorer.encode(&text()?)?;
    if sample.finish == FinishReason::Stop
        && let Some(&eos) = scorer.info().eos_ids.first()
    {
        ids.push(eos);
    }
    Ok(ids)
}

/// Runs one MOSAIC auction with each role on its model (one session per distinct model).
///
/// # Errors
/// [`EngineError::Auction`] for unusable input (no advertisers, `M = 0`, `τ <= 0`, a generator
/// without proposal log-probabilities under [`Importance::Proposal`], ...),
/// [`EngineError::PromptTooLong`] when a prompt plus `max_new_tokens` exceeds a context, and model
/// errors, wrapped in [`EngineError::Role`] naming the roles and the model.
pub fn run_mosaic(
    models: &MosaicModels<'_>,
    query: &str,
    ads: &[Advertiser],
    cfg: &MosaicConfig,
    progress: &mut dyn FnMut(Phase<'_>, usize, usize),
) -> Result<MosaicReport> {
    let start = Instant::now();
    let tau_i = check_input(cfg, query, ads)?;
    if models.advertisers.len() != ads.len() {
        return Err(EngineError::Auction {
            field: "advertiser-model".into(),
            message: format!(
                "{} advertiser models for {} advertisers",
                models.advertisers.len(),
                ads.len()
            ),
        });
    }
    let sampler = match cfg.generator {
        Generator::ContextAware => models.generator,
        Generator::Reference => models.reference,
    };
    if cfg.importance == Importance::Proposal && !sampler.info().proposal_logprobs {
        return Err(EngineError::Auction {
            field: "importance".into(),
            message: format!(
                "the generator's model {:?} ({}) does not report the proposal's log-probabilities; \
                 use --importance raw",
                sampler.info().name,
                sampler.info().kind
            ),
        });
    }
    let mut roles: Vec<(String, &dyn LanguageModel)> = vec![
        ("reference".into(), models.reference),
        ("generator".into(), models.generator),
    ];
    for (a, m) in ads.iter().zip(&models.advertisers) {
        roles.push((format!("advertiser {}", a.name), *m));
    }
    let mut sessions = Sessions::open(&roles)?;
    let (ref_s, gen_s) = (sessions.of(0), sessions.of(1));
    let sampler_s = match cfg.generator {
        Generator::ContextAware => gen_s,
        Generator::Reference => ref_s,
    };
    let adv_s: Vec<usize> = (0..ads.len()).map(|i| sessions.of(2 + i)).collect();

    let prompts = Prompts {
        reference: models
            .reference
            .chat_turn(DEFAULT_SYSTEM_PROMPT, query)
            .map_err(sessions.err(ref_s))?,
        generator: models
            .generator
            .chat_turn(&generator_system_prompt(ads), query)
            .map_err(sessions.err(gen_s))?,
        advertisers: ads
            .iter()
            .zip(&models.advertisers)
            .zip(&adv_s)
            .map(|((a, m), &s)| {
                m.chat_turn(&advertiser_system_prompt(a), query)
                    .map_err(sessions.err(s))
            })
            .collect::<Result<_>>()?,
    };
    // The ids encode the query and the advertisers' texts as plain text (no forged turns); the
    // strings above are the same prompts for the report.
    let ref_ids = models
        .reference
        .chat_turn_ids(DEFAULT_SYSTEM_PROMPT, query)
        .map_err(sessions.err(ref_s))?;
    let gen_ids = match cfg.generator {
        Generator::ContextAware => models
            .generator
            .chat_turn_ids(&generator_system_prompt(ads), query)
            .map_err(sessions.err(gen_s))?,
        Generator::Reference => ref_ids.clone(),
    };
    let adv_ids: Vec<Vec<u32>> = ads
        .iter()
        .zip(&models.advertisers)
        .zip(&adv_s)
        .map(|((a, m), &s)| {
            m.chat_turn_ids(&advertiser_system_prompt(a), query)
                .map_err(sessions.err(s))
        })
        .collect::<Result<_>>()?;
    let eos = sampler.info().eos_ids.clone();

    // 1. Candidates.
    let mut seeds = rng_from_seed(cfg.seed);
    let params = SamplingParams {
        temperature: cfg.temperature,
        top_p: cfg.top_p,
        top_k: 0,
        greedy: false,
    };
    let gen_reqs: Vec<GenerateRequest> = (0..cfg.m)
        .map(|_| GenerateRequest {
            prompt: gen_ids.clone(),
            params,
            max_new_tokens: cfg.max_new_tokens,
            stop: eos.clone(),
            seed: seeds.next_u64(),
        })
        .collect();
    let final_seed = seeds.next_u64();

    // The scorings (2.): under π_ref, the generator's prompt (π_ref's in Algorithm 1) and every
    // π_i. The generator's own log π_gen(y) comes from generation, which computed it, when its
    // backend reports raw log-probabilities; only a backend that does not is asked to score again.
    let gen_from_generation =
        cfg.generator == Generator::ContextAware && models.generator.info().raw_logprobs;
    let mut scorers: Vec<(usize, &dyn LanguageModel, &Vec<u32>)> =
        vec![(ref_s, models.reference, &ref_ids)];
    if cfg.generator == Generator::ContextAware && !gen_from_generation {
        scorers.push((gen_s, models.generator, &gen_ids));
    }
    for (i, m) in models.advertisers.iter().enumerate() {
        scorers.push((adv_s[i], *m, &adv_ids[i]));
    }
    // Scorings on the sampler's own model start as each candidate finishes, in the same session
    // (the candidate's own tokens: the scorer is the model that generated them).
    let piped: Vec<usize> = (0..scorers.len())
        .filter(|&k| scorers[k].0 == sampler_s)
        .collect();
    let total_scores = scorers.len() * cfg.m;
    let mut totals = vec![0.0; total_scores];

    // 1. Candidates (and the piped scorings).
    let t_gen = Instant::now();
    let tokens_at_start = sessions.counters().tokens;
    let most = cfg.m.saturating_mul(cfg.max_new_tokens);
    let mut generated = 0usize;
    // Both callbacks report progress (never at the same time): share it through a cell.
    let progress = std::cell::RefCell::new(progress);
    let (gens, piped_scores) = sessions
        .get(sampler_s)
        .generate_then_score(
            gen_reqs,
            &mut |s: &StepStats| {
                generated += s.sampled;
                (progress.borrow_mut())(Phase::Generating, generated.min(most), most);
            },
            &mut |j, g: &Sample| {
                // The text is decoded again below, where a decoding error fails the auction.
                if let Ok(text) = reply_text(sampler, &g.tokens) {
                    let phase = Phase::Candidate {
                        text: &text,
                        tokens: g.tokens.len(),
                        finish: g.finish,
                    };
                    (progress.borrow_mut())(phase, j, cfg.m);
                }
            },
            &mut |_, g: &Sample| {
                piped
                    .iter()
                    .map(|&k| ScoreRequest {
                        prompt: scorers[k].2.clone(),
                        continuation: g.tokens.clone(),
                    })
                    .collect()
            },
        )
        .map_err(sessions.err(sampler_s))?;
    let progress = progress.into_inner();
    let gens = crate::lm::expect_len(sampler.info(), "generate", gens, cfg.m)
        .map_err(sessions.err(sampler_s))?;
    for (j, row) in piped_scores.into_iter().enumerate() {
        let row = crate::lm::expect_len(sampler.info(), "score", row, piped.len())
            .map_err(sessions.err(sampler_s))?;
        for (&k, sc) in piped.iter().zip(row) {
            totals[k * cfg.m + j] = sc.total_logprob;
        }
    }
    let generation_seconds = t_gen.elapsed().as_secs_f64();
    let generated_tokens: usize = gens.iter().map(|g| g.tokens.len()).sum();
    let texts: Vec<String> = gens
        .iter()
        .map(|g| reply_text(sampler, &g.tokens).map_err(sessions.err(sampler_s)))
        .collect::<Result<_>>()?;

    // 2. The other scorings, each role's requests in its model's session; the order within a
    //    session is the global order, so a single model sees exactly the requests it always did.
    let mut continuations: Vec<Option<Vec<Vec<u32>>>> = vec![None; sessions.len()];
    let mut per_session: Vec<Vec<(usize, ScoreRequest)>> = vec![vec![]; sessions.len()];
    for (k, &(s, scorer, prompt)) in scorers.iter().enumerate() {
        if s == sampler_s {
            continue;
        }
        if continuations[s].is_none() {
            let conts = gens
                .iter()
                .zip(&texts)
                .map(|(g, t)| continuation_for(scorer, sampler, g, &|| Ok(t.clone())))
                .collect::<Result<Vec<_>>>()
                .map_err(sessions.err(s))?;
            continuations[s] = Some(conts);
        }
        for (j, c) in continuations[s].iter().flatten().enumerate() {
            per_session[s].push((
                k * cfg.m + j,
                ScoreRequest {
                    prompt: prompt.clone(),
                    continuation: c.clone(),
                },
            ));
        }
    }
    let t_score = Instant::now();
    let mut done = piped.len() * cfg.m;
    for (s, reqs) in per_session.into_iter().enumerate() {
        if reqs.is_empty() {
            continue;
        }
        let (slots, specs): (Vec<usize>, Vec<ScoreRequest>) = reqs.into_iter().unzip();
        let n = specs.len();
        let scored = sessions
            .get(s)
            .score(specs, &mut |st: &StepStats| {
                done += st.finished;
                progress(Phase::Scoring, done, total_scores);
            })
            .map_err(sessions.err(s))?;
        let scored = crate::lm::expect_len(sessions.model(s).info(), "score", scored, n)
            .map_err(sessions.err(s))?;
        for (slot, sc) in slots.into_iter().zip(scored) {
            totals[slot] = sc.total_logprob;
        }
    }
    let scoring_seconds = t_score.elapsed().as_secs_f64();
    let scoring_tokens =
        (sessions.counters().tokens - tokens_at_start).saturating_sub(generated_tokens as u64);
    let m = cfg.m;
    let log_ref = &totals[..m];
    let (log_gen, adv_offset): (Vec<f64>, usize) = match cfg.generator {
        Generator::ContextAware if gen_from_generation => (
            gens.iter()
                .map(|g| {
                    g.logprobs_raw
                        .as_ref()
                        .map(|lp| lp.iter().sum())
                        .ok_or_else(no_raw)
                })
                .collect::<Result<_>>()
                .map_err(sessions.err(gen_s))?,
            m,
        ),
        Generator::ContextAware => (totals[m..2 * m].to_vec(), 2 * m),
        Generator::Reference => (log_ref.to_vec(), m),
    };
    let log_adv = |i: usize, j: usize| totals[adv_offset + i * m + j];

    // 3. Rewards, weights, mechanism.
    let mut rows = vec![vec![0.0; m]; ads.len()];
    let mut candidates = Vec::with_capacity(m);
    let log_q: Vec<Option<f64>> = gens
        .iter()
        .map(|g| g.logprobs_proposal.as_ref().map(|lp| lp.iter().sum()))
        .collect();
    // Eq. 8's weights log π_ref − log q, q the proposal sampled from or the untempered generator.
    let lw = match cfg.importance {
        Importance::Proposal => {
            let q: Vec<f64> = log_q
                .iter()
                .map(|q| q.ok_or_else(no_proposal))
                .collect::<Result<_>>()?;
            importance_weights(log_ref, &q, m)?
        }
        Importance::Raw => importance_weights(log_ref, &log_gen, m)?,
    };
    for (j, (g, text)) in gens.iter().zip(texts).enumerate() {
        let mut rewards = Vec::with_capacity(ads.len());
        for (i, row) in rows.iter_mut().enumerate() {
            let r = reward_from_logprobs(tau_i[i], log_adv(i, j), log_ref[j], 0.0)?;
            row[j] = r;
            rewards.push(r);
        }
        candidates.push(Candidate {
            text,
            tokens: g.tokens.clone(),
            finish: g.finish,
            log_ref: log_ref[j],
            log_q: log_q[j],
            log_gen: log_gen[j],
            log_adv: (0..ads.len()).map(|i| log_adv(i, j)).collect(),
            rewards,
            log_weight: lw[j],
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
        scoring_tokens_per_second: scoring_tokens as f64
            / (scoring_seconds
                + if piped.is_empty() {
                    0.0
                } else {
                    generation_seconds
                })
            .max(1e-9),
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
        models: sessions.role_models(),
        engine: sessions.counters(),
        timings,
    })
}

/// A generation without the raw log-probabilities its backend said it reports.
fn no_raw() -> EngineError {
    EngineError::Internal(
        "the generator said it reports raw log-probabilities but a candidate came without them"
            .into(),
    )
}

/// A generation without proposal log-probabilities under `--importance proposal` (the check at the
/// start of [`run_mosaic`] refuses such generators; a backend may still omit them).
fn no_proposal() -> EngineError {
    EngineError::Auction {
        field: "importance".into(),
        message: "the generator reported no proposal log-probabilities; use --importance raw"
            .into(),
    }
}
