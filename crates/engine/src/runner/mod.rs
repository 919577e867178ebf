//! The boundary between the engine (bookkeeping) and a model (tensors): one typed forward pass over
//! a packed [`ForwardBatch`], returning, per requested row, either the full next-token logits (for
//! sampling and joint decisions) or just the log-probability of a given target token (for scoring,
//! computed where the logits live so that they never cross to the host).

mod burn;
mod mock;

pub use self::burn::BurnRunner;
pub use mock::MockRunner;

use crate::error::Result;
use llm_auction_model::batch::ForwardBatch;

/// What a runner's model looks like from the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunnerSpec {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Longest supported sequence.
    pub max_position: usize,
}

/// The result for one requested row.
#[derive(Debug, Clone, PartialEq)]
pub enum RowOutput {
    /// The full logits row (`vocab_size` values).
    Logits(Vec<f32>),
    /// `log_softmax(logits)[target]`.
    Logprob(f32),
}

/// Runs forward passes for the engine.
pub trait ModelRunner {
    /// The model's sizes.
    fn spec(&self) -> RunnerSpec;

    /// Allocates KV storage for `num_slots` slots (`num_blocks · block_size`); called once by the
    /// engine before any forward pass.
    ///
    /// # Errors
    /// If the storage cannot be allocated.
    fn init_cache(&mut self, num_slots: usize) -> Result<()>;

    /// One forward pass. `targets[k]` is for `batch.logits_rows[k]`: `Some(t)` asks for the
    /// log-probability of token `t`, `None` for the full logits row.
    ///
    /// # Errors
    /// Model errors; an inconsistent batch is an error, never a panic.
    fn forward(&mut self, batch: &ForwardBatch, targets: &[Option<u32>]) -> Result<Vec<RowOutput>>;
}
