//! Joint decoding step by step over next-token distributions: the token auction on models that are
//! not one local engine (remote agents, or agents on different models).
//!
//! Every step, each session is asked once for the rows of all its live members (contexts = prompt
//! plus the tokens decided so far), each joint group's decider picks the token from its members'
//! rows, and the token is appended to all of them. A group ends after a stop token (kept) or at its
//! token limit.

use super::OnStep;
use crate::engine::StepStats;
use crate::error::{EngineError, Result};
use crate::request::{JointDecider, JointOutput, JointSpec};
use llm_auction_model::generation::FinishReason;

/// One joint group: its members (indices into the member list), limit, stop ids and decider.
pub struct Joint {
    /// Indices of its members in the `members` slice of [`decode`].
    pub members: Vec<usize>,
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// Decoding stops after any of these tokens (kept in the output).
    pub stop: Vec<u32>,
    /// The decision rule.
    pub decider: Box<dyn JointDecider>,
}

/// The members and groups of `specs`; member `i` of a spec runs on session `session_of(i)`.
pub fn plan(
    specs: Vec<JointSpec>,
    session_of: &dyn Fn(usize) -> usize,
) -> (Vec<(usize, Vec<u32>)>, Vec<Joint>) {
    let mut members = Vec::new();
    let mut joints = Vec::new();
    for spec in specs {
        let first = members.len();
        members.extend(
            spec.prompts
                .into_iter()
                .enumerate()
                .map(|(i, p)| (session_of(i), p)),
        );
        joints.push(Joint {
            members: (first..members.len()).collect(),
            max_new_tokens: spec.max_new_tokens,
            stop: spec.stop,
            decider: spec.decider,
        });
    }
    (members, joints)
}

/// Where the rows come from: `rows(session, contexts)` gives one next-token log-probability row per
/// context (see [`super::ModelSession::next_token_logprobs`]).
pub type RowSource<'a> = &'a mut dyn FnMut(usize, &[Vec<u32>]) -> Result<Vec<Vec<f32>>>;

/// Decodes every group to its end. `members[k] = (session index, prompt)`; there are `sessions`
/// sessions.
///
/// # Errors
/// A session's or a decider's error, or a member naming a session that does not exist.
pub fn decode(
    sessions: usize,
    rows_of: RowSource<'_>,
    members: &[(usize, Vec<u32>)],
    mut joints: Vec<Joint>,
    on_step: OnStep<'_>,
) -> Result<Vec<JointOutput>> {
    if let Some((s, _)) = members.iter().find(|(s, _)| *s >= sessions) {
        return Err(EngineError::Internal(format!(
            "joint member on session {s} of {sessions}"
        )));
    }
    let mut contexts: Vec<Vec<u32>> = members.iter().map(|(_, p)| p.clone()).collect();
    let mut outputs: Vec<JointOutput> = joints
        .iter()
        .map(|_| JointOutput {
            tokens: vec![],
            finish: FinishReason::Length,
        })
        .collect();
    let mut live: Vec<bool> = joints.iter().map(|j| j.max_new_tokens > 0).collect();
    let mut step = 0u64;
    while live.iter().any(|&l| l) {
        step += 1;
        // Rows of every live member, one call per session.
        let mut rows: Vec<Option<Vec<f32>>> = vec![None; members.len()];
        for s in 0..sessions {
            let wanted: Vec<usize> = joints
                .iter()
                .zip(&live)
                .filter(|(_, l)| **l)
                .flat_map(|(j, _)| j.members.iter().copied())
                .filter(|&k| members[k].0 == s)
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let ctx: Vec<Vec<u32>> = wanted.iter().map(|&k| contexts[k].clone()).collect();
            let got = rows_of(s, &ctx)?;
            if got.len() != wanted.len() {
                return Err(EngineError::Internal(format!(
                    "{} next-token rows for {} contexts",
                    got.len(),
                    wanted.len()
                )));
            }
            for (k, row) in wanted.into_iter().zip(got) {
                rows[k] = Some(row);
            }
        }
        let mut stats = StepStats {
            step,
            ..Default::default()
        };
        for (g, joint) in joints.iter_mut().enumerate() {
            if !live[g] {
                continue;
            }
            let logits: Vec<Vec<f32>> = joint
                .members
                .iter()
                .map(|&k| rows[k].take().unwrap_or_default())
                .collect();
            let token = joint.decider.decide(&logits)?;
            let out = &mut outputs[g];
            out.tokens.push(token);
            stats.sampled += 1;
            if joint.stop.contains(&token) {
                out.finish = FinishReason::Stop;
                live[g] = false;
            } else if out.tokens.len() >= joint.max_new_tokens {
                live[g] = false;
            } else {
                for &k in &joint.members {
                    contexts[k].push(token);
                }
            }
            if !live[g] {
                stats.finished += 1;
            }
        }
        on_step(&stats);
    }
    Ok(outputs)
}
