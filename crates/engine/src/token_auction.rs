//! The token auction (Duetting, Mirrokni, Paes Leme, Xu, Zuo) end to end on a Llama model.
//!
//! Agent `i`'s LLM is the model with system message "Write an ad for `<name>`, `<description>`." (or a
//! prompt the user supplies) and the query as the user turn. The agents' sequences form one joint
//! request: every step, one batched forward pass gives each agent's next-token distribution
//! (temperature 1), the bids aggregate them (linear or log-linear), the mechanism's stable sampler
//! draws the token from the auction's seeded stream and charges per-token payments, and the token is
//! appended to every agent's sequence. Decoding stops at the end-of-sequence token or the limit.

use crate::engine::StepStats;
use crate::error::{EngineError, Result};
use crate::limits;
use crate::lm::{LanguageModel, joint};
use crate::request::{JointDecider, JointOutput, JointSpec};
use crate::roles::{RoleModel, Sessions};
use llm_auction_mechanism::aggregate::{Aggregation, Bids};
use llm_auction_mechanism::dist::Distribution;
use llm_auction_mechanism::rng::rng_from_seed;
use llm_auction_mechanism::token_auction::{PaymentRule, TokenAuction, TokenAuctionRun};
use llm_auction_model::generation::FinishReason;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// An agent (advertiser) of the token auction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agent {
    /// Brand name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Its bid `b_i >= 0`.
    pub bid: f64,
    /// A system message replacing the default "Write an ad for `<name>, <description>`.".
    pub system_prompt: Option<String>,
}

impl Agent {
    /// Parses `"Name: description: bid"`.
    ///
    /// # Errors
    /// [`EngineError::Auction`] naming the malformed part.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |m: &str| EngineError::Auction {
            field: "agent".into(),
            message: format!("{s:?}: {m}; expected \"Name: description: bid\""),
        };
        let (rest, bid) = s.rsplit_once(':').ok_or_else(|| bad("no bid"))?;
        let (name, description) = rest.split_once(':').ok_or_else(|| bad("no description"))?;
        let bid: f64 = bid
            .trim()
            .parse()
            .map_err(|_| bad("the bid is not a number"))?;
        if !(bid.is_finite() && bid >= 0.0) {
            return Err(bad("the bid must be a finite number >= 0"));
        }
        let (name, description) = (name.trim(), description.trim());
        if name.is_empty() || description.is_empty() {
            return Err(bad("empty name or description"));
        }
        Ok(Self {
            name: name.into(),
            description: description.into(),
            bid,
            system_prompt: None,
        })
    }

    /// The system message of this agent's LLM.
    pub fn system(&self) -> String {
        self.system_prompt
            .clone()
            .unwrap_or_else(|| format!("Write an ad for {}, {}.", self.name, self.description))
    }
}

/// Parameters of a token auction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TokenAuctionConfig {
    /// How bids weight the distributions.
    pub aggregation: Aggregation,
    /// How agents are charged per token.
    pub payment: PaymentRule,
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// Seed of the stable sampling stream.
    pub seed: u64,
}

impl Default for TokenAuctionConfig {
    fn default() -> Self {
        Self {
            aggregation: Aggregation::Linear,
            payment: PaymentRule::SecondPrice,
            max_new_tokens: 48,
            seed: 0,
        }
    }
}

/// One decoding step of the auction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenStep {
    /// The token drawn.
    pub token: u32,
    /// Its text.
    pub piece: String,
    /// The agent whose distribution it came from (exponential race only).
    pub winner: Option<usize>,
    /// Each agent's payment for this token.
    pub payments: Vec<f64>,
}

/// Everything a token auction produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenAuctionReport {
    /// The user query.
    pub query: String,
    /// The agents.
    pub agents: Vec<Agent>,
    /// The parameters.
    pub config: TokenAuctionConfig,
    /// Each agent's prompt (after the chat template).
    pub prompts: Vec<String>,
    /// The generated text (without a final end-of-sequence token).
    pub text: String,
    /// Why decoding ended.
    pub finish: FinishReason,
    /// Every step.
    pub steps: Vec<TokenStep>,
    /// Which model served each agent.
    pub models: Vec<RoleModel>,
    /// Each agent's total spend: the sum of its per-token payments.
    pub total_payments: Vec<f64>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// One decided token, as the decider records it: token, race winner, payments.
