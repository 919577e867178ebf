//! The three kinds of request as the engine serves them, each in one place: how it is built from its
//! [`Request`] (with its checks), which rows of a forward pass it needs, how it applies them, when it
//! is done and what it yields. The scheduler ([`crate::engine`]) only sees the [`Task`] trait.

use crate::error::{EngineError, Result};
use crate::request::{JointDecider, JointOutput, Outcome, Request, Scored};
use crate::runner::RowOutput;
use crate::seq::Seq;
use llm_auction_model::generation::{FinishReason, Generation};
use llm_auction_model::sampling::{SamplingParams, sample};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What one row of the forward pass must return for a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowNeed {
    /// The full logits row.
    Logits,
    /// The log-probability of this target token.
    Logprob(u32),
}

/// One row of a step's output for a task: `(member, position, output)`.
pub type TaskRow = (usize, usize, RowOutput);

/// A request being served: its rows, its state and its result.
pub trait Task: Send {
    /// How many leading tokens of `seq` may come from the prefix cache: full blocks are taken from
    /// the cache only below this many tokens minus one, so that every position whose row the task
    /// needs is computed.
    fn cacheable(&self, seq: &Seq) -> usize {
        seq.tokens.len()
    }

    /// The row that position `pos` of `seq` must return, if any; `completes` tells whether this
    /// step computes the last pending token of every member of the group.
    fn row(&self, seq: &Seq, pos: usize, completes: bool) -> Option<RowNeed>;

    /// Whether computing `n` tokens of `seq` from `seq.computed` on counts as prefill.
    fn prefill(&self, seq: &Seq, n: usize) -> bool {
        n > 1 || seq.computed + n < seq.tokens.len()
    }

    /// Applies this step's rows (in member, then position order), appending tokens to `seqs`;
    /// returns how many tokens were sampled or decided.
    ///
    /// # Errors
    /// A row of the wrong kind, a failed sample or decision: the request then fails alone.
    fn apply(&mut self, seqs: &mut [Seq], rows: Vec<TaskRow>, vocab: usize) -> Result<usize>;

    /// Whether the task has its result (`seqs`: its sequences).
    fn done(&self, seqs: &[Seq]) -> bool;

    /// Tokens produced so far: generated, decided or scored.
    fn progress(&self) -> usize;

    /// The result (once [`Task::done`]).
    fn outcome(&mut self) -> Outcome;
}

/// A new task: its sequences, the task, and each sequence's final length.
pub type Built = (Vec<Seq>, Box<dyn Task>, Vec<usize>);

fn check_tokens(what: &str, tokens: &[u32], vocab: usize) -> Result<()> {
    if tokens.is_empty() {
        return Err(EngineError::EmptyInput { field: what.into() });
    }
    if let Some(&t) = tokens.iter().find(|&&t| t as usize >= vocab) {
        return Err(EngineError::TokenOutOfVocab {
            field: what.into(),
            token: t.into(),
            vocab,
        });
    }
    Ok(())
}

fn wrong_row() -> EngineError {
    EngineError::Internal("the runner returned a row of the wrong kind".into())
}

/// Builds the task of `req`, checking it against a vocabulary of `vocab` tokens.
///
/// # Errors
/// [`EngineError::EmptyInput`] for an empty prompt or a joint request without members,
/// [`EngineError::TokenOutOfVocab`], bad sampling parameters.
pub fn build(req: Request, vocab: usize) -> Result<Built> {
    match req {
        Request::Generate(g) => {
            g.params.validate()?;
            check_tokens("prompt", &g.prompt, vocab)?;
            let len = g.prompt.len().saturating_add(g.max_new_tokens);
            let task = GenerateTask {
                params: g.params,
                max_new: g.max_new_tokens,
                stop: g.stop,
                rng: Box::new(ChaCha8Rng::seed_from_u64(g.seed)),
                out: Generation {
                    tokens: vec![],
                    logprobs_raw: vec![],
                    logprobs_proposal: vec![],
                    finish: FinishReason::Length,
                },
            };
            Ok((vec![Seq::new(g.prompt)], Box::new(task), vec![len]))
        }
        Request::Score(s) => {
            check_tokens("prompt", &s.prompt, vocab)?;
            if !s.continuation.is_empty() {
                check_tokens("continuation", &s.continuation, vocab)?;
            }
            let len = s.prompt.len() + s.continuation.len();
            let task = ScoreTask {
                prompt_len: s.prompt.len(),
                out: vec![f32::NAN; s.continuation.len()],
                filled: 0,
            };
            let seq = Seq::new([s.prompt, s.continuation].concat());
            Ok((vec![seq], Box::new(task), vec![len]))
        }
        Request::Joint(j) => {
            if j.prompts.is_empty() {
                return Err(EngineError::EmptyInput {
                    field: "prompts".into(),
                });
            }
            for p in &j.prompts {
                check_tokens("prompt", p, vocab)?;
            }
            let lens = j
                .prompts
                .iter()
                .map(|p| p.len().saturating_add(j.max_new_tokens))
                .collect();
            let seqs = j.prompts.into_iter().map(Seq::new).collect();
            let task = JointTask {
                max_new: j.max_new_tokens,
                stop: j.stop,
                decider: j.decider,
                tokens: vec![],
                finish: (j.max_new_tokens == 0).then_some(FinishReason::Length),
            };
            Ok((seqs, Box::new(task), lens))
        }
    }
}

