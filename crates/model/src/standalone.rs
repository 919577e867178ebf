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
use crate::generation::{FinishReason, GenerateRequest, Generation};
use crate::llama::Llama;
use crate::logits::{gather_logprobs, logits_to_host, top_logprobs};
use crate::sampling::sample;
use burn::tensor::{Int, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

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

/// Score `continuation` after `prompt` (token ids, tokenized separately and concatenated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoreRequest {
    /// Context tokens (at least one).
    pub prompt: Vec<u32>,
    /// Tokens whose log-probabilities are wanted.
    pub continuation: Vec<u32>,
    /// Also return the `top_k` most likely next tokens after the prompt.
    pub top_k: usize,
}

/// Log-probabilities of a scored continuation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreResult {
    /// `log p(continuation[i] | prompt, continuation[..i])`.
    pub token_logprobs: Vec<f32>,
    /// Their sum, in `f64`.
    pub total_logprob: f64,
    /// The `top_k` most likely tokens after the prompt with their log-probabilities.
    pub top: Vec<(u32, f32)>,
}

/// A sequence being run: its tokens so far, its contiguous KV blocks, and how far it is computed.
struct Seq {
    tokens: Vec<u32>,
    first_block: u32,
    computed: usize,
}

/// Packs the next prefill chunks of `seqs` (up to `budget` tokens) into a batch; `want(s, pos)` says
/// whether the logits of position `pos` of sequence `s` are needed. Returns the batch and, per logits
/// row, `(sequence, position)`.
fn pack(
    seqs: &mut [Seq],
    active: &[usize],
    budget: usize,
    block_size: usize,
    want: &dyn Fn(usize, usize) -> bool,
) -> (ForwardBatch, Vec<(usize, usize)>) {
    let mut b = ForwardBatch {
        block_size,
        seq_starts: vec![0],
        ..Default::default()
    };
    let mut rows = Vec::new();
    let mut left = budget;
    for &s in active {
        let seq = &mut seqs[s];
        let todo = seq.tokens.len() - seq.computed;
        if todo == 0 || left == 0 {
            continue;
        }
        let take = todo.min(left);
        left -= take;
        for p in seq.computed..seq.computed + take {
            if want(s, p) {
                rows.push((s, p));
                b.logits_rows.push(b.tokens.len());
            }
            b.tokens.push(seq.tokens[p]);
            b.positions.push(p as u32);
        }
        let blocks = (seq.computed + take).div_ceil(block_size);
        b.block_tables
            .push((0..blocks as u32).map(|k| seq.first_block + k).collect());
        b.seq_starts.push(b.tokens.len());
        seq.computed += take;
    }
    (b, rows)
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

/// Lays out contiguous blocks for sequences of the given total lengths; returns them and the slots.
fn layout(totals: &[usize], block_size: usize, tokens: Vec<Vec<u32>>) -> (Vec<Seq>, usize) {
    let mut next = 0u32;
    let seqs = totals
        .iter()
        .zip(tokens)
        .map(|(&t, tokens)| {
            let first_block = next;
            next += t.div_ceil(block_size) as u32;
            Seq {
                tokens,
                first_block,
                computed: 0,
            }
        })
        .collect();
    (seqs, next as usize * block_size)
}

/// Teacher-forced log-probabilities of each request's continuation, one request at a time.
///
/// # Errors
/// [`ModelError::Parameter`] for an empty prompt, [`ModelError::UnknownToken`],
/// [`ModelError::PromptTooLong`], or forward errors.
pub fn score<B: ModelBackend>(
    model: &Llama<B>,
    reqs: &[ScoreRequest],
    cfg: &StandaloneConfig,
) -> Result<Vec<ScoreResult>> {
    for r in reqs {
        check_request(model, &r.prompt, r.continuation.len())?;
        check_request(model, &r.continuation, 0).or_else(|e| match e {
            ModelError::Parameter { .. } => Ok(()),
            e => Err(e),
        })?;
    }
    let lens: Vec<usize> = reqs
        .iter()
        .map(|r| r.prompt.len() + r.continuation.len())
        .collect();
    let mut results: Vec<Option<ScoreResult>> = vec![None; reqs.len()];
    for group in (0..reqs.len()).map(|i| [i]) {
        let totals: Vec<usize> = group.iter().map(|&i| lens[i]).collect();
        let tokens = group
            .iter()
            .map(|&i| [reqs[i].prompt.clone(), reqs[i].continuation.clone()].concat())
            .collect();
        let (mut seqs, slots) = layout(&totals, cfg.block_size, tokens);
        let mut cache = model.new_cache(slots.max(cfg.block_size))?;
        let mut lps: Vec<Vec<f32>> = group
            .iter()
            .map(|&i| vec![0.0; reqs[i].continuation.len()])
            .collect();
        let mut tops: Vec<Vec<(u32, f32)>> = vec![vec![]; group.len()];
        let active: Vec<usize> = (0..group.len()).collect();
        let want = |s: usize, p: usize| {
            let r = &reqs[group[s]];
            p + 1 >= r.prompt.len() && p + 1 < r.prompt.len() + r.continuation.len()
                || (r.top_k > 0 && p + 1 == r.prompt.len())
        };
        while seqs.iter().any(|s| s.computed < s.tokens.len()) {
            let (batch, rows) = pack(&mut seqs, &active, cfg.token_budget, cfg.block_size, &want);
            let logits = model.forward(&batch, &mut cache)?;
            // Rows predicting a continuation token: gather their log-probabilities on the device.
            let targets: Vec<u32> = rows
                .iter()
                .map(|&(s, p)| seqs[s].tokens.get(p + 1).copied().unwrap_or(0))
                .collect();
            let needs_top: Vec<usize> = rows
                .iter()
                .enumerate()
                .filter(|&(_, &(s, p))| {
                    reqs[group[s]].top_k > 0 && p + 1 == reqs[group[s]].prompt.len()
                })
                .map(|(k, _)| k)
                .collect();
            if !needs_top.is_empty() {
                let idx: Vec<i64> = needs_top.iter().map(|&k| k as i64).collect();
                let n = idx.len();
                let sel = logits.clone().select(
                    0,
                    Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [n]), model.device()),
                );
                let host = logits_to_host(sel)?;
                let v = model.config().vocab_size;
                for (j, &k) in needs_top.iter().enumerate() {
                    let s = rows[k].0;
                    tops[s] = top_logprobs(&host[j * v..(j + 1) * v], reqs[group[s]].top_k);
                }
            }
            let lp = gather_logprobs(logits, &targets)?;
            if let Some(&value) = lp.iter().find(|x| !x.is_finite()) {
                return Err(ModelError::NonFinite {
                    what: "log-probability",
                    value,
                });
            }
            for (k, &(s, p)) in rows.iter().enumerate() {
                let r = &reqs[group[s]];
                if p + 1 >= r.prompt.len() && p + 1 < r.prompt.len() + r.continuation.len() {
                    lps[s][p + 1 - r.prompt.len()] = lp[k];
                }
            }
        }
        for (s, &i) in group.iter().enumerate() {
            let token_logprobs = std::mem::take(&mut lps[s]);
            let total_logprob = token_logprobs.iter().map(|&x| x as f64).sum();
            results[i] = Some(ScoreResult {
                token_logprobs,
                total_logprob,
                top: std::mem::take(&mut tops[s]),
            });
        }
    }
    Ok(results
        .into_iter()
        .map(|r| {
            r.unwrap_or(ScoreResult {
                token_logprobs: vec![],
                total_logprob: 0.0,
                top: vec![],
            })
        })
        .collect())
}

