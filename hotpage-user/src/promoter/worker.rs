//! One round of a node's worker: walk the node's hot sections, take each
//! READY page's hint, group by (pid, target node), reserve room on the target
//! (rate limit and headroom), re-verify what may move against pagemap, move
//! with `move_pages(2)` in batches, and account for every page once.

use std::sync::Arc;

use hotpage_common::{PAGE_SIZE, folio_pages};

use super::{
    PromoterConfig, Targets,
    ledger::TargetLedger,
    rate::RateLimit,
    stats::{Counter, LocalHistogram, NodeStats, errno_counter},
    system::{Mapping, PromoterSystem, kpf},
};
use crate::{
    hotmap::{Hint, HotMap, ReadyPage, WalkControl},
    promoter::move_pages::{MPOL_MF_MOVE, MPOL_MF_MOVE_ALL},
    rule::PageScores,
};

/// A status the kernel never writes (it writes a node or a negative errno):
/// the page's status was left as it was given.
const NOT_WRITTEN: i32 = i32::MIN;

/// A verified page waiting for its batch.
#[derive(Clone, Copy, Debug)]
struct Pending {
    page: ReadyPage,
    hint: Hint,
    target: u32,
    /// Base pages of the folio: 1 << its order.
    pages: u64,
}

/// How a round ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoundEnd {
    pub moved: u64,
    /// The rate limit or the headroom stopped it: back off before the next.
    pub limited: bool,
}

pub struct NodeWorker<E: PromoterSystem> {
    nid: u32,
    map: Arc<HotMap>,
    targets: Arc<Targets>,
    config: PromoterConfig,
    env: E,
    ledger: TargetLedger,
    stats: Arc<NodeStats>,
    /// The hotness rule's page scores: the hottest go first when the room is short.
    scores: Option<Arc<PageScores>>,
    candidates: Vec<ReadyPage>,
    pending: Vec<Pending>,
    addrs: Vec<u64>,
    nodes: Vec<i32>,
    status: Vec<i32>,
}

impl<E: PromoterSystem> NodeWorker<E> {
    pub fn new(
        nid: u32,
        map: Arc<HotMap>,
        targets: Arc<Targets>,
        config: PromoterConfig,
        env: E,
        ledger: TargetLedger,
        stats: Arc<NodeStats>,
    ) -> Self {
        Self {
            nid,
            map,
            targets,
            config,
            env,
            ledger,
            stats,
            scores: None,
            candidates: Vec::new(),
            pending: Vec::new(),
            addrs: Vec::new(),
            nodes: Vec::new(),
            status: Vec::new(),
        }
    }

    pub fn stats(&self) -> &Arc<NodeStats> {
        &self.stats
    }

    /// Sends the pages with the best (lowest latency) scores first.
    pub fn ranked_by(mut self, scores: Option<Arc<PageScores>>) -> Self {
        self.scores = scores;
        self
    }

    /// Hottest first: when a target can take fewer pages now than are queued
    /// for it, keeps the hottest that fit and puts the others back READY for
    /// a later round. Pages without a score (no latency) rank after scored ones.
    fn keep_hottest(&mut self, queued: &mut Vec<Pending>) -> bool {
        let Some(scores) = &self.scores else { return false };
        let now = self.env.now_tick();
        let mut room: std::collections::HashMap<u32, Option<u64>> = std::collections::HashMap::new();
        let mut want: std::collections::HashMap<u32, u64> = std::collections::HashMap::new();
        for p in queued.iter() {
            *want.entry(p.target).or_default() += p.pages;
        }
        let (ledger, env) = (&self.ledger, &mut self.env);
        for &t in want.keys() {
            room.insert(t, ledger.available(t, now, || env.node_memory(t)));
        }
        if want.iter().all(|(t, w)| room[t].is_none_or(|r| r >= *w)) {
            return false;
        }
        let rank = |p: &Pending| scores.get(p.page.pfn).map_or(u8::MAX, |s| s.class());
        queued.sort_by_cached_key(rank);
        let mut kept = Vec::with_capacity(queued.len());
        let mut later = Vec::new();
        for p in queued.drain(..) {
            match room.get_mut(&p.target).and_then(|r| r.as_mut()) {
                Some(r) if *r < p.pages => later.push(p),
                Some(r) => {
                    *r -= p.pages;
                    kept.push(p);
                }
                None => kept.push(p),
            }
        }
        self.defer(&later, Counter::colder_deferred);
        *queued = kept;
        !later.is_empty()
    }