/// Sampled generation: one sequence, a row at its last token, one token sampled per step from the
/// request's own seeded stream (which survives preemption).
struct GenerateTask {
    params: SamplingParams,
    max_new: usize,
    stop: Vec<u32>,
    rng: Box<ChaCha8Rng>,
    out: Generation,
}

impl Task for GenerateTask {
    fn row(&self, seq: &Seq, pos: usize, _: bool) -> Option<RowNeed> {
        (pos + 1 == seq.tokens.len()).then_some(RowNeed::Logits)
    }

    fn apply(&mut self, seqs: &mut [Seq], rows: Vec<TaskRow>, _: usize) -> Result<usize> {
        let mut sampled = 0;
        for (_, _, out) in rows {
            let RowOutput::Logits(logits) = out else {
                return Err(wrong_row());
            };
            let s = sample(&logits, &self.params, &mut self.rng)?;
            self.out.tokens.push(s.token);
            self.out.logprobs_raw.push(s.logprob_raw);
            self.out.logprobs_proposal.push(s.logprob_proposal);
            sampled += 1;
            if self.stop.contains(&s.token) {
                self.out.finish = FinishReason::Stop;
            } else if self.out.tokens.len() < self.max_new {
                seqs[0].tokens.push(s.token);
            }
        }
        Ok(sampled)
    }

    fn done(&self, _: &[Seq]) -> bool {
        self.out.tokens.len() >= self.max_new || self.out.finish == FinishReason::Stop
    }

    fn progress(&self) -> usize {
        self.out.tokens.len()
    }

    fn outcome(&mut self) -> Outcome {
        Outcome::Generated(self.out.clone())
    }
}

/// Teacher-forced scoring: one sequence (prompt then continuation), a row with the next token's
/// log-probability at every position from the last prompt token on; always prefill.
struct ScoreTask {
    prompt_len: usize,
    out: Vec<f32>,
    filled: usize,
}

impl Task for ScoreTask {
    fn cacheable(&self, _: &Seq) -> usize {
        self.prompt_len
    }

    fn row(&self, seq: &Seq, pos: usize, _: bool) -> Option<RowNeed> {
        (pos + 1 >= self.prompt_len && pos + 1 < seq.tokens.len())
            .then(|| RowNeed::Logprob(seq.tokens[pos + 1]))
    }

    fn prefill(&self, _: &Seq, _: usize) -> bool {
        true
    }

    fn apply(&mut self, _: &mut [Seq], rows: Vec<TaskRow>, _: usize) -> Result<usize> {
        for (_, pos, out) in rows {
            let RowOutput::Logprob(lp) = out else {
                return Err(wrong_row());
            };
            self.out[pos + 1 - self.prompt_len] = lp;
            self.filled += 1;
        }
        Ok(0)
    }

    fn done(&self, seqs: &[Seq]) -> bool {
        self.out.is_empty() || seqs[0].computed == seqs[0].tokens.len()
    }

    fn progress(&self) -> usize {
        self.filled
    }

    fn outcome(&mut self) -> Outcome {
        Outcome::Scored(Scored {
            token_logprobs: self.out.clone(),
            total_logprob: self.out.iter().map(|&x| x as f64).sum(),
        })
    }
}

/// Joint decoding: every member's last token in the same step, one row each; the decider picks one
/// token from all rows, appended to every member.
struct JointTask {
    max_new: usize,
    stop: Vec<u32>,
    decider: Box<dyn JointDecider>,
    tokens: Vec<u32>,
    finish: Option<FinishReason>,
}

impl Task for JointTask {
    fn row(&self, seq: &Seq, pos: usize, completes: bool) -> Option<RowNeed> {
        (completes && pos + 1 == seq.tokens.len()).then_some(RowNeed::Logits)
    }

    fn apply(&mut self, seqs: &mut [Seq], rows: Vec<TaskRow>, vocab: usize) -> Result<usize> {
        if rows.is_empty() {
            return Ok(0);
        }
        let logits = rows
            .into_iter()
            .map(|(_, _, out)| match out {
                RowOutput::Logits(l) => Ok(l),
                RowOutput::Logprob(_) => Err(wrong_row()),
            })
            .collect::<Result<Vec<_>>>()?;
        let t = self.decider.decide(&logits)?;
        if t as usize >= vocab {
            return Err(EngineError::TokenOutOfVocab {
                field: "decider".into(),
                token: t.into(),
                vocab,
            });
        }
        self.tokens.push(t);
        if self.stop.contains(&t) {
            self.finish = Some(FinishReason::Stop);
        } else if self.tokens.len() >= self.max_new {
            self.finish = Some(FinishReason::Length);
        } else {
            for seq in seqs {
                seq.tokens.push(t);
            }
        }
        Ok(1)
    }

    fn done(&self, _: &[Seq]) -> bool {
        self.finish.is_some()
    }

    fn progress(&self) -> usize {
        self.tokens.len()
    }

    fn outcome(&mut self) -> Outcome {
        Outcome::Joint(JointOutput {
            tokens: self.tokens.clone(),
            finish: self.finish.unwrap_or(FinishReason::Length),
        })
    }
}
