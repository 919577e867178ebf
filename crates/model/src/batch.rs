//! The typed input of one forward pass: packed tokens of several sequences, each with its own
//! position, the block tables that map positions to KV slots, and the rows whose logits are wanted.
//!
//! Sequence `s` owns packed rows `seq_starts[s]..seq_starts[s+1]`. Its new tokens have consecutive
//! positions `p0..p0+n`; keys and values of positions `0..p0` must already be in the cache (written
//! by earlier passes, or shared from another sequence with the same prefix), and those of the new
//! tokens are written in this pass. Position `p` of sequence `s` lives in slot
//! `block_tables[s][p / block_size] · block_size + p % block_size`.

use crate::error::{ModelError, Result};

/// One forward pass over a packed batch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ForwardBatch {
    /// Packed token ids, `N` of them.
    pub tokens: Vec<u32>,
    /// Position of each packed token within its sequence.
    pub positions: Vec<u32>,
    /// Offsets of the sequences in the packed arrays (`S + 1` entries, starting at 0, ending at `N`).
    pub seq_starts: Vec<usize>,
    /// Tokens per KV block.
    pub block_size: usize,
    /// Per sequence, the KV blocks covering its positions in order.
    pub block_tables: Vec<Vec<u32>>,
    /// Packed rows whose logits are returned, in this order.
    pub logits_rows: Vec<usize>,
}

/// A validated batch: where each new token's keys and values go, and each sequence's new-token
/// count and context length (`p0 + len`).
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// Slot of every packed row.
    pub slot_mapping: Vec<u32>,
    /// New tokens per sequence.
    pub lens: Vec<usize>,
    /// Context length per sequence after this pass.
    pub ctx: Vec<usize>,
}

/// Everything the burn-op forward pass derives from a validated batch: slot of every new token, the
/// padded query layout, the gather indices of every sequence's context and the attention bias.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// KV slot of each packed token.
    pub slot_mapping: Vec<u32>,
    /// Sequences `S`.
    pub num_seqs: usize,
    /// Padded query length `Tq = max_s n_s`.
    pub tq: usize,
    /// Padded context length `Tk = max_s ctx_s`.
    pub tk: usize,
    /// For each padded query row `s·Tq + i`, its packed row (`None`: the packed layout is already
    /// `[S, Tq]`, no padding).
    pub pad: Option<Vec<i64>>,
    /// For each packed row, its padded row (`None` when `pad` is `None`).
    pub unpad: Option<Vec<i64>>,
    /// For each padded context row `s·Tk + j`, the slot of position `j` of sequence `s` (slot of
    /// position 0 for padding rows, which the bias masks).
    pub kv_gather: Vec<i64>,
    /// Additive attention bias `[S, Tq·rep, Tk]` (0 or −∞), rows in `(query, group member)` order.
    pub bias: Vec<f32>,
}

impl ForwardBatch {
    /// Number of sequences.
    pub fn num_seqs(&self) -> usize {
        self.seq_starts.len().saturating_sub(1)
    }

    /// Slot of position `p` of sequence `s` (checked by [`Self::layout`]).
    pub(crate) fn slot_of(&self, s: usize, p: usize) -> usize {
        self.block_tables[s][p / self.block_size] as usize * self.block_size + p % self.block_size
    }

