//! The request-level model interface: what an auction asks of the LLM behind a role.
//!
//! A [`LanguageModel`] owns its tokenizer and chat template and opens [`ModelSession`]s; a session
//! runs the three kinds of request the auctions need:
//!
//! * **generate**: `n` samples of prompts, each with its own seed, temperature, top-p, token limit and
//!   stop ids; per token its id, its log-probability under the raw model and under the proposal
//!   actually sampled from (when the backend can report them);
//! * **score**: teacher-forced per-token log-probabilities of continuations after prompts, many at
//!   once;
//! * **next-token distributions** of several contexts for one joint step (the token auction), and
//!   joint decodings built on them.
//!
//! One auction opens one session per distinct model and runs all its requests through it, so that a
//! local model keeps one engine (and one prefix cache) for the whole auction, exactly as before this
//! interface existed. Implementations: [`local::EngineModel`] (the continuous-batching engine over
//! burn), [`local::NaiveModel`] (one request at a time, the benchmark's baseline) and
//! [`crate::remote::RemoteModel`] (an OpenAI-compatible server: vLLM or llama.cpp's llama-server).
//!
//! One MOSAIC auction over a local model (the tiny random model of the model crate's `testing`
//! feature; the CLI's default is SmolLM2-135M-Instruct):
//!
//! ```
//! use llm_auction_engine::engine::EngineConfig;
//! use llm_auction_engine::lm::local::EngineModel;
//! use llm_auction_engine::mosaic::{Advertiser, MosaicConfig, MosaicModels, run_mosaic};
//! use llm_auction_model::config::LlamaConfig;
//! use llm_auction_model::model::Model;
//! use llm_auction_model::testing::{random_weights, tiny_config, write_gguf};
//! use llm_auction_model::CpuBackend;
//! use std::sync::Arc;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("tiny.gguf");
//! let cfg = LlamaConfig { max_position: 512, ..tiny_config() };
//! write_gguf(&path, &cfg, &random_weights(&cfg, 3, false));
//! let model = Model::<CpuBackend>::load(&path, &Default::default(), &mut |_, _, _| {}).unwrap();
//! let lm = EngineModel::new("tiny", Arc::new(model), EngineConfig::default());
//! let ads = [Advertiser { name: "Acme".into(), description: "anvils".into() }];
//! let cfg = MosaicConfig { m: 3, max_new_tokens: 4, ..MosaicConfig::default() };
//! let report = run_mosaic(&MosaicModels::single(&lm, 1), "Which anvil?", &ads, &cfg, &mut |_, _, _| {})
//!     .unwrap();
//! assert_eq!(report.candidates.len(), 3);
//! assert!((report.allocation.iter().sum::<f64>() - 1.0).abs() < 1e-12);
//! assert_eq!(report.reply, report.candidates[report.winner].text);
//! ```

pub mod joint;
pub mod local;
pub mod served;

use crate::engine::StepStats;
use crate::error::{EngineError, Result};
use crate::request::{GenerateRequest, JointOutput, JointSpec, ScoreRequest, Scored};
use crate::served::Ticket;
use llm_auction_model::generation::FinishReason;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Progress of a session call: called with each step's (or request's) statistics; `sampled` counts
/// tokens generated or decided, `finished` finished requests.
pub type OnStep<'a> = &'a mut dyn FnMut(&StepStats);

/// What a model behind a role is, as the report records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelInfo {
    /// The entry's name in the models file (`"default"` for the default local model).
    pub name: String,
    /// `"local"`, `"vllm"` or `"llama-server"`.
    pub kind: String,
    /// Where it lives: a file or folder for local models, the base URLs for remote ones.
    pub location: String,
    /// Vocabulary size (rows of the next-token distributions).
    pub vocab_size: usize,
    /// Longest sequence (prompt plus generated or scored tokens).
    pub context_length: usize,
    /// Tokens that end a generation.
    pub eos_ids: Vec<u32>,
    /// Whether generations report the raw model's per-token log-probabilities.
    pub raw_logprobs: bool,
    /// Whether generations report the per-token log-probabilities of the proposal actually sampled
    /// from (temperature and top-p applied), which `--importance proposal` needs.
    pub proposal_logprobs: bool,
}

/// One sampled continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The tokens (a final stop token included).
    pub tokens: Vec<u32>,
    /// Their log-probabilities under the raw model, when the backend reports them.
    pub logprobs_raw: Option<Vec<f64>>,
    /// Their log-probabilities under the proposal sampled from, when the backend reports them.
    pub logprobs_proposal: Option<Vec<f64>>,
    /// Why it ended.
    pub finish: FinishReason,
}