#[derive(Debug, Clone)]
struct LoggedStep {
    token: u32,
    winner: Option<usize>,
    payments: Vec<f64>,
}

/// The decider's record, read back after the engine finishes the request.
type StepLog = Arc<Mutex<Vec<LoggedStep>>>;

/// The decision rule plugged into the engine: aggregation, stable sampling and payments.
struct AuctionDecider {
    run: TokenAuctionRun<ChaCha8Rng>,
    log: StepLog,
}

impl JointDecider for AuctionDecider {
    fn decide(&mut self, logits: &[Vec<f32>]) -> Result<u32> {
        let dists = logits
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let z: Vec<f64> = row.iter().map(|&x| x as f64).collect();
                Distribution::from_logits(&z, &format!("agent {i} logits"))
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let out = self.run.step(&dists)?;
        let token = u32::try_from(out.token).map_err(|_| EngineError::TokenOutOfVocab {
            field: "token".into(),
            token: out.token as u64,
            vocab: u32::MAX as usize,
        })?;
        if let Ok(mut log) = self.log.lock() {
            log.push(LoggedStep {
                token,
                winner: out.winner,
                payments: out.payments,
            });
        }
        Ok(token)
    }
}

/// A prepared auction: the joint request (taken when submitted), the log its decider fills, and
/// what the report needs.
struct Prepared {
    request: Option<JointSpec>,
    log: StepLog,
    prompts: Vec<String>,
    query: String,
    agents: Vec<Agent>,
    cfg: TokenAuctionConfig,
}

impl Prepared {
    fn take_request(&mut self) -> Result<JointSpec> {
        self.request
            .take()
            .ok_or_else(|| EngineError::Internal("request already submitted".into()))
    }
}

/// The models behind the agents: one per agent, in agent order. Agents may share a model; agents on
/// different models must share one tokenizer (checked by [`vocab_fingerprint`]).
///
/// [`vocab_fingerprint`]: crate::lm::vocab_fingerprint
pub type AgentModels<'a> = [&'a dyn LanguageModel];

/// The stop ids of the agents' models (in order of first appearance).
fn stop_ids(models: &AgentModels<'_>) -> Vec<u32> {
    let mut stop = Vec::new();
    for m in models {
        for &t in &m.info().eos_ids {
            if !stop.contains(&t) {
                stop.push(t);
            }
        }
    }
    stop
}

/// Checks that the agents' models share one vocabulary.
fn check_vocabularies(agents: &[Agent], models: &AgentModels<'_>) -> Result<()> {
    let first = models[0];
    let mut seen: Vec<&str> = vec![&first.info().name];
    let reference = first.vocab_fingerprint()?;
    for (a, m) in agents.iter().zip(models).skip(1) {
        if seen.contains(&m.info().name.as_str()) {
            continue;
        }
        seen.push(&m.info().name);
        if m.info().vocab_size != first.info().vocab_size || m.vocab_fingerprint()? != reference {
            return Err(EngineError::Auction {
                field: "agent-model".into(),
                message: format!(
                    "agent {}'s model {:?} has another tokenizer than agent {}'s model {:?} \
                     (vocabularies of {} and {} tokens, or different token ids); the token auction \
                     needs one vocabulary",
                    a.name,
                    m.info().name,
                    agents[0].name,
                    first.info().name,
                    m.info().vocab_size,
                    first.info().vocab_size
                ),
            });
        }
    }
    Ok(())
}

