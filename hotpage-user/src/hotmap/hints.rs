//! Bounded pfn → (pid, vaddr) hints for pages that may be promoted.
//!
//! The kernel migrates by pfn; userspace can only ask `move_pages(2)` to move
//! a virtual page of a process. Each event carries `(pid, vaddr)`, and the
//! collector keeps it here when a page becomes ready. The table is bounded:
//! past its capacity the oldest hint goes (counted), and the page simply waits
//! for its next access to bring a fresh one.

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasherDefault, Hasher},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

/// Where a page was last seen mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hint {
    pub pid: u32,
    /// Folio order the hook saw (9 for a PMD THP), for the pages a move counts.
    pub order: u8,
    /// Moves already retried after a transient failure.
    pub retries: u8,
    pub vaddr: u64,
    /// When the page became a candidate (ms ticks), for promotion latency.
    pub tick: u64,
}

impl Hint {
    pub fn new(pid: u32, vaddr: u64, tick: u64, order: u8) -> Self {
        Self { pid, order, retries: 0, vaddr, tick }
    }
}

const SHARDS: usize = 64;

/// pfns are already well spread; one multiply mixes them enough, where
/// SipHash would cost more than the rest of a lookup.
#[derive(Default)]
pub struct PfnHasher(u64);

/// A map keyed by a pfn (or another well-spread u64), hashed by `PfnHasher`.
pub type PfnMap<V> = HashMap<u64, V, BuildHasherDefault<PfnHasher>>;

impl Hasher for PfnHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ (n >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    }
}

#[derive(Default)]
struct Shard {
    map: HashMap<u64, (Hint, u64), BuildHasherDefault<PfnHasher>>,
    /// Insertion order as (pfn, sequence); entries whose sequence no longer
    /// matches the map are stale and skipped.
    fifo: VecDeque<(u64, u64)>,
    next_seq: u64,
}

pub struct HintTable {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    evictions: AtomicU64,
}