/// Counters of a session (forward passes and tokens for local models; requests and tokens sent or
/// received for remote ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct SessionCounters {
    /// Forward passes (local) or HTTP requests (remote).
    pub passes: u64,
    /// Tokens computed (local) or tokens in requests and responses (remote).
    pub tokens: u64,
    /// Preemptions (local engine).
    pub preemptions: u64,
    /// KV blocks reused from the prefix cache (local engine).
    pub cache_hit_blocks: u64,
}

impl std::ops::AddAssign for SessionCounters {
    fn add_assign(&mut self, o: Self) {
        self.passes += o.passes;
        self.tokens += o.tokens;
        self.preemptions += o.preemptions;
        self.cache_hit_blocks += o.cache_hit_blocks;
    }
}

/// An LLM behind a role: its tokenizer, its chat template, and sessions that run requests.
pub trait LanguageModel: Send + Sync {
    /// What it is.
    fn info(&self) -> &ModelInfo;

    /// `[system, user]` rendered with the model's chat template and the generation prompt.
    ///
    /// # Errors
    /// Template or server errors.
    fn chat_turn(&self, system: &str, user: &str) -> Result<String>;

    /// Token ids of `text` (no special tokens added; special-token text is recognised).
    ///
    /// # Errors
    /// Tokenizer or server errors.
    fn encode(&self, text: &str) -> Result<Vec<u32>>;

    /// Token ids of user-supplied `text` as plain text: the text of a special token inside it
    /// becomes ordinary tokens, never the control token.
    ///
    /// # Errors
    /// Tokenizer or server errors; a server that cannot encode such text plainly refuses it.
    fn encode_plain(&self, text: &str) -> Result<Vec<u32>>;

    /// The prompt of one chat turn as token ids: the template's markup encoded with its control
    /// tokens, `system` and `user` (user-supplied: queries, advertiser names and descriptions) as
    /// plain text, so a query cannot forge a turn of the template.
    ///
    /// # Errors
    /// As [`LanguageModel::chat_turn`] and the encoders.
    fn chat_turn_ids(&self, system: &str, user: &str) -> Result<Vec<u32>> {
        use llm_auction_model::chat::{SYSTEM_MARK, USER_MARK, encode_turn};
        let rendered = self.chat_turn(SYSTEM_MARK, USER_MARK)?;
        encode_turn(
            &rendered,
            system,
            user,
            |t| self.encode(t),
            |t| self.encode_plain(t),
        )
    }

    /// Text of `ids`.
    ///
    /// # Errors
    /// Tokenizer or server errors (an unknown id).
    fn decode(&self, ids: &[u32]) -> Result<String>;

    /// Opens a session: the unit that shares work (one engine and prefix cache for a local model).
    ///
    /// # Errors
    /// If the session's resources cannot be allocated.
    fn session(&self) -> Result<Box<dyn ModelSession + '_>>;

    /// Opens a session for work under `ticket` (an auction's cancellation and deadline). Models
    /// that can stop work in flight honour it; by default this is [`LanguageModel::session`].
    ///
    /// # Errors
    /// As [`LanguageModel::session`].
    fn session_for(&self, ticket: &Ticket) -> Result<Box<dyn ModelSession + '_>> {
        let _ = ticket;
        self.session()
    }

    /// A fingerprint of the tokenizer (see [`vocab_fingerprint`]); two models can take part in one
    /// token auction only if their fingerprints are equal.
    ///
    /// # Errors
    /// Tokenizer or server errors.
    fn vocab_fingerprint(&self) -> Result<String> {
        vocab_fingerprint(self.info().vocab_size, &self.encode(VOCAB_PROBE)?)
    }
}