fn prepare(
    models: &AgentModels<'_>,
    query: &str,
    agents: &[Agent],
    cfg: &TokenAuctionConfig,
) -> Result<Prepared> {
    if query.trim().is_empty() {
        return Err(EngineError::Auction {
            field: "query".into(),
            message: "must not be empty".into(),
        });
    }
    if agents.is_empty() {
        return Err(EngineError::Auction {
            field: "agent".into(),
            message: "at least one agent is needed".into(),
        });
    }
    if models.len() != agents.len() {
        return Err(EngineError::Auction {
            field: "agent-model".into(),
            message: format!("{} agent models for {} agents", models.len(), agents.len()),
        });
    }
    if cfg.max_new_tokens == 0 {
        return Err(EngineError::Auction {
            field: "max_new_tokens".into(),
            message: "must be at least 1".into(),
        });
    }
    limits::check("agent", agents.len(), limits::MAX_AGENTS)?;
    limits::check("max_new_tokens", cfg.max_new_tokens, limits::MAX_NEW_TOKENS)?;
    let bids = Bids::new(agents.iter().map(|a| a.bid).collect())?;
    let rule = TokenAuction::new(cfg.aggregation, cfg.payment);
    rule.validate(models[0].info().vocab_size)?;
    let prompts: Vec<String> = agents
        .iter()
        .zip(models)
        .map(|(a, m)| m.chat_turn(&a.system(), query))
        .collect::<Result<_>>()?;
    // The ids encode the query and the agents' texts as plain text (no forged turns); the strings
    // are the same prompts for the report.
    let ids = agents
        .iter()
        .zip(models)
        .map(|(a, m)| m.chat_turn_ids(&a.system(), query))
        .collect::<Result<Vec<_>>>()?;
    let log: StepLog = Arc::new(Mutex::new(Vec::new()));
    let decider = AuctionDecider {
        run: TokenAuctionRun::new(rule, bids, rng_from_seed(cfg.seed)),
        log: log.clone(),
    };
    let request = JointSpec {
        prompts: ids,
        max_new_tokens: cfg.max_new_tokens,
        stop: stop_ids(models),
        decider: Box::new(decider),
    };
    Ok(Prepared {
        request: Some(request),
        log,
        prompts,
        query: query.to_string(),
        agents: agents.to_vec(),
        cfg: *cfg,
    })
}

fn report(
    models: &AgentModels<'_>,
    roles: Vec<RoleModel>,
    p: Prepared,
    joint: JointOutput,
    seconds: f64,
) -> Result<TokenAuctionReport> {
    let text_model = models[0];
    let log = p.log.lock().map(|l| l.clone()).unwrap_or_default();
    let mut total = vec![0.0; p.agents.len()];
    let mut steps = Vec::with_capacity(log.len());
    for LoggedStep {
        token,
        winner,
        payments,
    } in log
    {
        total.iter_mut().zip(&payments).for_each(|(t, x)| *t += x);
        steps.push(TokenStep {
            token,
            piece: text_model.decode(&[token])?,
            winner,
            payments,
        });
    }
    let stop = stop_ids(models);
    let visible: Vec<u32> = joint
        .tokens
        .iter()
        .copied()
        .filter(|t| !stop.contains(t))
        .collect();
    Ok(TokenAuctionReport {
        query: p.query,
        agents: p.agents,
        config: p.cfg,
        prompts: p.prompts,
        text: text_model.decode(&visible)?,
        finish: joint.finish,
        steps,
        models: roles,
        total_payments: total,
        seconds,
    })
}

/// Opens the sessions of the agents' models: `(sessions, session of each agent)`.
fn open_sessions<'a>(
    models: &AgentModels<'a>,
    agents: &[Agent],
) -> Result<(Sessions<'a>, Vec<usize>)> {
    let roles: Vec<(String, &dyn LanguageModel)> = agents
        .iter()
        .zip(models)
        .map(|(a, m)| (format!("agent {}", a.name), *m))
        .collect();
    let sessions = Sessions::open(&roles)?;
    let of = (0..roles.len()).map(|i| sessions.of(i)).collect();
    Ok((sessions, of))
}

/// Runs joint decodings: on the one session when every agent is on one model (the engine steps
/// them together), otherwise step by step over every model's next-token rows.
fn decode_all(
    sessions: &mut Sessions<'_>,
    agent_session: &[usize],
    specs: Vec<JointSpec>,
    on_step: &mut dyn FnMut(&StepStats),
) -> Result<Vec<JointOutput>> {
    if sessions.len() == 1 {
        return sessions
            .get(0)
            .joint(specs, on_step)
            .map_err(|e| sessions.wrap(0, e));
    }
    let (members, joints) = joint::plan(specs, &|i| agent_session[i]);
    let n = sessions.len();
    let mut rows = |s: usize, ctx: &[Vec<u32>]| {
        let got = sessions.get(s).next_token_logprobs(ctx);
        got.map_err(|e| sessions.wrap(s, e))
    };
    joint::decode(n, &mut rows, &members, joints, on_step)
}

