//! What callers submit and get back. A request is a *group* of sequences that the scheduler treats
//! as one unit: a sampled generation, a teacher-forced scoring, or a joint decoding in which several
//! sequences (one per agent, each with its own prompt) advance by the same token every step — the
//! token auction.

use crate::error::Result;
pub use llm_auction_model::generation::{
    FinishReason, GenerateRequest, Generation, ScoreRequest, Scored,
};

/// Chooses the next token of a joint decoding from every member's next-token logits.
pub trait JointDecider: Send {
    /// `logits[i]` is member `i`'s row (`vocab` values, temperature 1); returns the token appended to
    /// every member.
    ///
    /// # Errors
    /// Whatever the decision rule rejects; the request then fails.
    fn decide(&mut self, logits: &[Vec<f32>]) -> Result<u32>;
}

/// Several sequences that step together: each step, one forward pass gives every member's
/// distribution, `decider` picks one token, and it is appended to all members.
pub struct JointSpec {
    /// One prompt per member (non-empty each).
    pub prompts: Vec<Vec<u32>>,
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// Decoding stops after any of these tokens (kept in the output).
    pub stop: Vec<u32>,
    /// The decision rule.
    pub decider: Box<dyn JointDecider>,
}

impl std::fmt::Debug for JointSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JointSpec")
            .field("prompts", &self.prompts)
            .field("max_new_tokens", &self.max_new_tokens)
            .field("stop", &self.stop)
            .finish_non_exhaustive()
    }
}

/// A request.
#[derive(Debug)]
pub enum Request {
    /// Sampled generation.
    Generate(GenerateRequest),
    /// Teacher-forced scoring.
    Score(ScoreRequest),
    /// Joint decoding (token auction).
    Joint(JointSpec),
}

/// The tokens of a joint decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct JointOutput {
    /// The generated tokens (a final stop token included).
    pub tokens: Vec<u32>,
    /// Why decoding ended.
    pub finish: FinishReason,
}

/// What a finished request produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A generation.
    Generated(Generation),
    /// A scoring.
    Scored(Scored),
    /// A joint decoding.
    Joint(JointOutput),
}

impl Outcome {
    /// The generation, if this is one.
    pub fn generated(self) -> Option<Generation> {
        match self {
            Outcome::Generated(g) => Some(g),
            _ => None,
        }
    }

    /// The scoring, if this is one.
    pub fn scored(self) -> Option<Scored> {
        match self {
            Outcome::Scored(s) => Some(s),
            _ => None,
        }
    }

    /// The joint decoding, if this is one.
    pub fn joint(self) -> Option<JointOutput> {
        match self {
            Outcome::Joint(j) => Some(j),
            _ => None,
        }
    }
}