fn shard_of(pfn: u64) -> usize {
    (pfn.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize % SHARDS
}

impl HintTable {
    /// A table holding at most `capacity` hints (rounded up to a multiple of 64).
    pub fn new(capacity: usize) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard,
            evictions: AtomicU64::new(0),
        }
    }

    pub fn capacity(&self) -> usize {
        self.per_shard * SHARDS
    }

    /// Records the hint of `pfn`, or refreshes its mapping while keeping the
    /// tick it first became a candidate; evicts the oldest of its shard when full.
    pub fn insert(&self, pfn: u64, hint: Hint) {
        let Ok(mut s) = self.shards[shard_of(pfn)].lock() else { return };
        let s = &mut *s;
        s.next_seq += 1;
        let seq = s.next_seq;
        let hint = match s.map.get(&pfn) {
            Some((old, _)) => {
                Hint { tick: old.tick.min(hint.tick), retries: old.retries.max(hint.retries), ..hint }
            }
            None => hint,
        };
        let fresh = s.map.insert(pfn, (hint, seq)).is_none();
        s.fifo.push_back((pfn, seq));
        if fresh && s.map.len() > self.per_shard {
            while let Some((old, old_seq)) = s.fifo.pop_front() {
                if s.map.get(&old).is_some_and(|(_, q)| *q == old_seq) {
                    s.map.remove(&old);
                    self.evictions.fetch_add(1, Relaxed);
                    break;
                }
            }
        }
        // Refreshes leave stale FIFO entries behind; keep the queue bounded too.
        if s.fifo.len() > 2 * self.per_shard + 16 {
            let map = &s.map;
            s.fifo.retain(|(p, q)| map.get(p).is_some_and(|(_, mq)| mq == q));
        }
    }

    /// Removes and returns the hint of `pfn`.
    pub fn take(&self, pfn: u64) -> Option<Hint> {
        self.shards[shard_of(pfn)].lock().ok()?.map.remove(&pfn).map(|(h, _)| h)
    }

    /// `take()` for many pfns, locking each shard once. `out[i]` gets the
    /// hint of `pfns[i]`.
    pub fn take_many(&self, pfns: &[u64], out: &mut Vec<Option<Hint>>) {
        out.clear();
        out.resize(pfns.len(), None);
        // Indices grouped by shard with a counting sort: one pass to count,
        // one to place.
        let mut start = [0usize; SHARDS + 1];
        for &p in pfns {
            start[shard_of(p) + 1] += 1;
        }
        for s in 0..SHARDS {
            start[s + 1] += start[s];
        }
        let mut next = start;
        let mut by_shard = vec![0usize; pfns.len()];
        for (i, &p) in pfns.iter().enumerate() {
            let s = shard_of(p);
            by_shard[next[s]] = i;
            next[s] += 1;
        }
        for s in 0..SHARDS {
            let (a, b) = (start[s], start[s + 1]);
            if a == b {
                continue;
            }
            let Ok(mut shard) = self.shards[s].lock() else { continue };
            for &i in &by_shard[a..b] {
                out[i] = shard.map.remove(&pfns[i]).map(|(h, _)| h);
            }
        }
    }

    pub fn get(&self, pfn: u64) -> Option<Hint> {
        self.shards[shard_of(pfn)].lock().ok()?.map.get(&pfn).map(|(h, _)| *h)
    }

    /// Hints per process (ready pages waiting for the promoter).
    pub fn count_by_pid(&self) -> HashMap<u32, u64> {
        let mut out = HashMap::new();
        for s in self.shards.iter() {
            if let Ok(s) = s.lock() {
                for (h, _) in s.map.values() {
                    *out.entry(h.pid).or_default() += 1;
                }
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map(|s| s.map.len()).unwrap_or(0)).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hints dropped because the table was full.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Relaxed)
    }

    /// Upper bound of the table's memory at full capacity, in bytes: the map
    /// entry with hashbrown's 7/8 load factor and control byte, and two FIFO
    /// slots (the queue is compacted at twice the capacity).
    pub fn max_bytes(&self) -> usize {
        let entry = size_of::<(u64, (Hint, u64))>() + 1;
        let fifo = 2 * size_of::<(u64, u64)>();
        self.capacity() * (entry * 8 / 7 + fifo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pid: u32) -> Hint {
        Hint::new(pid, u64::from(pid) << 12, 0, 0)
    }

    #[test]
    fn insert_get_take() {
        let t = HintTable::new(1024);
        t.insert(7, h(1));
        t.insert(7, Hint { tick: 50, ..h(2) });
        assert_eq!(t.get(7), Some(h(2)), "refresh keeps the newest mapping and the first tick");
        assert_eq!(t.len(), 1);
        assert_eq!(t.take(7), Some(h(2)));
        assert_eq!(t.take(7), None);
        assert!(t.is_empty());
    }

    #[test]
    fn take_many_is_take_for_each() {
        let t = HintTable::new(4096);
        for pfn in (0..2000).step_by(3) {
            t.insert(pfn, h(pfn as u32));
        }
        let pfns: Vec<u64> = (0..300).rev().collect();
        let mut out = Vec::new();
        t.take_many(&pfns, &mut out);
        for (pfn, got) in pfns.iter().zip(&out) {
            assert_eq!(*got, (pfn % 3 == 0).then(|| h(*pfn as u32)), "{pfn}");
        }
        assert!(t.get(297).is_none(), "taken");
        assert!(t.get(300).is_some(), "not asked for");
    }

    #[test]
    fn bounded_with_counted_evictions() {
        let t = HintTable::new(64 * 4);
        for pfn in 0..10_000u64 {
            t.insert(pfn, h(pfn as u32));
        }
        assert!(t.len() <= t.capacity(), "{} > {}", t.len(), t.capacity());
        assert_eq!(t.evictions() as usize + t.len(), 10_000);
        // The newest survive, the oldest went first.
        assert!(t.get(9_999).is_some());
        assert!(t.get(0).is_none());
    }

    #[test]
    fn refreshes_do_not_grow_the_queue_without_bound() {
        let t = HintTable::new(64);
        for i in 0..100_000u64 {
            t.insert(i % 32, h(i as u32));
        }
        let longest = t.shards.iter().map(|s| s.lock().unwrap().fifo.len()).max().unwrap();
        assert!(longest <= 2 * t.per_shard + 17, "{longest}");
        assert_eq!(t.evictions(), 0, "32 distinct pfns fit");
    }

    #[test]
    fn memory_bound_is_proportional_to_capacity() {
        let small = HintTable::new(1 << 10).max_bytes();
        let big = HintTable::new(1 << 20).max_bytes();
        assert_eq!(big / small, 1 << 10);
        assert!(big < 128 << 20, "1M hints stay under 128 MiB: {big}");
    }
}