    /// Whether some node this node promotes to can take a page now.
    fn a_target_has_room(&mut self) -> bool {
        let now = self.env.now_tick();
        let (ledger, env) = (&self.ledger, &mut self.env);
        self.targets.possible(self.nid).into_iter().any(|t| ledger.has_room(t, now, || env.node_memory(t)))
    }

    /// One walk of the node and the moves it leads to.
    pub fn round(&mut self, activated: bool) -> RoundEnd {
        self.stats.add(Counter::rounds, 1);
        if activated {
            self.stats.add(Counter::wakeups, 1);
        }
        // Nothing READY on the node (a kept count, one load): nothing to walk,
        // and no need to read the targets' free memory. Idle rounds read it
        // every `sleep_ms`: 1.4-1.6 CPU s of a 40 s box run under TCG.
        if self.map.ready_pages(self.nid) == 0 {
            self.stats.add(Counter::idle_rounds, 1);
            return RoundEnd { moved: 0, limited: false };
        }
        // While every target is full or out of tokens nothing can move: the
        // READY records stay where they are (their sections stay flagged) and
        // the round costs no walk and no pagemap read.
        if self.config.rate_limit != RateLimit::ObserveOnly && !self.a_target_has_room() {
            self.stats.add(Counter::limited_rounds, 1);
            return RoundEnd { moved: 0, limited: true };
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
        // order; each batch reserves room, then is verified right before it moves.
        let mut queued = std::mem::take(&mut self.pending);
        queued.clear();
        self.queue(&candidates, &mut queued);
        let deferred = self.config.rate_limit != RateLimit::ObserveOnly && self.keep_hottest(&mut queued);
        // Candidates of one process come in address order often enough to check
        // first; sorting small (key, index) pairs beats moving whole entries.
        let key = |p: &Pending| (p.hint.pid, p.target, p.hint.vaddr);
        if !queued.is_sorted_by_key(key) {
            queued.sort_by_cached_key(key);
        }
        let mut end = RoundEnd { moved: 0, limited: deferred };
        let mut start = 0;
        while start < queued.len() {
            let key = (queued[start].hint.pid, queued[start].target);
            let len = queued[start..].iter().take_while(|p| (p.hint.pid, p.target) == key).count();
            for chunk in queued[start..start + len].chunks(self.config.batch_pages) {
                let r = self.promote(chunk);
                end.moved += r.moved;
                end.limited |= r.limited;
            }
            start += len;
        }
        self.candidates = candidates;
        self.pending = queued;
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
            out.push(Pending { page, hint, target, pages: folio_pages(hint.order) });
        }
    }

