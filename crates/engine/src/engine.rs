//! The engine: a synchronous `step()` that schedules, runs one packed forward pass and applies its
//! results (iteration-level scheduling, as in Orca and vLLM).
//!
//! Each step:
//! 1. **Running groups first**, in admission order: each gets its next chunk (a prefill chunk or
//!    one decode token per sequence) within the token budget. If its KV blocks cannot be allocated,
//!    the most recently admitted running group is preempted (its blocks freed, its tokens kept) until
//!    they can — possibly the group itself.
//! 2. **Admission**, only if nothing was preempted: waiting groups, oldest first, while the budget and
//!    the sequence limit allow. With prefix caching, a sequence first takes the cached blocks of its
//!    longest cached prefix (always leaving at least its last token to compute, whose logits are
//!    needed), and a group whose next uncached prompt block is being computed right now by a running
//!    sequence waits one step to share it instead of computing it twice.
//! 3. One forward pass over all scheduled tokens; full blocks are registered in the prefix cache; then
//!    generations sample (each with its own seeded stream), scorings record log-probabilities, joint
//!    groups decide their common token; finished groups free their blocks.
//!
//! A group's sequences are scheduled in the same step or not at all, and a joint group computes the
//! last tokens of all its members in the same step (their logits are decided on together). A request
//! that fits alone (KV blocks, budget, sequence limit) is always completed; one that cannot is
//! rejected by [`Engine::submit`].

use crate::block::{BlockAllocator, BlockKey};
use crate::error::{EngineError, Result};
use crate::request::{JointOutput, Outcome, Request};
use crate::runner::{ModelRunner, RowOutput, RunnerSpec};
use crate::seq::{Group, GroupKind, GroupState, Seq};
use llm_auction_model::batch::ForwardBatch;
use llm_auction_model::runner::{FinishReason, Generation};
use llm_auction_model::sampling::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::{HashMap, HashSet, VecDeque};

/// Identifies a submitted request.
pub type RequestId = u64;

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

/// How a scheduled row's output is used.
#[derive(Debug, Clone, Copy)]
enum RowUse {
    /// Sample the next token of a generation.
    Sample(RequestId),
    /// Log-probability of continuation token `index` of a scoring.
    Score(RequestId, usize),
    /// Member `member`'s row of a joint decision.
    Joint(RequestId, usize),
}

