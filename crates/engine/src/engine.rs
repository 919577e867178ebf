//! The engine: a synchronous [`Engine::step`] that reads as one page, as in vLLM v1: `schedule()`
//! makes a plan, one packed forward pass runs it, and `update_from_output()` applies the results
//! (iteration-level scheduling, as in Orca and vLLM). What each kind of request does with its rows
//! lives in [`crate::task`]; the scheduler never matches on the kind.
//!
//! Each step:
//! 1. **Running groups first**, in admission order: each gets its next chunk (a prefill chunk or
//!    one decode token per sequence) within the token budget. If its KV blocks cannot be allocated,
//!    the most recently admitted running group is preempted (its blocks freed, its tokens kept) until
//!    they can — possibly the group itself.
//! 2. **Admission**, only if nothing was preempted, in *fair order*: preempted groups first, then
//!    the waiting group whose owner (one auction) has the fewest running sequences, oldest first
//!    among equals; admission stops at the first group that does not fit (so a large request is not
//!    overtaken forever). With prefix caching, a sequence first takes the cached blocks of its
//!    longest cached prefix (always leaving at least its last token to compute, whose logits are
//!    needed), and a group whose next uncached prompt block is being computed right now by a running
//!    sequence waits one step to share it instead of computing it twice.
//! 3. One forward pass over all scheduled tokens; full blocks are registered in the prefix cache; then
//!    every scheduled task applies its rows (generations sample, each with its own seeded stream;
//!    scorings record log-probabilities; joint groups decide their common token). A task whose rows
//!    fail (a bad row, a failing decider) finishes alone with its error; a failed forward pass fails
//!    the requests it carried. Finished groups free their blocks.
//!
//! **Fairness.** Running groups keep their seats until they finish, and every request is bounded
//! (its token limit), so a seat frees within the longest running request's remaining tokens; the
//! next free seat goes to the owner with the fewest running sequences. An owner that floods the
//! queue therefore cannot hold the batch against a newcomer: a newcomer's request is admitted before
//! any further request of an owner that already runs more sequences.
//!
//! **Cancellation.** [`Engine::abort`] and [`Engine::abort_owner`] finish requests with
//! [`EngineError::Aborted`] at once: they leave the next step and their KV blocks are freed.
//!
//! A group's sequences are scheduled in the same step or not at all, and a joint group computes the
//! last tokens of all its members in the same step (their logits are decided on together). A request
//! that fits alone (KV blocks, budget, sequence limit) is always completed; one that cannot is
//! rejected by [`Engine::submit`].

use crate::block::{BlockAllocator, BlockKey};
use crate::error::{EngineError, Result};
use crate::request::{Outcome, Request};
use crate::runner::{ModelRunner, RowOutput, RunnerSpec};
use crate::seq::{Group, Seq};
use crate::task::{self, RowNeed, TaskRow};
use llm_auction_model::batch::ForwardBatch;
use std::collections::{HashMap, HashSet, VecDeque};

/// Identifies a submitted request.
pub type RequestId = u64;

/// Identifies who submitted a request: the unit of fair sharing (one auction).
pub type Owner = u64;

/// Scheduler limits and KV geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// Most tokens in one forward pass.
    pub token_budget: usize,
    /// Most sequences running at once (the batch limit).
    pub max_seqs: usize,
    /// Tokens per KV block.
    pub block_size: usize,
    /// KV blocks (the cache holds `num_blocks · block_size` tokens per layer).
    pub num_blocks: usize,
    /// Share full blocks between sequences with equal prefixes.
    pub prefix_caching: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            token_budget: 512,
            max_seqs: 64,
            block_size: 16,
            num_blocks: 1024,
            prefix_caching: true,
        }
    }
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StepStats {
    /// Step number (from 1).
    pub step: u64,
    /// Sequences in the forward pass.
    pub seqs: usize,
    /// Tokens in the forward pass.
    pub tokens: usize,
    /// Of which, tokens of sequences that were not decoding a single new token.
    pub prefill_tokens: usize,
    /// Tokens sampled (generations) or decided (joint groups) by this step.
    pub sampled: usize,
    /// Groups preempted during scheduling.
    pub preempted: usize,
    /// Groups finished by this step.
    pub finished: usize,
    /// Free KV blocks after the step.
    pub free_blocks: usize,
}