/// Samples each request's continuation, one request at a time. `on_token` is called after every decoding step
/// with the number of tokens generated so far (for progress bars).
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
    let vocab = model.config().vocab_size;
    let lens: Vec<usize> = reqs
        .iter()
        .map(|r| r.prompt.len().saturating_add(r.max_new_tokens))
        .collect();
    let mut out: Vec<Option<Generation>> = vec![None; reqs.len()];
    let mut produced = 0usize;
    for group in (0..reqs.len()).map(|i| [i]) {
        let totals: Vec<usize> = group.iter().map(|&i| lens[i]).collect();
        let tokens = group.iter().map(|&i| reqs[i].prompt.clone()).collect();
        let (mut seqs, slots) = layout(&totals, cfg.block_size, tokens);
        let mut cache = model.new_cache(slots.max(cfg.block_size))?;
        let mut rngs: Vec<ChaCha8Rng> = group
            .iter()
            .map(|&i| ChaCha8Rng::seed_from_u64(reqs[i].seed))
            .collect();
        let mut gens: Vec<Generation> = group
            .iter()
            .map(|_| Generation {
                tokens: vec![],
                logprobs_raw: vec![],
                logprobs_proposal: vec![],
                finish: FinishReason::Length,
            })
            .collect();
        let mut done: Vec<bool> = group.iter().map(|&i| reqs[i].max_new_tokens == 0).collect();
        loop {
            let active: Vec<usize> = (0..group.len()).filter(|&s| !done[s]).collect();
            if active.is_empty() {
                break;
            }
            // A sequence needs the logits of its last token, once its prompt is fully computed.
            let lens_now: Vec<usize> = seqs.iter().map(|s| s.tokens.len()).collect();
            let want = |s: usize, p: usize| p + 1 == lens_now[s];
            let (batch, rows) = pack(&mut seqs, &active, cfg.token_budget, cfg.block_size, &want);
            let logits = logits_to_host(model.forward(&batch, &mut cache)?)?;
            for (k, &(s, _)) in rows.iter().enumerate() {
                let r = &reqs[group[s]];
                let pick = sample(&logits[k * vocab..(k + 1) * vocab], &r.params, &mut rngs[s])?;
                let g = &mut gens[s];
                g.tokens.push(pick.token);
                g.logprobs_raw.push(pick.logprob_raw);
                g.logprobs_proposal.push(pick.logprob_proposal);
                if r.stop.contains(&pick.token) {
                    g.finish = FinishReason::Stop;
                    done[s] = true;
                } else if g.tokens.len() >= r.max_new_tokens {
                    done[s] = true;
                } else {
                    seqs[s].tokens.push(pick.token);
                }
                produced += 1;
            }
            on_token(produced);
        }
        for (s, &i) in group.iter().enumerate() {
            out[i] = Some(gens[s].clone());
        }
    }
    Ok(out.into_iter().flatten().collect())
}