/// Runs one token auction, each agent on its model.
///
/// # Errors
/// [`EngineError::Auction`] for unusable input (agents on models with different tokenizers among
/// them), mechanism errors (all-zero bids, second price with log-linear aggregation over more than
/// two tokens), model errors.
pub fn run_token_auction(
    models: &AgentModels<'_>,
    query: &str,
    agents: &[Agent],
    cfg: &TokenAuctionConfig,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<TokenAuctionReport> {
    let start = Instant::now();
    let mut p = prepare(models, query, agents, cfg)?;
    let (mut sessions, of) = open_sessions(models, agents)?;
    if sessions.len() > 1 {
        check_vocabularies(agents, models)?;
    }
    let mut n = 0;
    let outs = decode_all(
        &mut sessions,
        &of,
        vec![p.take_request()?],
        &mut |s: &StepStats| {
            n += s.sampled;
            progress(n, cfg.max_new_tokens);
        },
    )?;
    let joint = outs
        .into_iter()
        .next()
        .ok_or_else(|| EngineError::Internal("no outcome".into()))?;
    let roles = sessions.role_models();
    report(models, roles, p, joint, start.elapsed().as_secs_f64())
}

/// One row of the two-agent λ sweep.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepRow {
    /// Relative bid of the first agent: bids are `(λ, 1 − λ)`.
    pub lambda: f64,
    /// The report of that auction.
    pub report: TokenAuctionReport,
}

/// The shape of the two-agent λ sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepConfig {
    /// Points `K >= 2`: `λ = k/(K−1)`, `k = 0..K`.
    pub points: usize,
    /// Most tokens per auction.
    pub max_new_tokens: usize,
    /// The stable-sampling seed shared by every point (common random numbers).
    pub seed: u64,
}

/// The paper's two-advertiser demonstration: for every `λ` of the sweep and both aggregations, one
/// auction with bids `(λ, 1 − λ)` and the same seed (common random numbers), all decoded together in
/// one engine. Linear aggregation pays second price; log-linear (no stable sampler over a large
/// vocabulary) pays first price.
///
/// # Errors
/// As [`run_token_auction`]; [`EngineError::Auction`] unless there are exactly two agents and
/// `K >= 2`.
pub fn lambda_sweep(
    models: &AgentModels<'_>,
    query: &str,
    agents: &[Agent],
    sweep: SweepConfig,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<(Aggregation, Vec<SweepRow>)>> {
    let k = sweep.points;
    if agents.len() != 2 || k < 2 {
        return Err(EngineError::Auction {
            field: "lambda-sweep".into(),
            message: "needs exactly two agents and K >= 2".into(),
        });
    }
    limits::check("lambda-sweep", k, limits::MAX_SWEEP_POINTS)?;
    let start = Instant::now();
    let (mut sessions, of) = open_sessions(models, agents)?;
    if sessions.len() > 1 {
        check_vocabularies(agents, models)?;
    }
    let mut jobs = Vec::new();
    let mut specs = Vec::new();
    for aggregation in [Aggregation::Linear, Aggregation::LogLinear] {
        let payment = match aggregation {
            Aggregation::Linear => PaymentRule::SecondPrice,
            Aggregation::LogLinear => PaymentRule::FirstPrice,
        };
        for step in 0..k {
            let lambda = step as f64 / (k - 1) as f64;
            let mut pair = agents.to_vec();
            pair[0].bid = lambda;
            pair[1].bid = 1.0 - lambda;
            let cfg = TokenAuctionConfig {
                aggregation,
                payment,
                max_new_tokens: sweep.max_new_tokens,
                seed: sweep.seed,
            };
            let mut p = prepare(models, query, &pair, &cfg)?;
            specs.push(p.take_request()?);
            jobs.push((aggregation, lambda, p));
        }
    }
    let total = jobs.len().saturating_mul(sweep.max_new_tokens);
    let mut done = 0;
    let outs = decode_all(&mut sessions, &of, specs, &mut |s: &StepStats| {
        done += s.sampled;
        progress(done.min(total), total);
    })?;
    let seconds = start.elapsed().as_secs_f64();
    let roles = sessions.role_models();
    let mut linear = Vec::with_capacity(k);
    let mut log_linear = Vec::with_capacity(k);
    for ((aggregation, lambda, p), joint) in jobs.into_iter().zip(outs) {
        let row = SweepRow {
            lambda,
            report: report(models, roles.clone(), p, joint, seconds)?,
        };
        match aggregation {
            Aggregation::Linear => linear.push(row),
            Aggregation::LogLinear => log_linear.push(row),
        }
    }
    Ok(vec![
        (Aggregation::Linear, linear),
        (Aggregation::LogLinear, log_linear),
    ])
}