/// Counters over the engine's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EngineTotals {
    /// Forward passes.
    pub passes: u64,
    /// Tokens computed.
    pub tokens: u64,
    /// Prefill tokens computed.
    pub prefill_tokens: u64,
    /// Preemptions.
    pub preemptions: u64,
    /// KV blocks reused from the prefix cache.
    pub cache_hit_blocks: u64,
}

/// Whose row a row of the forward pass is: `(request, member, position)`.
type RowUse = (RequestId, usize, usize);

/// One group's share of a step: `(sequence index, tokens)`.
type Chunks = Vec<(usize, usize)>;

/// What one step computes: each scheduled group's chunks, in schedule order.
struct Plan {
    groups: Vec<(RequestId, Chunks)>,
    preempted: usize,
}

enum Admission {
    Admitted(Chunks),
    Deferred,
    NoRoom,
}

/// The scheduler and its model runner.
pub struct Engine<R: ModelRunner> {
    runner: R,
    cfg: EngineConfig,
    spec: RunnerSpec,
    alloc: BlockAllocator,
    groups: HashMap<RequestId, Group>,
    waiting: VecDeque<RequestId>,
    running: Vec<RequestId>,
    outcomes: HashMap<RequestId, Result<Outcome>>,
    next_id: RequestId,
    steps: u64,
    totals: EngineTotals,
}

