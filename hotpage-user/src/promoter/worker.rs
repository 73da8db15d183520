//! One round of a node's worker: walk the node's hot sections, re-verify each
//! READY page against pagemap, group by (pid, target node), check the rate
//! limit and the target's headroom, move with `move_pages(2)` in batches, and
//! account for every page.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use hotpage_common::PAGE_SIZE;

use super::{
    PromoterConfig, Targets,
    env::{Mapping, PromoterEnv, kpf},
    rate::{RateLimit, TokenBucket},
    stats::{Counter, LocalHistogram, NodeStats, errno_counter},
};
use crate::{
    hotmap::{Hint, HotMap, ReadyPage, WalkControl},
    page_migration::{MPOL_MF_MOVE, MPOL_MF_MOVE_ALL},
};

/// Rate-limit buckets per target node, shared by every node's worker: the
/// limit is per target, as the kernel's.
pub type Buckets = Arc<Mutex<HashMap<u32, TokenBucket>>>;

/// A verified page waiting for its batch.
#[derive(Clone, Copy, Debug)]
struct Pending {
    page: ReadyPage,
    hint: Hint,
    target: u32,
    /// Base pages: 512 for a PMD THP, else 1.
    pages: u64,
}

/// A target's memory as the worker last read it, less what it moved since.
#[derive(Clone, Copy, Debug)]
struct NodeMemoryView {
    total: u64,
    free: u64,
    low: u64,
}

/// How long a reading of a target's free memory stays good: the worker
/// subtracts its own moves, and others' allocations in this time are small
/// next to the headroom.
const FREE_MEMORY_TTL: std::time::Duration = std::time::Duration::from_millis(50);

/// How a round ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoundEnd {
    pub moved: u64,
    /// The rate limit or the headroom stopped it: back off before the next.
    pub limited: bool,
}

pub struct NodeWorker<E: PromoterEnv> {
    nid: u32,
    map: Arc<HotMap>,
    targets: Arc<Targets>,
    config: PromoterConfig,
    env: E,
    buckets: Buckets,
    stats: Arc<NodeStats>,
    candidates: Vec<ReadyPage>,
    pending: Vec<Pending>,
    /// Target free memory as last read, and pages moved there since.
    free_seen: HashMap<u32, (Instant, NodeMemoryView)>,
    addrs: Vec<u64>,
    nodes: Vec<i32>,
    status: Vec<i32>,
}

impl<E: PromoterEnv> NodeWorker<E> {
    pub fn new(
        nid: u32,
        map: Arc<HotMap>,
        targets: Arc<Targets>,
        config: PromoterConfig,
        env: E,
        buckets: Buckets,
        stats: Arc<NodeStats>,
    ) -> Self {
        Self {
            nid,
            map,
            targets,
            config,
            env,
            buckets,
            stats,
            candidates: Vec::new(),
            pending: Vec::new(),
            free_seen: HashMap::new(),
            addrs: Vec::new(),
            nodes: Vec::new(),
            status: Vec::new(),
        }
    }

    pub fn stats(&self) -> &Arc<NodeStats> {
        &self.stats
    }

    /// One walk of the node and the moves it leads to.
    pub fn round(&mut self, activated: bool) -> RoundEnd {
        self.stats.add(Counter::rounds, 1);
        if activated {
            self.stats.add(Counter::wakeups, 1);
        }
        let mut candidates = std::mem::take(&mut self.candidates);
        candidates.clear();
        let max = self.config.max_round_pages;
        self.map.walk_node(self.nid, |p| {
            candidates.push(p);
            if candidates.len() >= max { WalkControl::Stop } else { WalkControl::Continue }
        });
        self.stats.add(Counter::candidates, candidates.len() as u64);

        // Hints and targets for all, then group by (pid, target) in address
        // order; each batch is verified right before it moves.
        let mut queued = std::mem::take(&mut self.pending);
        queued.clear();
        self.queue(&candidates, &mut queued);
        queued.sort_unstable_by_key(|p| (p.hint.pid, p.target, p.hint.vaddr));
        let mut end = RoundEnd::default();
        let mut batch = Vec::with_capacity(self.config.batch_pages);
        let mut start = 0;
        while start < queued.len() {
            let key = (queued[start].hint.pid, queued[start].target);
            let len = queued[start..].iter().take_while(|p| (p.hint.pid, p.target) == key).count();
            for chunk in queued[start..start + len].chunks(self.config.batch_pages) {
                batch.clear();
                self.verify(chunk, &mut batch);
                if batch.is_empty() {
                    continue;
                }
                let r = self.move_batch(&batch);
                end.moved += r.moved;
                end.limited |= r.limited;
            }
            start += len;
        }
        let pending = queued;
        self.candidates = candidates;
        self.pending = pending;
        end
    }

