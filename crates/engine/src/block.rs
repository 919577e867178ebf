//! The KV block allocator: plain data, no tensors. The model owns the KV storage (`num_blocks ·
//! block_size` slots per layer); this allocator decides which blocks belong to which sequence.
//!
//! Invariants (checked by [`BlockAllocator::check`] in the tests):
//! * every block is either *held* (reference count > 0) or *free* (count 0, on the free list), and
//!   `free + held = total`;
//! * a free block may still be *cached*: it keeps the content key of the full prompt/generation
//!   block it holds, so a later sequence with the same prefix can take it back ("touch") instead of
//!   recomputing it; it is evicted (its key forgotten) only when it is reallocated, least recently
//!   freed first;
//! * a cached key maps to exactly one block, and that block's recorded key is the key.
//!
//! Keys are exact: `(parent key hash, block tokens)`, so two sequences share a block only when
//! their whole prefixes up to the end of that block are equal (up to a 64-bit collision of the
//! parent hash chain).

use std::collections::{BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};

/// Index of a KV block.
pub type BlockId = u32;

/// The content key of a full block: the hash of everything before it, and its own tokens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlockKey {
    /// Hash of the previous block's key (0 for the first block).
    pub parent: u64,
    /// The block's tokens.
    pub tokens: Vec<u32>,
}

impl BlockKey {
    /// The key of a block with the given parent hash and tokens.
    pub fn new(parent: u64, tokens: &[u32]) -> Self {
        Self {
            parent,
            tokens: tokens.to_vec(),
        }
    }

    /// The hash chained into the next block's key.
    pub fn chain_hash(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.hash(&mut h);
        // Never 0, so that "no parent" is distinguishable.
        h.finish().max(1)
    }
}

/// Reference-counted blocks with an LRU free list and an exact-content prefix cache.
#[derive(Debug, Clone)]
pub struct BlockAllocator {
    block_size: usize,
    refs: Vec<u32>,
    key_of: Vec<Option<BlockKey>>,
    /// Free blocks in eviction order: `(tick at which it was freed, block)`.
    free: BTreeSet<(u64, BlockId)>,
    free_tick: Vec<u64>,
    cached: HashMap<BlockKey, BlockId>,
    tick: u64,
    hits: u64,
}

impl BlockAllocator {
    /// `num_blocks` blocks of `block_size` tokens, all free.
    pub fn new(num_blocks: usize, block_size: usize) -> Self {
        let mut free = BTreeSet::new();
        for b in 0..num_blocks {
            free.insert((b as u64, b as BlockId));
        }
        Self {
            block_size,
            refs: vec![0; num_blocks],
            key_of: vec![None; num_blocks],
            free,
            free_tick: (0..num_blocks as u64).collect(),
            cached: HashMap::new(),
            tick: num_blocks as u64,
            hits: 0,
        }
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Total blocks.
    pub fn num_blocks(&self) -> usize {
        self.refs.len()
    }

    /// Blocks that can be allocated now (free, cached or not).
    pub fn num_free(&self) -> usize {
        self.free.len()
    }

    /// Blocks taken from the prefix cache so far.
    pub fn cache_hits(&self) -> u64 {
        self.hits
    }

    /// Takes the least recently freed block, forgetting its cached content.
    pub fn allocate(&mut self) -> Option<BlockId> {
        let (t, b) = self.free.pop_first()?;
        debug_assert_eq!(t, self.free_tick[b as usize]);
        if let Some(key) = self.key_of[b as usize].take() {
            self.cached.remove(&key);
        }
        self.refs[b as usize] = 1;
        Some(b)
    }

    /// Takes one more reference to the cached block holding `key`, if any.
    pub fn lookup(&mut self, key: &BlockKey) -> Option<BlockId> {
        let b = *self.cached.get(key)?;
        if self.refs[b as usize] == 0 {
            self.free.remove(&(self.free_tick[b as usize], b));
        }
        self.refs[b as usize] += 1;
        self.hits += 1;
        Some(b)
    }

    /// Whether a block with this content is cached.
    pub fn contains(&self, key: &BlockKey) -> bool {
        self.cached.contains_key(key)
    }

    /// Records that held block `b` now holds the full block `key` (a no-op if that content is already
    /// cached in another block, or if `b` already has a key).
    pub fn register(&mut self, b: BlockId, key: BlockKey) {
        if self.key_of[b as usize].is_some() || self.cached.contains_key(&key) {
            return;
        }
        self.cached.insert(key.clone(), b);
        self.key_of[b as usize] = Some(key);
    }

    /// Drops one reference; at zero the block joins the free list (keeping its cached content).
    pub fn release(&mut self, b: BlockId) {
        let r = &mut self.refs[b as usize];
        debug_assert!(*r > 0, "release of a free block");
        if *r == 0 {
            return;
        }
        *r -= 1;
        if *r == 0 {
            self.tick += 1;
            self.free_tick[b as usize] = self.tick;
            self.free.insert((self.tick, b));
        }
    }

    /// Reference count of a block.
    pub fn refs(&self, b: BlockId) -> u32 {
        self.refs[b as usize]
    }

    /// Checks every invariant of the module header; returns a description of the first violation.
    pub fn check(&self) -> Result<(), String> {
        let held = self.refs.iter().filter(|&&r| r > 0).count();
        if held + self.free.len() != self.refs.len() {
            return Err(format!(
                "held {held} + free {} != total {}",
                self.free.len(),
                self.refs.len()
            ));
        }
        for &(t, b) in &self.free {
            if self.refs[b as usize] != 0 {
                return Err(format!(
                    "block {b} is on the free list with {} references",
                    self.refs[b as usize]
                ));
            }
            if self.free_tick[b as usize] != t {
                return Err(format!("block {b} has a stale free tick"));
            }
        }
        for (key, &b) in &self.cached {
            if self.key_of[b as usize].as_ref() != Some(key) {
                return Err(format!("cached key of block {b} does not match its record"));
            }
        }
        if self.key_of.iter().filter(|k| k.is_some()).count() != self.cached.len() {
            return Err("a block records a key that is not cached".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_release_and_lru_eviction() {
        let mut a = BlockAllocator::new(3, 4);
        let b0 = a.allocate().unwrap();
        let b1 = a.allocate().unwrap();
        let b2 = a.allocate().unwrap();
        assert_eq!(a.allocate(), None);
        let k0 = BlockKey::new(0, &[1, 2, 3, 4]);
        a.register(b0, k0.clone());
        a.release(b1);
        a.release(b0);
        a.check().unwrap();
        // b0 is free but cached: a lookup takes it back without allocating.
        assert_eq!(a.lookup(&k0), Some(b0));
        assert_eq!(a.refs(b0), 1);
        a.release(b0);
        // Allocation takes the least recently freed block first (b1), then evicts b0's content.
        assert_eq!(a.allocate(), Some(b1));
        assert!(a.contains(&k0));
        assert_eq!(a.allocate(), Some(b0));
        assert!(!a.contains(&k0));
        assert_eq!(a.lookup(&k0), None);
        a.release(b2);
        a.check().unwrap();
        assert_eq!(a.num_free(), 1);
    }

    #[test]
    fn keys_chain_whole_prefixes() {
        let k1 = BlockKey::new(0, &[1, 2]);
        let k2 = BlockKey::new(k1.chain_hash(), &[3, 4]);
        let other = BlockKey::new(BlockKey::new(0, &[9, 9]).chain_hash(), &[3, 4]);
        assert_ne!(k2, other);
        assert_eq!(
            k2,
            BlockKey::new(BlockKey::new(0, &[1, 2]).chain_hash(), &[3, 4])
        );
    }
}