impl<R: ModelRunner> Engine<R> {
    /// An engine over `runner`; allocates the runner's KV storage.
    ///
    /// # Errors
    /// [`EngineError::Config`] for zero limits; the runner's allocation errors.
    pub fn new(mut runner: R, cfg: EngineConfig) -> Result<Self> {
        if cfg.token_budget == 0 || cfg.max_seqs == 0 || cfg.block_size == 0 || cfg.num_blocks == 0
        {
            return Err(EngineError::Config(format!(
                "every limit must be positive: {cfg:?}"
            )));
        }
        runner.init_cache(cfg.num_blocks * cfg.block_size)?;
        let spec = runner.spec();
        Ok(Self {
            runner,
            cfg,
            spec,
            alloc: BlockAllocator::new(cfg.num_blocks, cfg.block_size),
            groups: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            outcomes: HashMap::new(),
            next_id: 0,
            steps: 0,
            totals: EngineTotals::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Lifetime counters.
    pub fn totals(&self) -> EngineTotals {
        EngineTotals {
            cache_hit_blocks: self.alloc.cache_hits(),
            ..self.totals
        }
    }

    /// The block allocator (for inspection and invariant checks).
    pub fn allocator(&self) -> &BlockAllocator {
        &self.alloc
    }

    /// The runner.
    pub fn runner(&self) -> &R {
        &self.runner
    }

    /// Whether any submitted request is unfinished.
    pub fn has_unfinished(&self) -> bool {
        !self.waiting.is_empty() || !self.running.is_empty()
    }

    /// Sequences currently running.
    pub fn running_seqs(&self) -> usize {
        self.running.iter().map(|g| self.groups[g].seqs.len()).sum()
    }

    /// Requests waiting for admission.
    pub fn waiting_len(&self) -> usize {
        self.waiting.len()
    }

    /// Takes the outcome of a finished request: its result, or the error it failed with.
    pub fn take_outcome(&mut self, id: RequestId) -> Option<Result<Outcome>> {
        let out = self.outcomes.remove(&id)?;
        self.groups.remove(&id);
        Some(out)
    }

    /// Tokens an unfinished request has produced so far (generated, decided or scored).
    pub fn progress(&self, id: RequestId) -> Option<usize> {
        self.groups.get(&id).map(|g| g.task.progress())
    }

    /// Queues a request of owner 0 (see [`Engine::submit_as`]).
    ///
    /// # Errors
    /// As [`Engine::submit_as`].
    pub fn submit(&mut self, req: Request) -> Result<RequestId> {
        self.submit_as(0, req)
    }

    /// Queues a request of `owner` (the unit of fair sharing, see the module documentation).
    ///
    /// # Errors
    /// [`EngineError::EmptyInput`], [`EngineError::TokenOutOfVocab`], bad sampling parameters,
    /// [`EngineError::PromptTooLong`], or [`EngineError::KvCapacity`] when it could not run even
    /// alone.
    pub fn submit_as(&mut self, owner: Owner, req: Request) -> Result<RequestId> {
        let bs = self.cfg.block_size;
        let (seqs, task, lens) = task::build(req, self.spec.vocab_size)?;
        if let Some(&len) = lens.iter().find(|&&l| l > self.spec.max_position) {
            return Err(EngineError::PromptTooLong {
                len,
                max: self.spec.max_position,
            });
        }
        let needed: usize = lens.iter().map(|l| l.div_ceil(bs)).sum();
        if needed > self.cfg.num_blocks {
            return Err(EngineError::KvCapacity {
                needed,
                available: self.cfg.num_blocks,
            });
        }
        let n = seqs.len();
        if n > self.cfg.max_seqs || n > self.cfg.token_budget {
            return Err(EngineError::Config(format!(
                "a request of {n} sequences needs max_seqs and token_budget of at least {n}"
            )));
        }
        let id = self.next_id;
        self.next_id += 1;
        let group = Group::new(seqs, task, owner);
        // Requests with nothing to compute finish at once.
        let empty = group.task.done(&group.seqs);
        self.groups.insert(id, group);
        if empty {
            self.retire(id);
        } else {
            self.waiting.push_back(id);
        }
        Ok(id)
    }

    /// Aborts an unfinished request: it leaves the queue or the batch at once, its KV blocks are
    /// freed, and its outcome is [`EngineError::Aborted`] with `reason`. Returns whether it was
    /// unfinished.
    pub fn abort(&mut self, id: RequestId, reason: &str) -> bool {
        let live = self.groups.contains_key(&id) && !self.outcomes.contains_key(&id);
        if live {
            if let Some(g) = self.groups.get_mut(&id) {
                g.error = Some(EngineError::Aborted(reason.to_string()));
            }
            self.retire(id);
        }
        live
    }

    /// Aborts every unfinished request of `owner`; returns their ids.
    pub fn abort_owner(&mut self, owner: Owner, reason: &str) -> Vec<RequestId> {
        let mut ids: Vec<RequestId> = self
            .groups
            .iter()
            .filter(|(id, g)| g.owner == owner && !self.outcomes.contains_key(id))
            .map(|(&id, _)| id)
            .collect();
        ids.sort_unstable();
        for &id in &ids {
            self.abort(id, reason);
        }
        ids
    }

    /// Finishes group `id` (done, failed or aborted): frees its blocks, takes it out of the queue
    /// and the batch, and records its outcome.
    fn retire(&mut self, id: RequestId) {
        let Some(group) = self.groups.get_mut(&id) else {
            return;
        };
        group.finish(&mut self.alloc);
        let out = match group.error.take() {
            Some(e) => Err(e),
            None => Ok(group.task.outcome()),
        };
        self.outcomes.insert(id, out);
        self.running.retain(|&g| g != id);
        self.waiting.retain(|&g| g != id);
    }

    /// Runs requests to completion (submitting them in order) and returns their outcomes in order.
    /// `on_step` sees every step's statistics.
    ///
    /// # Errors
    /// The first submission error, or the first failed request's error (in request order).
    pub fn run_all(
        &mut self,
        reqs: Vec<Request>,
        on_step: &mut dyn FnMut(&StepStats),
    ) -> Result<Vec<Outcome>> {
        let ids = reqs
            .into_iter()
            .map(|r| self.submit(r))
            .collect::<Result<Vec<_>>>()?;
        while self.has_unfinished() {
            let stats = self.step();
            on_step(&stats);
        }
        ids.into_iter()
            .map(|id| {
                self.take_outcome(id)
                    .ok_or_else(|| EngineError::Internal(format!("request {id} has no outcome")))?
            })
            .collect()
    }

    /// Tokens `chunks` of group `g` would compute: every sequence's pending tokens within `budget`;
    /// for several sequences, their last tokens only all together.
    fn plan_chunks(group: &Group, budget: usize) -> Option<Chunks> {
        let pend: Vec<usize> = group.seqs.iter().map(Seq::pending).collect();
        let total: usize = pend.iter().sum();
        if total == 0 || budget == 0 {
            return None;
        }
        let chunks: Chunks = if pend.len() == 1 {
            vec![(0, pend[0].min(budget))]
        } else if total <= budget {
            pend.iter()
                .copied()
                .enumerate()
                .filter(|&(_, p)| p > 0)
                .collect()
        } else {
            let mut left = budget;
            let mut c = Vec::new();
            for (i, &p) in pend.iter().enumerate() {
                let take = p.saturating_sub(1).min(left);
                if take > 0 {
                    c.push((i, take));
                    left -= take;
                }
            }
            c
        };
        if chunks.is_empty() {
            None
        } else {
            Some(chunks)
        }
    }

    /// Allocates the blocks `chunks` need; all or nothing.
    fn reserve(&mut self, gid: RequestId, chunks: &Chunks) -> bool {
        let bs = self.cfg.block_size;
        let group = self.groups.get_mut(&gid).expect("scheduled group exists");
        let mut taken: Vec<(usize, u32)> = Vec::new();
        for &(si, n) in chunks {
            let seq = &mut group.seqs[si];
            let need = (seq.computed + n).div_ceil(bs);
            while seq.blocks.len() < need {
                match self.alloc.allocate() {
                    Some(b) => {
                        seq.blocks.push(b);
                        taken.push((si, b));
                    }
                    None => {
                        for &(sj, b) in taken.iter().rev() {
                            group.seqs[sj].blocks.pop();
                            self.alloc.release(b);
                        }
                        return false;
                    }
                }
            }
        }
        true
    }

    fn preempt(&mut self, gid: RequestId) {
        let group = self.groups.get_mut(&gid).expect("preempted group exists");
        group.preempt(&mut self.alloc);
        self.running.retain(|&g| g != gid);
        self.waiting.push_front(gid);
        self.totals.preemptions += 1;
        tracing::debug!(
            request = gid,
            "preempted (KV blocks exhausted); will recompute"
        );
    }

    /// Adds to `keys` the full blocks group `gid` will compute but has not registered yet.
    fn add_pending_keys(&mut self, gid: RequestId, keys: &mut HashSet<BlockKey>) {
        let bs = self.cfg.block_size;
        let group = self.groups.get_mut(&gid).expect("running group exists");
        for seq in &mut group.seqs {
            for j in seq.registered..seq.tokens.len() / bs {
                keys.insert(seq.block_key(j, bs));
            }
        }
    }

    /// Tries to admit waiting group `gid`.
    fn admit(&mut self, gid: RequestId, budget: usize, pending: &HashSet<BlockKey>) -> Admission {
        let bs = self.cfg.block_size;
        let prefix = self.cfg.prefix_caching;
        let group = self.groups.get_mut(&gid).expect("waiting group exists");
        // Cached blocks may cover at most this many tokens of each sequence. At least the last
        // token stays to compute (its logits are needed); a scoring keeps every position whose
        // logits it needs, from the last prompt token on.
        let caps: Vec<usize> = group.seqs.iter().map(|s| group.task.cacheable(s)).collect();
        if prefix {
            // Defer if the next uncached full prompt block is being computed by someone else.
            for (seq, &cap) in group.seqs.iter_mut().zip(&caps) {
                let full = (cap - 1) / bs;
                for j in 0..full {
                    let key = seq.block_key(j, bs);
                    if self.alloc.contains(&key) {
                        continue;
                    }
                    if pending.contains(&key) {
                        return Admission::Deferred;
                    }
                    break;
                }
            }
            // Take the cached prefix.
            for (seq, &cap) in group.seqs.iter_mut().zip(&caps) {
                let full = (cap - 1) / bs;
                for j in 0..full {
                    let key = seq.block_key(j, bs);
                    match self.alloc.lookup(&key) {
                        Some(b) => {
                            seq.blocks.push(b);
                            seq.computed = (j + 1) * bs;
                            seq.registered = j + 1;
                        }
                        None => break,
                    }
                }
            }
        }
        let release = |group: &mut Group, alloc: &mut BlockAllocator| {
            for seq in &mut group.seqs {
                seq.free(alloc);
            }
        };
        let Some(chunks) = Self::plan_chunks(group, budget) else {
            release(group, &mut self.alloc);
            return Admission::NoRoom;
        };
        if !self.reserve(gid, &chunks) {
            let group = self.groups.get_mut(&gid).expect("waiting group exists");
            release(group, &mut self.alloc);
            return Admission::NoRoom;
        }
        self.groups
            .get_mut(&gid)
            .expect("waiting group exists")
            .admit();
        Admission::Admitted(chunks)
    }

    /// Decides what runs this step: running groups first, then admission in fair order (see the
    /// module documentation).
    fn schedule(&mut self) -> Plan {
        let mut budget = self.cfg.token_budget;
        let mut groups = Vec::new();
        let mut preempted = 0;
        let mut i = 0;
        while i < self.running.len() {
            let gid = self.running[i];
            let Some(chunks) = Self::plan_chunks(&self.groups[&gid], budget) else {
                i += 1;
                continue;
            };
            loop {
                if self.reserve(gid, &chunks) {
                    budget -= chunks.iter().map(|c| c.1).sum::<usize>();
                    groups.push((gid, chunks));
                    i += 1;
                    break;
                }
                let victim = *self.running.last().expect("the group itself is running");
                self.preempt(victim);
                preempted += 1;
                if victim == gid {
                    break;
                }
            }
        }
        if preempted == 0 {
            self.admit_waiting(&mut budget, &mut groups);
        }
        Plan { groups, preempted }
    }

    /// Admits waiting groups in fair order while the budget, the seats and the KV blocks allow.
    fn admit_waiting(&mut self, budget: &mut usize, plan: &mut Vec<(RequestId, Chunks)>) {
        let mut pending = HashSet::new();
        if self.cfg.prefix_caching {
            for gid in self.running.clone() {
                self.add_pending_keys(gid, &mut pending);
            }
        }
        let mut share: HashMap<Owner, usize> = HashMap::new();
        for gid in &self.running {
            let g = &self.groups[gid];
            *share.entry(g.owner).or_default() += g.seqs.len();
        }
        let mut seats = self.cfg.max_seqs - self.running_seqs();
        let mut deferred: HashSet<RequestId> = HashSet::new();
        while *budget > 0 {
            // Preempted groups first, then the owner with the fewest running sequences, then age.
            let next = self
                .waiting
                .iter()
                .enumerate()
                .filter(|(_, gid)| !deferred.contains(gid))
                .min_by_key(|&(k, gid)| {
                    let g = &self.groups[gid];
                    let owner_seqs = share.get(&g.owner).copied().unwrap_or(0);
                    (g.preemptions == 0, owner_seqs, k)
                })
                .map(|(k, &gid)| (k, gid));
            let Some((k, gid)) = next else { break };
            let n = self.groups[&gid].seqs.len();
            if n > seats {
                break;
            }
            match self.admit(gid, *budget, &pending) {
                Admission::Admitted(chunks) => {
                    *budget -= chunks.iter().map(|c| c.1).sum::<usize>();
                    seats -= n;
                    *share.entry(self.groups[&gid].owner).or_default() += n;
                    self.waiting.remove(k);
                    self.running.push(gid);
                    plan.push((gid, chunks));
                    if self.cfg.prefix_caching {
                        self.add_pending_keys(gid, &mut pending);
                    }
                }
                Admission::Deferred => {
                    deferred.insert(gid);
                }
                Admission::NoRoom => break,
            }
        }
    }

    /// One iteration: `schedule()` makes the plan, one forward pass runs it, and
    /// `update_from_output()` applies the results. Requests that fail in it (their rows, or the
    /// forward pass they were in) finish with their error; the others go on.
    pub fn step(&mut self) -> StepStats {
        self.steps += 1;
        let plan = self.schedule();
        let mut stats = StepStats {
            step: self.steps,
            preempted: plan.preempted,
            ..Default::default()
        };
        if !plan.groups.is_empty() {
            let (batch, uses, targets) = self.pack(&plan, &mut stats);
            match self.runner.forward(&batch, &targets) {
                Ok(outputs) if outputs.len() == uses.len() => {
                    self.totals.passes += 1;
                    self.totals.tokens += stats.tokens as u64;
                    self.totals.prefill_tokens += stats.prefill_tokens as u64;
                    self.update_from_output(&plan, uses, outputs, &mut stats);
                }
                Ok(outputs) => self.fail_plan(
                    &plan,
                    &format!("{} rows expected, got {}", uses.len(), outputs.len()),
                ),
                Err(e) => self.fail_plan(&plan, &e.to_string()),
            }
            let finished: Vec<RequestId> = self
                .running
                .iter()
                .copied()
                .filter(|gid| {
                    let g = &self.groups[gid];
                    g.error.is_some() || g.task.done(&g.seqs)
                })
                .collect();
            stats.finished = finished.len();
            for gid in finished {
                self.retire(gid);
            }
        }
        stats.free_blocks = self.alloc.num_free();
        tracing::trace!(?stats, "engine step");
        stats
    }

    /// Packs the plan into one forward batch: every chunk's tokens, and the rows the tasks need.
    fn pack(
        &self,
        plan: &Plan,
        stats: &mut StepStats,
    ) -> (ForwardBatch, Vec<RowUse>, Vec<Option<u32>>) {
        let mut batch = ForwardBatch {
            block_size: self.cfg.block_size,
            seq_starts: vec![0],
            ..Default::default()
        };
        let mut uses = Vec::new();
        let mut targets = Vec::new();
        for (gid, chunks) in &plan.groups {
            let group = &self.groups[gid];
            let completes = chunks.len() == group.seqs.len()
                && chunks
                    .iter()
                    .all(|&(si, n)| group.seqs[si].computed + n == group.seqs[si].tokens.len());
            for &(si, n) in chunks {
                let seq = &group.seqs[si];
                if group.task.prefill(seq, n) {
                    stats.prefill_tokens += n;
                }
                for p in seq.computed..seq.computed + n {
                    let row = batch.tokens.len();
                    batch.tokens.push(seq.tokens[p]);
                    batch.positions.push(p as u32);
                    if let Some(need) = group.task.row(seq, p, completes) {
                        batch.logits_rows.push(row);
                        uses.push((*gid, si, p));
                        targets.push(match need {
                            RowNeed::Logits => None,
                            RowNeed::Logprob(t) => Some(t),
                        });
                    }
                }
                batch.block_tables.push(seq.blocks.clone());
                batch.seq_starts.push(batch.tokens.len());
                stats.seqs += 1;
            }
        }
        stats.tokens = batch.tokens.len();
        (batch, uses, targets)
    }

    /// Applies a forward pass: the KV is in the cache (advance, register full blocks), then each
    /// scheduled task applies its rows; a task that fails records its error.
    fn update_from_output(
        &mut self,
        plan: &Plan,
        uses: Vec<RowUse>,
        outputs: Vec<RowOutput>,
        stats: &mut StepStats,
    ) {
        let bs = self.cfg.block_size;
        for (gid, chunks) in &plan.groups {
            let group = self.groups.get_mut(gid).expect("scheduled group exists");
            for &(si, n) in chunks {
                let seq = &mut group.seqs[si];
                seq.computed += n;
                if self.cfg.prefix_caching {
                    while seq.registered < seq.computed / bs {
                        let j = seq.registered;
                        let key = seq.block_key(j, bs);
                        self.alloc.register(seq.blocks[j], key);
                        seq.registered += 1;
                    }
                }
            }
        }
        let mut rows: HashMap<RequestId, Vec<TaskRow>> = HashMap::new();
        for ((gid, member, pos), out) in uses.into_iter().zip(outputs) {
            rows.entry(gid).or_default().push((member, pos, out));
        }
        let vocab = self.spec.vocab_size;
        for (gid, _) in &plan.groups {
            let group = self.groups.get_mut(gid).expect("scheduled group exists");
            let mine = rows.remove(gid).unwrap_or_default();
            if let Some(e) = mine.iter().find_map(|(_, pos, out)| non_finite(out, *pos)) {
                group.error = Some(e);
                continue;
            }
            match group.task.apply(&mut group.seqs, mine, vocab) {
                Ok(n) => stats.sampled += n,
                Err(e) => group.error = Some(e),
            }
        }
    }

    /// Fails every request of a plan whose forward pass failed.
    fn fail_plan(&mut self, plan: &Plan, message: &str) {
        tracing::warn!(message, "forward pass failed");
        for (gid, _) in &plan.groups {
            if let Some(g) = self.groups.get_mut(gid) {
                g.error = Some(EngineError::Forward(message.to_string()));
            }
        }
    }
}

/// A model that computes NaN or infinite logits (NaN weights, say) fails the request at the row
/// where it happens, instead of reporting `null` log-probabilities as a success.
fn non_finite(out: &RowOutput, pos: usize) -> Option<EngineError> {
    let bad = match out {
        RowOutput::Logprob(lp) => (!lp.is_finite()).then_some(*lp),
        RowOutput::Logits(row) => row.iter().copied().find(|x| !x.is_finite()),
    }?;
    Some(EngineError::Forward(format!(
        "the model computed a non-finite value ({bad}) at position {pos}; its weights may hold NaN or \
         infinity"
    )))
}