    /// Takes each candidate's hint (locking each hint shard once) and picks
    /// its target; candidates without a hint or target are counted and dropped.
    fn queue(&mut self, candidates: &[ReadyPage], out: &mut Vec<Pending>) {
        let pfns: Vec<u64> = candidates.iter().map(|p| p.pfn).collect();
        let mut hints = Vec::new();
        self.map.hints().take_many(&pfns, &mut hints);
        for (&page, hint) in candidates.iter().zip(hints) {
            let Some(hint) = hint else {
                self.stats.add(Counter::no_hint, 1);
                continue;
            };
            let Some(target) = self.targets.pick(&page) else {
                self.stats.add(Counter::stale, 1);
                continue;
            };
            out.push(Pending { page, hint, target, pages: 1 << hint.order.min(hotpage_common::PMD_ORDER) });
        }
    }

    /// Re-checks a batch of one process right before it moves: the process
    /// lives, each hint still maps this very pfn (pfns are reused), each page
    /// is on an LRU list. pagemap and kpageflags are read in runs of
    /// consecutive pages. What passes goes to `out`, the rest is counted.
    fn verify(&mut self, chunk: &[Pending], out: &mut Vec<Pending>) {
        let Some(first) = chunk.first() else { return };
        let vaddrs: Vec<u64> = chunk.iter().map(|p| p.hint.vaddr).collect();
        let mut mapped = vec![Mapping::NotPresent; chunk.len()];
        self.env.mappings(first.hint.pid, &vaddrs, &mut mapped);

        let mut present: Vec<Pending> = Vec::with_capacity(chunk.len());
        for (p, m) in chunk.iter().zip(&mapped) {
            match *m {
                Mapping::ProcessGone => self.stats.add(Counter::process_gone, 1),
                Mapping::NotPresent => self.stats.add(Counter::stale, 1),
                Mapping::Present(pfn) if pfn != p.page.pfn => {
                    let moved = self.targets.node_of_pfn(pfn).is_some_and(|n| self.targets.is_top_tier(n));
                    self.stats.add(if moved { Counter::already_on_target } else { Counter::stale }, 1);
                }
                Mapping::Present(_) => present.push(*p),
            }
        }

        // kpageflags only when asked: move_pages refuses pages off the LRU
        // itself (EBUSY), and the folio size came with the event.
        if !self.config.check_lru {
            out.extend(present);
            return;
        }
        // kpageflags in pfn order, for runs.
        let mut by_pfn: Vec<usize> = (0..present.len()).collect();
        by_pfn.sort_unstable_by_key(|&i| present[i].page.pfn);
        let pfns: Vec<u64> = by_pfn.iter().map(|&i| present[i].page.pfn).collect();
        let mut sorted_flags = vec![None; pfns.len()];
        self.env.pages_flags(&pfns, &mut sorted_flags);
        let mut flags = vec![None; present.len()];
        for (k, &i) in by_pfn.iter().enumerate() {
            flags[i] = sorted_flags[k];
        }

        for (mut p, f) in present.into_iter().zip(flags) {
            if let Some(f) = f {
                if self.config.check_lru && f & kpf::LRU == 0 {
                    self.stats.add(Counter::not_lru, 1);
                    continue;
                }
                if f & kpf::THP != 0 && f & kpf::COMPOUND_HEAD != 0 {
                    p.pages = 1 << hotpage_common::PMD_ORDER;
                }
            }
            out.push(p);
        }
    }

    /// Puts pages back for a later round: the record READY again, the hint back.
    fn defer(&self, pages: &[Pending], why: Counter) {
        for p in pages {
            self.map.hints().insert(p.page.pfn, p.hint);
            if self.map.rearm(&p.page) {
                self.stats.add(why, p.pages);
            }
        }
    }

