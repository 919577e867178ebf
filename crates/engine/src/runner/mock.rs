//! A deterministic model for scheduler tests. Its "KV cache" stores, per slot, the token and
//! position written there; a row's logits are a hash of the tokens its sequence's block table leads
//! to for positions `0..=p`. So any scheduling mistake — a wrong block, a slot overwritten while
//! shared, a prefix reused across different prompts — changes the outputs, and the engine's results
//! must equal those of running each request alone.

use super::{ModelRunner, RowOutput, RunnerSpec};
use crate::error::{EngineError, Result};
use llm_auction_model::batch::ForwardBatch;
use std::hash::{DefaultHasher, Hash, Hasher};

/// The mock model.
#[derive(Debug, Clone)]
pub struct MockRunner {
    vocab: usize,
    max_position: usize,
    /// Per slot: `(position, token)` last written.
    slots: Vec<Option<(u32, u32)>>,
    /// Forward passes run so far.
    pub passes: usize,
    /// Tokens processed so far.
    pub tokens_processed: usize,
}

impl MockRunner {
    /// A mock with `vocab` tokens and context `max_position`.
    pub fn new(vocab: usize, max_position: usize) -> Self {
        Self {
            vocab,
            max_position,
            slots: Vec::new(),
            passes: 0,
            tokens_processed: 0,
        }
    }

    /// The mock's logits after the context `tokens` (any function of the whole context would do).
    pub fn logits_of(vocab: usize, tokens: &[u32]) -> Vec<f32> {
        let mut h = DefaultHasher::new();
        tokens.hash(&mut h);
        let mut state = h.finish();
        (0..vocab)
            .map(|_| {
                // splitmix64
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                ((z >> 40) as f32 / (1u64 << 24) as f32) * 6.0 - 3.0
            })
            .collect()
    }
}

impl ModelRunner for MockRunner {
    fn spec(&self) -> RunnerSpec {
        RunnerSpec {
            vocab_size: self.vocab,
            max_position: self.max_position,
        }
    }

    fn init_cache(&mut self, num_slots: usize) -> Result<()> {
        self.slots = vec![None; num_slots];
        Ok(())
    }

    fn forward(&mut self, batch: &ForwardBatch, targets: &[Option<u32>]) -> Result<Vec<RowOutput>> {
        let bad = |field: &'static str, problem: String| {
            EngineError::Model(llm_auction_model::ModelError::Batch { field, problem })
        };
        if targets.len() != batch.logits_rows.len() {
            return Err(bad("logits_rows", "one target per logits row".into()));
        }
        let bs = batch.block_size;
        let slot = |s: usize, p: usize| -> Result<usize> {
            let b = *batch.block_tables[s].get(p / bs).ok_or_else(|| {
                bad(
                    "block_tables",
                    format!("seq {s} has no block for position {p}"),
                )
            })?;
            Ok(b as usize * bs + p % bs)
        };
        // Write every new token, then read contexts (a pass sees its own writes, like the model).
        let mut row_seq = vec![0usize; batch.tokens.len()];
        for s in 0..batch.seq_starts.len() - 1 {
            let rows = batch.seq_starts[s]..batch.seq_starts[s + 1];
            row_seq[rows.clone()].fill(s);
            for (&p, &t) in batch.positions[rows.clone()]
                .iter()
                .zip(&batch.tokens[rows])
            {
                let sl = slot(s, p as usize)?;
                *self
                    .slots
                    .get_mut(sl)
                    .ok_or_else(|| bad("block_tables", format!("slot {sl} out of range")))? =
                    Some((p, t));
            }
        }
        self.passes += 1;
        self.tokens_processed += batch.tokens.len();
        let mut out = Vec::with_capacity(targets.len());
        for (&row, target) in batch.logits_rows.iter().zip(targets) {
            let s = row_seq[row];
            let p = batch.positions[row] as usize;
            let mut ctx = Vec::with_capacity(p + 1);
            for q in 0..=p {
                match self.slots[slot(s, q)?] {
                    Some((pos, t)) if pos as usize == q => ctx.push(t),
                    other => {
                        return Err(bad(
                            "block_tables",
                            format!("seq {s} position {q}: slot holds {other:?}"),
                        ));
                    }
                }
            }
            let logits = Self::logits_of(self.vocab, &ctx);
            out.push(match target {
                None => RowOutput::Logits(logits),
                Some(t) => {
                    let lse = llm_auction_model::sampling::log_sum_exp(&logits);
                    RowOutput::Logprob((logits[*t as usize] as f64 - lse) as f32)
                }
            });
        }
        Ok(out)
    }
}
