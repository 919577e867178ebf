//! What a request to the model asks for and what it gives: a sampled continuation (its tokens with
//! their log-probabilities, and why it ended) or a teacher-forced scoring. The engine schedules
//! these requests; [`crate::standalone`] runs one at a time.

use crate::sampling::SamplingParams;
use serde::Serialize;

/// Sample up to `max_new_tokens` after `prompt`.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// Context tokens (at least one).
    pub prompt: Vec<u32>,
    /// Sampling parameters.
    pub params: SamplingParams,
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// Generation stops after any of these tokens (which is kept in the output).
    pub stop: Vec<u32>,
    /// Seed of this request's random stream (the same seed gives the same tokens whatever the
    /// request is batched with).
    pub seed: u64,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A stop token was produced.
    Stop,
    /// `max_new_tokens` were produced.
    Length,
}

/// A generated continuation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Generation {
    /// The new tokens (a final stop token included).
    pub tokens: Vec<u32>,
    /// `log π(token)` under the raw model for each token.
    pub logprobs_raw: Vec<f64>,
    /// `log q(token)` under the proposal it was sampled from.
    pub logprobs_proposal: Vec<f64>,
    /// Why it ended.
    pub finish: FinishReason,
}

/// Teacher-forced log-probabilities of `continuation` after `prompt` (token ids, tokenized
/// separately and concatenated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoreRequest {
    /// Context tokens (at least one).
    pub prompt: Vec<u32>,
    /// Tokens whose log-probabilities are wanted.
    pub continuation: Vec<u32>,
}

/// Log-probabilities of a scored continuation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scored {
    /// `log p(continuation[i] | prompt, continuation[..i])`.
    pub token_logprobs: Vec<f32>,
    /// Their sum, in `f64`.
    pub total_logprob: f64,
}