    /// How many base pages the target can take now: the rate limit and the
    /// headroom above its low watermark.
    fn allowance(&mut self, target: u32, want: u64) -> (u64, Option<Counter>) {
        let now = Instant::now();
        let fresh = self.free_seen.get(&target).filter(|(t, _)| now.duration_since(*t) < FREE_MEMORY_TTL);
        let view = match fresh {
            Some((_, v)) => Some(*v),
            None => self.env.node_memory(target).map(|m| {
                let v = NodeMemoryView { total: m.total, free: m.free, low: m.low };
                self.free_seen.insert(target, (now, v));
                v
            }),
        };
        let headroom = match view {
            Some(m) => m.free.saturating_sub(m.low + self.config.headroom_pages(m.total)),
            // Unknown free memory: the kernel's ENOMEM is the only guard left.
            None => u64::MAX,
        };
        let by_rate = {
            let Ok(mut buckets) = self.buckets.lock() else { return (0, Some(Counter::rate_limited)) };
            let bucket = buckets.entry(target).or_insert_with(|| TokenBucket::new(self.config.rate_limit));
            let want = want.min(headroom);
            bucket.take(want * PAGE_SIZE, PAGE_SIZE, Instant::now()) / PAGE_SIZE
        };
        let allowed = by_rate.min(headroom);
        let why = if allowed >= want {
            None
        } else if headroom < want && headroom <= by_rate {
            Some(Counter::watermark_limited)
        } else {
            Some(Counter::rate_limited)
        };
        (allowed, why)
    }

    fn move_batch(&mut self, chunk: &[Pending]) -> RoundEnd {
        let target = chunk[0].target;
        let pid = chunk[0].hint.pid;
        let want: u64 = chunk.iter().map(|p| p.pages).sum();
        if self.config.rate_limit == RateLimit::ObserveOnly {
            self.stats.add(Counter::would_promote, want);
            return RoundEnd::default();
        }
        let (allowed, why) = self.allowance(target, want);
        // The longest prefix that fits; the rest waits.
        let mut fit = 0;
        let mut used = 0;
        for p in chunk {
            if used + p.pages > allowed {
                break;
            }
            used += p.pages;
            fit += 1;
        }
        if let Ok(mut b) = self.buckets.lock()
            && let Some(bucket) = b.get_mut(&target)
        {
            bucket.refund((allowed - used) * PAGE_SIZE);
        }
        let (go, wait) = chunk.split_at(fit);
        if !wait.is_empty() {
            self.defer(wait, why.unwrap_or(Counter::rate_limited));
        }
        let mut end = RoundEnd { moved: 0, limited: !wait.is_empty() };
        if go.is_empty() {
            return end;
        }

        self.addrs.clear();
        self.addrs.extend(go.iter().map(|p| p.hint.vaddr));
        self.nodes.clear();
        self.nodes.resize(go.len(), target as i32);
        self.status.clear();
        self.status.resize(go.len(), 0);
        let flags = if self.config.move_shared { MPOL_MF_MOVE_ALL } else { MPOL_MF_MOVE };
        self.stats.add(Counter::move_calls, 1);
        let result = self.env.move_pages(pid, &self.addrs, Some(&self.nodes), &mut self.status, flags);
        let now = self.env.now_tick();
        match result {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                self.stats.add(Counter::err_esrch, used);
            }
            Err(e) => {
                self.stats.add(Counter::call_errors, 1);
                self.stats.add(errno_counter(e.raw_os_error().unwrap_or(0)), used);
                tracing::warn!(pid, target, "move_pages failed: {e}");
            }
            Ok(not_migrated) => {
                if not_migrated > 0 {
                    // The statuses of pages a failed batch did not migrate may
                    // still name the target; ask where they really are.
                    self.stats.add(Counter::not_migrated, not_migrated);
                    let mut actual = vec![0; go.len()];
                    if self.env.move_pages(pid, &self.addrs, None, &mut actual, 0).is_ok() {
                        self.status.copy_from_slice(&actual);
                    }
                }
                let mut latencies = LocalHistogram::default();
                for (p, &st) in go.iter().zip(&self.status) {
                    if st == target as i32 {
                        end.moved += p.pages;
                        latencies.observe(now.saturating_sub(p.hint.tick));
                    } else if st < 0 {
                        self.stats.add(errno_counter(-st), p.pages);
                        // Busy is transient: retry once; a page busy twice waits for
                        // its next accesses, as in the kernel.
                        if -st == libc::EBUSY && self.config.rearm_busy && p.hint.retries == 0 {
                            let mut again = *p;
                            again.hint.retries += 1;
                            self.defer(std::slice::from_ref(&again), Counter::rearmed);
                        }
                    }
                }
                self.stats.latency.add(&latencies);
                self.stats.add_process(pid, end.moved, |p| self.env.process_alive(p));
                self.stats.add(Counter::moved, end.moved);
                self.stats.add(Counter::moved_bytes, end.moved * PAGE_SIZE);
                if let Some((_, v)) = self.free_seen.get_mut(&target) {
                    v.free = v.free.saturating_sub(end.moved);
                }
            }
        }
        end
    }
}