    /// Re-checks a batch of one process right before it moves: the process
    /// lives, each hint still maps this very pfn (pfns are reused; for a large
    /// folio the hint is its first page's address and pfn), and, with
    /// `check_lru`, each page is on an LRU list. pagemap and kpageflags are
    /// read in runs of consecutive pages. What passes goes to `out`, the rest
    /// is counted.
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
                if f & kpf::LRU == 0 {
                    self.stats.add(Counter::not_lru, 1);
                    continue;
                }
                if f & kpf::THP != 0 && f & kpf::COMPOUND_HEAD != 0 {
                    p.pages = p.pages.max(1 << hotpage_common::PMD_ORDER);
                }
            }
            out.push(p);
        }
    }

    /// Puts pages back for a later round: the hint back, the record READY
    /// again (without waking this worker).
    fn defer(&self, pages: &[Pending], why: Counter) {
        for p in pages {
            self.map.hints().insert(p.page.pfn, p.hint);
            if self.map.rearm(&p.page) {
                self.stats.add(why, p.pages);
            }
        }
    }

    /// One batch of one process to one target: reserve, verify, move, account.
    fn promote(&mut self, chunk: &[Pending]) -> RoundEnd {
        let target = chunk[0].target;
        let want: u64 = chunk.iter().map(|p| p.pages).sum();
        if self.config.rate_limit == RateLimit::ObserveOnly {
            self.stats.add(Counter::would_promote, want);
            return RoundEnd::default();
        }
        let now = self.env.now_tick();
        let grant = {
            let env = &mut self.env;
            self.ledger.reserve(target, want, now, || env.node_memory(target))
        };
        if grant.wakes_kswapd {
            self.stats.add(Counter::kswapd_wakes, 1);
        }
        // The longest prefix that fits; the rest waits, unverified.
        let mut fit = 0;
        let mut used = 0;
        for p in chunk {
            if used + p.pages > grant.pages {
                break;
            }
            used += p.pages;
            fit += 1;
        }
        let (go, wait) = chunk.split_at(fit);
        if !wait.is_empty() {
            self.defer(wait, grant.limit.unwrap_or(Counter::rate_limited));
        }
        let mut batch = Vec::with_capacity(go.len());
        self.verify(go, &mut batch);
        let sent: u64 = batch.iter().map(|p| p.pages).sum();
        let moved = if batch.is_empty() { 0 } else { self.move_batch(&batch) };
        self.ledger.settle(target, grant.pages, sent, moved);
        RoundEnd { moved, limited: !wait.is_empty() }
    }

    /// `move_pages` for a verified batch, and every page's status counted
    /// exactly once. Returns the base pages moved.
    fn move_batch(&mut self, go: &[Pending]) -> u64 {
        let target = go[0].target;
        let pid = go[0].hint.pid;
        let pages: u64 = go.iter().map(|p| p.pages).sum();
        self.addrs.clear();
        self.addrs.extend(go.iter().map(|p| p.hint.vaddr));
        self.nodes.clear();
        self.nodes.resize(go.len(), target as i32);
        self.status.clear();
        self.status.resize(go.len(), NOT_WRITTEN);
        let flags = if self.config.move_shared { MPOL_MF_MOVE_ALL } else { MPOL_MF_MOVE };
        self.stats.add(Counter::move_calls, 1);
        let started = self.env.now_tick();
        let result = self.env.move_pages(pid, &self.addrs, Some(&self.nodes), &mut self.status, flags);
        let now = self.env.now_tick();
        // The call held the process (its pages unmapped meanwhile): the
        // rule takes this time off its latencies.
        if let (Ok(_), Some(s)) = (&result, &self.scores) {
            s.note_move(pid, started, now);
        }
        match result {
            // EINVAL: the process is exiting, its memory already gone
            // (find_mm_struct finds the task but no mm): an exit as ESRCH is.
            Err(e)
                if e.raw_os_error() == Some(libc::ESRCH)
                    || (e.raw_os_error() == Some(libc::EINVAL)
                        && self.env.mapping(pid, go[0].hint.vaddr) == Mapping::ProcessGone) =>
            {
                self.stats.add(Counter::err_esrch, pages);
                return 0;
            }
            Err(e) => {
                self.stats.add(Counter::call_errors, 1);
                self.stats.add(errno_counter(e.raw_os_error().unwrap_or(0)), pages);
                tracing::warn!(pid, target, "move_pages failed: {e}");
                return 0;
            }
            Ok(not_migrated) => self.stats.add(Counter::not_migrated, not_migrated),
        }
        // When some pages fail to migrate, the kernel returns before writing
        // the statuses of the pages it was moving with them and of those after:
        // ask where those are. Errnos it wrote for others stay as written.
        let unwritten: Vec<usize> = (0..go.len()).filter(|&i| self.status[i] == NOT_WRITTEN).collect();
        if !unwritten.is_empty() {
            let addrs: Vec<u64> = unwritten.iter().map(|&i| self.addrs[i]).collect();
            let mut actual = vec![NOT_WRITTEN; addrs.len()];
            if self.env.move_pages(pid, &addrs, None, &mut actual, 0).is_ok() {
                for (&i, &st) in unwritten.iter().zip(&actual) {
                    self.status[i] = st;
                }
            }
        }
        let mut moved = 0;
        let mut latencies = LocalHistogram::default();
        for (p, &st) in go.iter().zip(&self.status) {
            let retry = if st == target as i32 {
                moved += p.pages;
                // The page left the lower tier: a later page at this pfn starts afresh.
                if let Some(s) = &self.scores {
                    s.clear(p.page.pfn);
                }
                latencies.observe(now.saturating_sub(p.hint.tick));
                false
            } else if st == NOT_WRITTEN {
                // Neither the move nor the query said: never counted as moved.
                self.stats.add(Counter::status_unknown, p.pages);
                false
            } else if st < 0 {
                self.stats.add(errno_counter(-st), p.pages);
                -st == libc::EBUSY
            } else if st as u32 == p.page.node {
                // Still on its node with no errno: the migration itself failed
                // (busy, or no memory for the folio on the target).
                self.stats.add(Counter::left_on_node, p.pages);
                true
            } else {
                self.stats.add(Counter::on_other_node, p.pages);
                false
            };
            // A transient failure: retry once; a page that fails twice waits
            // for its next accesses, as in the kernel.
            if retry && self.config.rearm_busy && p.hint.retries == 0 {
                let mut again = *p;
                again.hint.retries += 1;
                self.defer(std::slice::from_ref(&again), Counter::rearmed);
            }
        }
        self.stats.latency.add(&latencies);
        self.stats.add_process(pid, moved, |p| self.env.process_alive(p));
        self.stats.add(Counter::moved, moved);
        self.stats.add(Counter::moved_bytes, moved * PAGE_SIZE);
        moved
    }
}