/// One group's share of a step: `(sequence index, tokens)`.
type Chunks = Vec<(usize, usize)>;

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
    outcomes: HashMap<RequestId, Outcome>,
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

    /// Takes the outcome of a finished request.
    pub fn take_outcome(&mut self, id: RequestId) -> Option<Outcome> {
        let out = self.outcomes.remove(&id)?;
        self.groups.remove(&id);
        Some(out)
    }

    fn check_tokens(&self, what: &str, tokens: &[u32]) -> Result<()> {
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= self.spec.vocab_size) {
            return Err(EngineError::InvalidRequest(format!(
                "{what}: token {t} is outside the vocabulary of {}",
                self.spec.vocab_size
            )));
        }
        Ok(())
    }

    /// Queues a request.
    ///
    /// # Errors
    /// [`EngineError::InvalidRequest`] (empty prompt, unknown token, bad sampling parameters),
    /// [`EngineError::PromptTooLong`], or [`EngineError::KvCapacity`] when it could not run even
    /// alone.
    pub fn submit(&mut self, req: Request) -> Result<RequestId> {
        let bs = self.cfg.block_size;
        let (group, lens): (Group, Vec<usize>) = match req {
            Request::Generate(g) => {
                g.params.validate()?;
                self.check_tokens("prompt", &g.prompt)?;
                let len = g.prompt.len() + g.max_new_tokens;
                let kind = GroupKind::Generate {
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
                (Group::new(vec![Seq::new(g.prompt)], kind), vec![len])
            }
            Request::Score(s) => {
                self.check_tokens("prompt", &s.prompt)?;
                self.check_tokens("continuation", &s.continuation)?;
                let len = s.prompt.len() + s.continuation.len();
                let kind = GroupKind::Score {
                    prompt_len: s.prompt.len(),
                    out: vec![f32::NAN; s.continuation.len()],
                };
                let seq = Seq::new([s.prompt, s.continuation].concat());
                (Group::new(vec![seq], kind), vec![len])
            }
            Request::Joint(j) => {
                if j.prompts.is_empty() {
                    return Err(EngineError::InvalidRequest(
                        "a joint request needs at least one prompt".into(),
                    ));
                }
                for p in &j.prompts {
                    self.check_tokens("prompt", p)?;
                }
                let lens = j
                    .prompts
                    .iter()
                    .map(|p| p.len() + j.max_new_tokens)
                    .collect();
                let seqs = j.prompts.into_iter().map(Seq::new).collect();
                let kind = GroupKind::Joint {
                    max_new: j.max_new_tokens,
                    stop: j.stop,
                    decider: j.decider,
                    tokens: vec![],
                    finish: None,
                };
                (Group::new(seqs, kind), lens)
            }
        };
        if group.seqs.iter().any(|s| s.tokens.is_empty()) {
            return Err(EngineError::InvalidRequest(
                "prompt: must contain at least one token".into(),
            ));
        }
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
        let n = group.seqs.len();
        if n > self.cfg.max_seqs || n > self.cfg.token_budget {
            return Err(EngineError::Config(format!(
                "a request of {n} sequences needs max_seqs and token_budget of at least {n}"
            )));
        }
        let id = self.next_id;
        self.next_id += 1;
        let mut group = group;
        // Requests with nothing to compute finish at once.
        let empty = match &group.kind {
            GroupKind::Generate { max_new, .. } | GroupKind::Joint { max_new, .. } => *max_new == 0,
            GroupKind::Score { out, .. } => out.is_empty(),
        };
        if empty {
            group.finish(&mut self.alloc);
            self.outcomes.insert(id, outcome_of(&mut group));
            self.groups.insert(id, group);
        } else {
            self.groups.insert(id, group);
            self.waiting.push_back(id);
        }
        Ok(id)
    }

    /// Runs requests to completion (submitting them in order) and returns their outcomes in order.
    /// `on_step` sees every step's statistics.
    ///
    /// # Errors
    /// The first submission or step error.
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
            let stats = self.step()?;
            on_step(&stats);
        }
        ids.into_iter()
            .map(|id| {
                self.take_outcome(id)
                    .ok_or_else(|| EngineError::Config(format!("request {id} has no outcome")))
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
        let cap = match &group.kind {
            GroupKind::Score { prompt_len, .. } => Some(*prompt_len),
            _ => None,
        };
        if prefix {
            // Defer if the next uncached full prompt block is being computed by someone else.
            for seq in &mut group.seqs {
                let full = (cap.unwrap_or(seq.tokens.len()) - 1) / bs;
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
            for seq in &mut group.seqs {
                let full = (cap.unwrap_or(seq.tokens.len()) - 1) / bs;
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

    /// Decides what runs this step.
    fn schedule(&mut self) -> (Vec<(RequestId, Chunks)>, usize) {
        let mut budget = self.cfg.token_budget;
        let mut plan = Vec::new();
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
                    plan.push((gid, chunks));
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
            let mut pending = HashSet::new();
            if self.cfg.prefix_caching {
                for gid in self.running.clone() {
                    self.add_pending_keys(gid, &mut pending);
                }
            }
            let mut seats = self.cfg.max_seqs - self.running_seqs();
            let mut k = 0;
            while k < self.waiting.len() && budget > 0 {
                let gid = self.waiting[k];
                let n = self.groups[&gid].seqs.len();
                if n > seats {
                    break;
                }
                match self.admit(gid, budget, &pending) {
                    Admission::Admitted(chunks) => {
                        budget -= chunks.iter().map(|c| c.1).sum::<usize>();
                        seats -= n;
                        self.waiting.remove(k);
                        self.running.push(gid);
                        plan.push((gid, chunks));
                        if self.cfg.prefix_caching {
                            self.add_pending_keys(gid, &mut pending);
                        }
                    }
                    Admission::Deferred => k += 1,
                    Admission::NoRoom => break,
                }
            }
        }
        (plan, preempted)
    }

    /// One iteration: schedule, run one forward pass, apply its results.
    ///
    /// # Errors
    /// Runner errors, and a joint decider's error (which fails the step).
    pub fn step(&mut self) -> Result<StepStats> {
        self.steps += 1;
        let (plan, preempted) = self.schedule();
        let mut stats = StepStats {
            step: self.steps,
            preempted,
            ..Default::default()
        };
        if plan.is_empty() {
            stats.free_blocks = self.alloc.num_free();
            return Ok(stats);
        }
        let bs = self.cfg.block_size;
        let mut batch = ForwardBatch {
            block_size: bs,
            seq_starts: vec![0],
            ..Default::default()
        };
        let mut uses: Vec<RowUse> = Vec::new();
        let mut targets: Vec<Option<u32>> = Vec::new();
        for (gid, chunks) in &plan {
            let group = &self.groups[gid];
            let completes_all = chunks.len() == group.seqs.len()
                && chunks
                    .iter()
                    .all(|&(si, n)| group.seqs[si].computed + n == group.seqs[si].tokens.len());
            for &(si, n) in chunks {
                let seq = &group.seqs[si];
                if n > 1
                    || seq.computed + n < seq.tokens.len()
                    || matches!(group.kind, GroupKind::Score { .. })
                {
                    stats.prefill_tokens += n;
                }
                for p in seq.computed..seq.computed + n {
                    let row = batch.tokens.len();
                    batch.tokens.push(seq.tokens[p]);
                    batch.positions.push(p as u32);
                    match &group.kind {
                        GroupKind::Generate { .. } if p + 1 == seq.tokens.len() => {
                            batch.logits_rows.push(row);
                            uses.push(RowUse::Sample(*gid));
                            targets.push(None);
                        }
                        GroupKind::Score { prompt_len, .. }
                            if p + 1 >= *prompt_len && p + 1 < seq.tokens.len() =>
                        {
                            batch.logits_rows.push(row);
                            uses.push(RowUse::Score(*gid, p + 1 - prompt_len));
                            targets.push(Some(seq.tokens[p + 1]));
                        }
                        GroupKind::Joint { .. } if completes_all && p + 1 == seq.tokens.len() => {
                            batch.logits_rows.push(row);
                            uses.push(RowUse::Joint(*gid, si));
                            targets.push(None);
                        }
                        _ => {}
                    }
                }
                batch.block_tables.push(seq.blocks.clone());
                batch.seq_starts.push(batch.tokens.len());
                stats.seqs += 1;
            }
        }
        stats.tokens = batch.tokens.len();
        let outputs = self.runner.forward(&batch, &targets)?;
        self.totals.passes += 1;
        self.totals.tokens += stats.tokens as u64;
        self.totals.prefill_tokens += stats.prefill_tokens as u64;

        // KV is now in the cache: advance and register full blocks.
        for (gid, chunks) in &plan {
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
        // Apply the rows.
        let mut joint_rows: HashMap<RequestId, Vec<(usize, Vec<f32>)>> = HashMap::new();
        for (use_, out) in uses.into_iter().zip(outputs) {
            match (use_, out) {
                (RowUse::Sample(gid), RowOutput::Logits(logits)) => {
                    self.apply_sample(gid, &logits)?;
                    stats.sampled += 1;
                }
                (RowUse::Score(gid, k), RowOutput::Logprob(lp)) => {
                    if let Some(GroupKind::Score { out, .. }) =
                        self.groups.get_mut(&gid).map(|g| &mut g.kind)
                    {
                        out[k] = lp;
                    }
                }
                (RowUse::Joint(gid, member), RowOutput::Logits(logits)) => {
                    joint_rows.entry(gid).or_default().push((member, logits));
                }
                _ => {
                    return Err(EngineError::Config(
                        "the runner returned a row of the wrong kind".into(),
                    ));
                }
            }
        }
        for (gid, mut rows) in joint_rows {
            rows.sort_by_key(|r| r.0);
            let logits: Vec<Vec<f32>> = rows.into_iter().map(|r| r.1).collect();
            self.apply_joint(gid, &logits)?;
            stats.sampled += 1;
        }
        // Retire finished groups.
        let mut finished = Vec::new();
        for &gid in &self.running {
            let g = &self.groups[&gid];
            let done = match &g.kind {
                GroupKind::Score { .. } => g.seqs[0].computed == g.seqs[0].tokens.len(),
                GroupKind::Generate {
                    out, max_new, stop, ..
                } => {
                    out.tokens.len() >= *max_new
                        || out.tokens.last().is_some_and(|t| stop.contains(t))
                }
                GroupKind::Joint { finish, .. } => finish.is_some(),
            };
            if done {
                finished.push(gid);
            }
        }
        for gid in finished {
            let group = self.groups.get_mut(&gid).expect("finished group exists");
            group.finish(&mut self.alloc);
            let out = outcome_of(group);
            self.outcomes.insert(gid, out);
            self.running.retain(|&g| g != gid);
            stats.finished += 1;
        }
        stats.free_blocks = self.alloc.num_free();
        tracing::trace!(?stats, "engine step");
        Ok(stats)
    }

    fn apply_sample(&mut self, gid: RequestId, logits: &[f32]) -> Result<()> {
        let group = self.groups.get_mut(&gid).expect("sampled group exists");
        let GroupKind::Generate {
            params,
            max_new,
            stop,
            rng,
            out,
        } = &mut group.kind
        else {
            return Ok(());
        };
        let s = sample(logits, params, rng)?;
        out.tokens.push(s.token);
        out.logprobs_raw.push(s.logprob_raw);
        out.logprobs_proposal.push(s.logprob_proposal);
        if stop.contains(&s.token) {
            out.finish = FinishReason::Stop;
        } else if out.tokens.len() < *max_new {
            group.seqs[0].tokens.push(s.token);
        }
        Ok(())
    }

    fn apply_joint(&mut self, gid: RequestId, logits: &[Vec<f32>]) -> Result<()> {
        let group = self.groups.get_mut(&gid).expect("joint group exists");
        let GroupKind::Joint {
            max_new,
            stop,
            decider,
            tokens,
            finish,
        } = &mut group.kind
        else {
            return Ok(());
        };
        let t = decider.decide(logits)?;
        if t as usize >= self.spec.vocab_size {
            return Err(EngineError::InvalidRequest(format!(
                "the decider chose token {t}, outside the vocabulary"
            )));
        }
        tokens.push(t);
        if stop.contains(&t) {
            *finish = Some(FinishReason::Stop);
        } else if tokens.len() >= *max_new {
            *finish = Some(FinishReason::Length);
        } else {
            for seq in &mut group.seqs {
                seq.tokens.push(t);
            }
        }
        Ok(())
    }
}

/// The outcome of a finished group.
fn outcome_of(group: &mut Group) -> Outcome {
    debug_assert_eq!(group.state(), GroupState::Finished);
    if let Some(s) = group.scored() {
        return Outcome::Scored(s);
    }
    match &mut group.kind {
        GroupKind::Generate { out, .. } => Outcome::Generated(out.clone()),
        GroupKind::Joint { tokens, finish, .. } => Outcome::Joint(JointOutput {
            tokens: tokens.clone(),
            finish: finish.unwrap_or(FinishReason::Length),
        }),
        GroupKind::Score { .. } => unreachable!("handled above"),
    }
}
