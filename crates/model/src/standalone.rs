//! Standalone teacher-forced scoring and sampling on a [`Llama`], one request at a time, without
//! the engine: the path of the CLI's `score` and `generate`, of the engine's one-request baseline
//! (`NaiveModel`) and the reference the engine's batched results are tested against. There is no
//! scheduling here (batching requests together is the engine's job): each request gets a fresh KV
//! cache sized to it, its prompt is prefilled in chunks of at most `token_budget` tokens, and it
//! then decodes one token per forward pass. Sampling runs on the host with a seeded ChaCha8 stream
//! per request.

use crate::backend::ModelBackend;
use crate::batch::ForwardBatch;
use crate::error::{ModelError, Result};
use crate::generation::{FinishReason, GenerateRequest, Generation, ScoreRequest, Scored};
use crate::llama::Llama;
use crate::logits::{gather_logprobs, logits_to_host, top_logprobs};
use crate::sampling::sample;
use burn::tensor::{Int, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Limits of one forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandaloneConfig {
    /// Most prompt tokens prefilled in one forward pass.
    pub token_budget: usize,
    /// Tokens per KV block.
    pub block_size: usize,
}

impl Default for StandaloneConfig {
    fn default() -> Self {
        Self {
            token_budget: 512,
            block_size: 16,
        }
    }
}

/// The one sequence being run: its tokens so far (its KV blocks are `0..`, contiguous) and how
/// far it is computed.
struct Seq {
    tokens: Vec<u32>,
    computed: usize,
}

impl Seq {
    fn new(tokens: Vec<u32>) -> Self {
        Self {
            tokens,
            computed: 0,
        }
    }

    fn pending(&self) -> bool {
        self.computed < self.tokens.len()
    }

    /// The next chunk of at most `budget` uncomputed tokens as a batch; `want(pos)` says whether
    /// the logits of position `pos` are needed. Returns the batch and the position of each logits
    /// row.
    fn next_chunk(
        &mut self,
        budget: usize,
        block_size: usize,
        want: &dyn Fn(usize) -> bool,
    ) -> (ForwardBatch, Vec<usize>) {
        let end = self.tokens.len().min(self.computed + budget);
        let mut b = ForwardBatch {
            block_size,
            seq_starts: vec![0],
            ..Default::default()
        };
        let mut rows = Vec::new();
        for p in self.computed..end {
            if want(p) {
                rows.push(p);
                b.logits_rows.push(b.tokens.len());
            }
            b.tokens.push(self.tokens[p]);
            b.positions.push(p as u32);
        }
        b.block_tables
            .push((0..end.div_ceil(block_size) as u32).collect());
        b.seq_starts.push(b.tokens.len());
        self.computed = end;
        (b, rows)
    }
}

fn check_request<B: ModelBackend>(model: &Llama<B>, prompt: &[u32], extra: usize) -> Result<()> {
    let cfg = model.config();
    if prompt.is_empty() {
        return Err(ModelError::param(
            "prompt",
            "must contain at least one token",
        ));
    }
    if let Some(&t) = prompt.iter().find(|&&t| t as usize >= cfg.vocab_size) {
        return Err(ModelError::UnknownToken {
            id: t,
            vocab: cfg.vocab_size,
        });
    }
    if prompt.len() + extra > cfg.max_position {
        return Err(ModelError::PromptTooLong {
            len: prompt.len(),
            extra,
            max: cfg.max_position,
        });
    }
    Ok(())
}

/// A KV cache for one sequence of `len` tokens (whole blocks, at least one).
fn cache_for<B: ModelBackend>(
    model: &Llama<B>,
    len: usize,
    block_size: usize,
) -> Result<crate::kv::KvCache<B>> {
    model.new_cache((len.div_ceil(block_size) * block_size).max(block_size))
}

/// Teacher-forced log-probabilities of each request's continuation, one request at a time (every
/// request is checked before any runs).
///
/// # Errors
/// [`ModelError::Parameter`] for an empty prompt, [`ModelError::UnknownToken`],
/// [`ModelError::PromptTooLong`], or forward errors.
pub fn score<B: ModelBackend>(
    model: &Llama<B>,
    reqs: &[ScoreRequest],
    cfg: &StandaloneConfig,
) -> Result<Vec<Scored>> {
    for r in reqs {
        check_score_request(model, r)?;
    }
    reqs.iter()
        .map(|r| score_one(model, r, 0, cfg).map(|(s, _)| s))
        .collect()
}

/// As [`score`] for one request, and also the `top_k` most likely next tokens after the prompt
/// with their log-probabilities, most likely first (all of them when `top_k` is the vocabulary
/// size; none when it is 0). The continuation may be empty.
///
/// # Errors
/// As [`score`].
pub fn score_with_top<B: ModelBackend>(
    model: &Llama<B>,
    req: &ScoreRequest,
    top_k: usize,
    cfg: &StandaloneConfig,
) -> Result<(Scored, Vec<(u32, f32)>)> {
    check_score_request(model, req)?;
    score_one(model, req, top_k, cfg)
}

fn check_score_request<B: ModelBackend>(model: &Llama<B>, r: &ScoreRequest) -> Result<()> {
    check_request(model, &r.prompt, r.continuation.len())?;
    // The continuation's ids are checked too; an empty one is allowed.
    check_request(model, &r.continuation, 0).or_else(|e| match e {
        ModelError::Parameter { .. } => Ok(()),
        e => Err(e),
    })
}

fn score_one<B: ModelBackend>(
    model: &Llama<B>,
    r: &ScoreRequest,
    top_k: usize,
    cfg: &StandaloneConfig,
) -> Result<(Scored, Vec<(u32, f32)>)> {
    let (plen, len) = (r.prompt.len(), r.prompt.len() + r.continuation.len());
    let mut seq = Seq::new([r.prompt.clone(), r.continuation.clone()].concat());
    let mut cache = cache_for(model, len, cfg.block_size)?;
    let mut token_logprobs = vec![0.0; r.continuation.len()];
    let mut top = vec![];
    // Position p predicts token p + 1: the continuation's tokens, and the first one after the
    // prompt for the top-k.
    let predicts_continuation = |p: usize| p + 1 >= plen && p + 1 < len;
    let want = |p: usize| predicts_continuation(p) || (top_k > 0 && p + 1 == plen);
    while seq.pending() {
        let (batch, rows) = seq.next_chunk(cfg.token_budget, cfg.block_size, &want);
        let logits = model.forward(&batch, &mut cache)?;
        if top_k > 0
            && let Some(k) = rows.iter().position(|&p| p + 1 == plen)
        {
            let idx = TensorData::new(vec![k as i64], [1]);
            let row = logits
                .clone()
                .select(0, Tensor::<B, 1, Int>::from_data(idx, model.device()));
            top = top_logprobs(&logits_to_host(row)?, top_k);
        }
        // Rows predicting a continuation token: gather their log-probabilities on the device.
        let targets: Vec<u32> = rows
            .iter()
            .map(|&p| seq.tokens.get(p + 1).copied().unwrap_or(0))
            .collect();
        let lp = gather_logprobs(logits, &targets)?;
        if let Some(&value) = lp.iter().find(|x| !x.is_finite()) {
            return Err(ModelError::NonFinite {
                what: "log-probability",
                value,
            });
        }
        for (&p, &x) in rows.iter().zip(&lp) {
            if predicts_continuation(p) {
                token_logprobs[p + 1 - plen] = x;
            }
        }
    }
    let total_logprob = token_logprobs.iter().map(|&x| x as f64).sum();
    Ok((
        Scored {
            token_logprobs,
            total_logprob,
        },
        top,
    ))
}

/// Samples each request's continuation, one request at a time (every request is checked before
/// any runs). `on_token` is called after every decoding step with the number of tokens generated
/// so far (for progress bars).
///
/// # Errors
/// As [`score`], and [`ModelError::Parameter`] for invalid sampling parameters.
pub fn generate<B: ModelBackend>(
    model: &Llama<B>,
    reqs: &[GenerateRequest],
    cfg: &StandaloneConfig,
    on_token: &mut dyn FnMut(usize),
) -> Result<Vec<Generation>> {
    for r in reqs {
        r.params.validate()?;
        check_request(model, &r.prompt, r.max_new_tokens)?;
    }
    let mut produced = 0usize;
    reqs.iter()
        .map(|r| generate_one(model, r, cfg, &mut produced, on_token))
        .collect()
}

fn generate_one<B: ModelBackend>(
    model: &Llama<B>,
    r: &GenerateRequest,
    cfg: &StandaloneConfig,
    produced: &mut usize,
    on_token: &mut dyn FnMut(usize),
) -> Result<Generation> {
    let vocab = model.config().vocab_size;
    let mut seq = Seq::new(r.prompt.clone());
    let mut cache = cache_for(
        model,
        r.prompt.len().saturating_add(r.max_new_tokens),
        cfg.block_size,
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(r.seed);
    let mut g = Generation {
        tokens: vec![],
        logprobs_raw: vec![],
        logprobs_proposal: vec![],
        finish: FinishReason::Length,
    };
    let mut done = r.max_new_tokens == 0;
    while !done {
        // The logits of the last token, once the prompt is fully computed.
        let last = seq.tokens.len() - 1;
        let (batch, rows) = seq.next_chunk(cfg.token_budget, cfg.block_size, &|p| p == last);
        let logits = logits_to_host(model.forward(&batch, &mut cache)?)?;
        for k in 0..rows.len() {
            let pick = sample(&logits[k * vocab..(k + 1) * vocab], &r.params, &mut rng)?;
            g.tokens.push(pick.token);
            g.logprobs_raw.push(pick.logprob_raw);
            g.logprobs_proposal.push(pick.logprob_proposal);
            if r.stop.contains(&pick.token) {
                g.finish = FinishReason::Stop;
                done = true;
            } else if g.tokens.len() >= r.max_new_tokens {
                done = true;
            } else {
                seq.tokens.push(pick.token);
            }
            *produced += 1;
        }
        on_token(*produced);
    }
    Ok(g)
}
