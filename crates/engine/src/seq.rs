//! Sequences and groups: the scheduler's state machine.
//!
//! A group (one request) is `Waiting` → `Running` → `Finished`; a running group can be preempted back
//! to `Waiting` (at the front of the queue), keeping its tokens but losing its KV blocks, which are
//! recomputed when it is admitted again (the prefix cache may restore most of them). Transitions go
//! through [`Group`] methods that check them.

use crate::block::{BlockAllocator, BlockId, BlockKey};
use crate::error::EngineError;
use crate::task::Task;

/// Where a group is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// Queued (new or preempted).
    Waiting,
    /// Admitted: its sequences hold KV blocks.
    Running,
    /// Done; the outcome is ready.
    Finished,
}

/// One sequence: its tokens, how many have KV in the cache, and its block table.
#[derive(Debug, Clone)]
pub struct Seq {
    /// All tokens: prompt, then generated or scored ones.
    pub tokens: Vec<u32>,
    /// Tokens whose keys and values are in the cache.
    pub computed: usize,
    /// The block table.
    pub blocks: Vec<BlockId>,
    /// Chain hashes of the leading full blocks (a function of the tokens only).
    pub hashes: Vec<u64>,
    /// Leading blocks whose content is registered in the prefix cache (computed or hit).
    pub registered: usize,
}

impl Seq {
    /// A sequence of `tokens` with nothing computed.
    pub fn new(tokens: Vec<u32>) -> Self {
        Self {
            tokens,
            computed: 0,
            blocks: Vec::new(),
            hashes: Vec::new(),
            registered: 0,
        }
    }

    /// Tokens still to compute.
    pub fn pending(&self) -> usize {
        self.tokens.len() - self.computed
    }

    /// The content key of full block `j` (its tokens must be known).
    pub fn block_key(&mut self, j: usize, bs: usize) -> BlockKey {
        let parent = if j == 0 {
            0
        } else {
            self.chain_hash(j - 1, bs)
        };
        BlockKey::new(parent, &self.tokens[j * bs..(j + 1) * bs])
    }

    /// Chain hash of full block `j`, computing the chain as far as needed.
    pub fn chain_hash(&mut self, j: usize, bs: usize) -> u64 {
        while self.hashes.len() <= j {
            let k = self.hashes.len();
            let parent = if k == 0 { 0 } else { self.hashes[k - 1] };
            let h = BlockKey::new(parent, &self.tokens[k * bs..(k + 1) * bs]).chain_hash();
            self.hashes.push(h);
        }
        self.hashes[j]
    }

    /// Releases every block (last first, so the tail is evicted before the shared prefix) and
    /// forgets what was computed.
    pub fn free(&mut self, alloc: &mut BlockAllocator) {
        for &b in self.blocks.iter().rev() {
            alloc.release(b);
        }
        self.blocks.clear();
        self.computed = 0;
        self.registered = 0;
    }
}

/// A request being served.
pub struct Group {
    /// Its sequences (one, except for joint decoding).
    pub seqs: Vec<Seq>,
    /// What it computes and its output.
    pub task: Box<dyn Task>,
    /// Who submitted it (the unit of fair sharing: one auction).
    pub owner: u64,
    /// Set when the request failed; it then finishes with this error.
    pub error: Option<EngineError>,
    state: GroupState,
    /// Times it was preempted.
    pub preemptions: u32,
}

impl Group {
    /// A waiting group.
    pub fn new(seqs: Vec<Seq>, task: Box<dyn Task>, owner: u64) -> Self {
        Self {
            seqs,
            task,
            owner,
            error: None,
            state: GroupState::Waiting,
            preemptions: 0,
        }
    }

    /// Its state.
    pub fn state(&self) -> GroupState {
        self.state
    }

    /// `Waiting → Running`.
    pub fn admit(&mut self) {
        debug_assert_eq!(self.state, GroupState::Waiting);
        self.state = GroupState::Running;
    }

    /// `Running → Waiting`, releasing every block.
    pub fn preempt(&mut self, alloc: &mut BlockAllocator) {
        debug_assert_eq!(self.state, GroupState::Running);
        for s in &mut self.seqs {
            s.free(alloc);
        }
        self.preemptions += 1;
        self.state = GroupState::Waiting;
    }

    /// `Running → Finished`, releasing every block.
    pub fn finish(&mut self, alloc: &mut BlockAllocator) {
        for s in &mut self.seqs {
            s.free(alloc);
        }
        self.state = GroupState::Finished;
    }
}