    /// Validates the batch against the model and cache sizes: every check of the pass, before
    /// anything is written.
    pub(crate) fn layout(
        &self,
        vocab: usize,
        max_position: usize,
        num_slots: usize,
    ) -> Result<Layout> {
        let bad = |field: &'static str, problem: String| Err(ModelError::Batch { field, problem });
        let n = self.tokens.len();
        if n == 0 {
            return bad("tokens", "no tokens".into());
        }
        if self.positions.len() != n {
            return bad(
                "positions",
                format!("{} positions for {n} tokens", self.positions.len()),
            );
        }
        if self.seq_starts.len() < 2
            || self.seq_starts[0] != 0
            || self.seq_starts[self.seq_starts.len() - 1] != n
        {
            return bad(
                "seq_starts",
                "must start at 0 and end at the number of tokens".into(),
            );
        }
        if self.seq_starts.windows(2).any(|w| w[1] <= w[0]) {
            return bad(
                "seq_starts",
                "every sequence needs at least one token (must increase)".into(),
            );
        }
        let s_count = self.num_seqs();
        if self.block_tables.len() != s_count {
            return bad(
                "block_tables",
                format!(
                    "{} block tables for {s_count} sequences",
                    self.block_tables.len()
                ),
            );
        }
        if self.block_size == 0 {
            return bad("block_size", "must be > 0".into());
        }
        if let Some(&t) = self.tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(ModelError::UnknownToken { id: t, vocab });
        }
        if let Some(&r) = self.logits_rows.iter().find(|&&r| r >= n) {
            return bad(
                "logits_rows",
                format!("row {r} out of range (batch has {n} tokens)"),
            );
        }
        let bs = self.block_size;
        let slot = |s: usize, p: usize| -> Result<u32> {
            let table = &self.block_tables[s];
            let Some(&block) = table.get(p / bs) else {
                return Err(ModelError::Batch {
                    field: "block_tables",
                    problem: format!(
                        "sequence {s}: position {p} is beyond its {} blocks",
                        table.len()
                    ),
                });
            };
            let slot = block as usize * bs + p % bs;
            if slot >= num_slots {
                return Err(ModelError::Batch {
                    field: "block_tables",
                    problem: format!("sequence {s}: slot {slot} >= cache size {num_slots}"),
                });
            }
            Ok(slot as u32)
        };
        let mut slot_mapping = Vec::with_capacity(n);
        let mut lens = Vec::with_capacity(s_count);
        let mut ctx = Vec::with_capacity(s_count);
        for s in 0..s_count {
            let (a, b) = (self.seq_starts[s], self.seq_starts[s + 1]);
            let p0 = self.positions[a] as usize;
            for (k, row) in (a..b).enumerate() {
                let p = self.positions[row] as usize;
                if p != p0 + k {
                    return bad(
                        "positions",
                        format!(
                            "sequence {s}: positions must be consecutive (row {row} has {p}, expected {})",
                            p0 + k
                        ),
                    );
                }
                if p >= max_position {
                    return Err(ModelError::PromptTooLong {
                        len: p + 1,
                        extra: 0,
                        max: max_position,
                    });
                }
                slot_mapping.push(slot(s, p)?);
            }
            lens.push(b - a);
            ctx.push(p0 + (b - a));
        }
        let mut seen = vec![false; num_slots];
        for &sl in &slot_mapping {
            if std::mem::replace(&mut seen[sl as usize], true) {
                return bad(
                    "block_tables",
                    format!("slot {sl} is written twice in one pass"),
                );
            }
        }
        Ok(Layout {
            slot_mapping,
            lens,
            ctx,
        })
    }

    /// Validates the batch ([`Self::layout`]) and derives the [`Plan`] of the burn-op forward pass.
    pub(crate) fn plan(
        &self,
        vocab: usize,
        max_position: usize,
        num_slots: usize,
        rep: usize,
    ) -> Result<Plan> {
        let Layout {
            slot_mapping,
            lens,
            ctx,
        } = self.layout(vocab, max_position, num_slots)?;
        let (n, s_count) = (self.tokens.len(), self.num_seqs());
        let tq = *lens.iter().max().unwrap_or(&1);
        let tk = *ctx.iter().max().unwrap_or(&1);
        let uniform = lens.iter().all(|&l| l == tq);
        let (pad, unpad) = if uniform {
            (None, None)
        } else {
            let mut pad = vec![0i64; s_count * tq];
            let mut unpad = vec![0i64; n];
            for s in 0..s_count {
                for i in 0..lens[s] {
                    let row = self.seq_starts[s] + i;
                    pad[s * tq + i] = row as i64;
                    unpad[row] = (s * tq + i) as i64;
                }
                // Padding rows repeat the sequence's first row; their outputs are dropped.
                for i in lens[s]..tq {
                    pad[s * tq + i] = self.seq_starts[s] as i64;
                }
            }
            (Some(pad), Some(unpad))
        };
        let mut kv_gather = Vec::with_capacity(s_count * tk);
        for (s, &len) in ctx.iter().enumerate() {
            let first = self.slot_of(s, 0) as i64;
            for j in 0..tk {
                kv_gather.push(if j < len {
                    self.slot_of(s, j) as i64
                } else {
                    first
                });
            }
        }
        let mut bias = vec![f32::NEG_INFINITY; s_count * tq * rep * tk];
        for s in 0..s_count {
            let p0 = ctx[s] - lens[s];
            for i in 0..tq {
                // A padding row sees position 0 only (any finite row will do; it is dropped).
                let visible = if i < lens[s] { p0 + i + 1 } else { 1 };
                for g in 0..rep {
                    let row = ((s * tq + i) * rep + g) * tk;
                    bias[row..row + visible].iter_mut().for_each(|b| *b = 0.0);
                }
            }
        }
        Ok(Plan {
            slot_mapping,
            num_seqs: s_count,
            tq,
            tk,
            pad,
            unpad,
            kv_gather,
            bias,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_seqs() -> ForwardBatch {
        // seq 0: decode one token at position 3; seq 1: prefill 2 tokens at positions 0, 1.
        ForwardBatch {
            tokens: vec![5, 6, 7],
            positions: vec![3, 0, 1],
            seq_starts: vec![0, 1, 3],
            block_size: 2,
            block_tables: vec![vec![4, 1], vec![2]],
            logits_rows: vec![0, 2],
        }
    }

    #[test]
    fn plan_maps_slots_and_masks() {
        let p = two_seqs().plan(10, 100, 16, 1).unwrap();
        // seq 0 position 3 -> block 1 (table[1] = 1) -> slot 1*2+1 = 3; seq 1 -> slots 4, 5.
        assert_eq!(p.slot_mapping, vec![3, 4, 5]);
        assert_eq!((p.tq, p.tk), (2, 4));
        assert_eq!(p.pad, Some(vec![0, 0, 1, 2]));
        assert_eq!(p.unpad, Some(vec![0, 2, 3]));
        // seq 0 context: positions 0..4 -> slots 8, 9, 2, 3; seq 1: 4, 5, then padding (slot 4).
        assert_eq!(p.kv_gather, vec![8, 9, 2, 3, 4, 5, 4, 4]);
        let inf = f32::NEG_INFINITY;
        assert_eq!(&p.bias[0..4], &[0.0, 0.0, 0.0, 0.0]);
        assert_eq!(&p.bias[4..8], &[0.0, inf, inf, inf]); // padding row
        assert_eq!(&p.bias[8..12], &[0.0, inf, inf, inf]);
        assert_eq!(&p.bias[12..16], &[0.0, 0.0, inf, inf]);
    }

    #[test]
    fn invalid_batches_are_errors() {
        let mut b = two_seqs();
        b.positions[2] = 5;
        assert!(matches!(
            b.plan(10, 100, 16, 1),
            Err(ModelError::Batch { .. })
        ));
        let mut b = two_seqs();
        b.tokens[0] = 10;
        assert!(matches!(
            b.plan(10, 100, 16, 1),
            Err(ModelError::UnknownToken { id: 10, .. })
        ));
        let mut b = two_seqs();
        b.block_tables[1] = vec![9];
        assert!(matches!(
            b.plan(10, 100, 16, 1),
            Err(ModelError::Batch { .. })
        ));
        let mut b = two_seqs();
        b.block_tables[1] = vec![1];
        assert!(
            b.plan(10, 100, 16, 1)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        let b = two_seqs();
        assert!(matches!(
            b.plan(10, 3, 16, 1),
            Err(ModelError::PromptTooLong { .. })
        ));
        let mut b = two_seqs();
        b.logits_rows = vec![3];
        assert!(b.plan(10, 100, 16, 1).is_err());
        assert!(ForwardBatch::default().plan(10, 100, 16, 1).is_err());
    }
}