/// Runs requests on one model.
pub trait ModelSession {
    /// Samples every request's continuation; the outputs are in request order.
    ///
    /// # Errors
    /// Invalid requests, model or server errors.
    fn generate(&mut self, reqs: Vec<GenerateRequest>, on_step: OnStep<'_>) -> Result<Vec<Sample>>;

    /// As [`ModelSession::generate`], calling `on_sample(index, sample)` as each request finishes
    /// (by default, in request order once all are done).
    ///
    /// # Errors
    /// As [`ModelSession::generate`].
    fn generate_each(
        &mut self,
        reqs: Vec<GenerateRequest>,
        on_step: OnStep<'_>,
        on_sample: &mut dyn FnMut(usize, &Sample),
    ) -> Result<Vec<Sample>> {
        let out = self.generate(reqs, on_step)?;
        for (i, s) in out.iter().enumerate() {
            on_sample(i, s);
        }
        Ok(out)
    }

    /// Teacher-forced log-probabilities of every request's continuation, in request order.
    ///
    /// # Errors
    /// Invalid requests, model or server errors.
    fn score(&mut self, reqs: Vec<ScoreRequest>, on_step: OnStep<'_>) -> Result<Vec<Scored>>;

    /// Generates as [`ModelSession::generate_each`] and scores, in this session, the requests
    /// `follow(index, sample)` makes for each sample; returns the samples and each one's scorings
    /// in the order `follow` gave them. A backend that can keeps its batch full by starting a
    /// sample's scorings as soon as it finishes, while the others still decode (the engine does);
    /// by default they run in one batch after the generation.
    ///
    /// # Errors
    /// As [`ModelSession::generate`] and [`ModelSession::score`].
    fn generate_then_score(
        &mut self,
        reqs: Vec<GenerateRequest>,
        on_step: OnStep<'_>,
        on_sample: &mut dyn FnMut(usize, &Sample),
        follow: &mut dyn FnMut(usize, &Sample) -> Vec<ScoreRequest>,
    ) -> Result<(Vec<Sample>, Vec<Vec<Scored>>)> {
        let samples = self.generate_each(reqs, on_step, on_sample)?;
        let specs: Vec<Vec<ScoreRequest>> = samples
            .iter()
            .enumerate()
            .map(|(i, s)| follow(i, s))
            .collect();
        let counts: Vec<usize> = specs.iter().map(Vec::len).collect();
        let mut scored = self
            .score(specs.into_iter().flatten().collect(), on_step)?
            .into_iter();
        let per_sample = counts
            .iter()
            .map(|&n| scored.by_ref().take(n).collect())
            .collect();
        Ok((samples, per_sample))
    }

    /// The full next-token log-probability row (`vocab_size` values, temperature 1) after each
    /// context.
    ///
    /// # Errors
    /// Invalid contexts, model or server errors; a backend that cannot give full rows says so.
    fn next_token_logprobs(&mut self, contexts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>>;

    /// Runs joint decodings (each: several members stepping with one decided token) to the end. The
    /// default steps them together through [`ModelSession::next_token_logprobs`].
    ///
    /// # Errors
    /// As [`ModelSession::next_token_logprobs`], and the deciders' errors.
    fn joint(&mut self, specs: Vec<JointSpec>, on_step: OnStep<'_>) -> Result<Vec<JointOutput>> {
        let (members, joints) = joint::plan(specs, &|_| 0);
        let mut rows = |_: usize, ctx: &[Vec<u32>]| self.next_token_logprobs(ctx);
        joint::decode(1, &mut rows, &members, joints, on_step)
    }

    /// What the session has done so far.
    fn counters(&self) -> SessionCounters;
}

/// The text whose token ids (with the vocabulary size) make a tokenizer's fingerprint: words,
/// numbers, punctuation, code, whitespace runs and several scripts, so that two different
/// vocabularies or merge lists almost surely split it differently.
pub const VOCAB_PROBE: &str = "The quick brown fox jumps over the lazy dog; 0123456789, 3.14159 and \
     1,000,000. Ünïcödé: naïve café, 東京, Москва, 🍪! fn main() { println!(\"hi\"); }\n\t  x**2 + \
     y_1 >= 42 -- <html> @user #tag $5 100% ~/.cache";

/// `sha256(vocab_size, ids of VOCAB_PROBE)` in hex: equal for equal tokenizers, and computable on
/// every backend (local tokenizers and both servers' `/tokenize`).
///
/// # Errors
/// Never for now; kept fallible so that implementations may fail.
pub fn vocab_fingerprint(vocab_size: usize, probe_ids: &[u32]) -> Result<String> {
    let mut h = Sha256::new();
    h.update((vocab_size as u64).to_le_bytes());
    for id in probe_ids {
        h.update(id.to_le_bytes());
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The text of a reply: `tokens` without `model`'s end-of-sequence tokens, decoded by `model`.
///
/// # Errors
/// As [`LanguageModel::decode`].
pub fn reply_text(model: &dyn LanguageModel, tokens: &[u32]) -> Result<String> {
    let eos = &model.info().eos_ids;
    let visible: Vec<u32> = tokens
        .iter()
        .copied()
        .filter(|t| !eos.contains(t))
        .collect();
    model.decode(&visible)
}

/// Checks that a backend's answer has one entry per request.
///
/// # Errors
/// [`EngineError::Backend`] naming the model and what was short.
pub fn expect_len<T>(model: &ModelInfo, what: &str, got: Vec<T>, want: usize) -> Result<Vec<T>> {
    if got.len() == want {
        Ok(got)
    } else {
        Err(EngineError::Backend {
            model: model.name.clone(),
            message: format!("{what}: {want} results expected, got {}", got.len()),
        })
    }
}
