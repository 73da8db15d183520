//! What each node's promoter did: counters (every outcome of a candidate page,
//! every per-page errno of move_pages) and a promotion-latency histogram.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

crate::counter_set! {
    /// A snapshot of one node's counters.
    pub struct CounterSnapshot, ids Counter, shared NodeCounters {
    rounds: "walks of the node's flagged sections",
    wakeups: "rounds started by the node's activate flag rather than the timer",
    limited_rounds: "rounds that walked nothing because every target was full or out of rate",
    kswapd_wakes: "small batches sent to a demoting target under its floor, whose allocation wakes kswapd",
    idle_rounds: "rounds that found nothing READY on the node: no room check, no walk",
    candidates: "READY records taken from the hot map",
    no_hint: "candidates without a (pid, vaddr) hint (evicted from the hint table)",
    process_gone: "candidates whose process had exited before the move",
    stale: "candidates whose hint no longer maps the page (re-verified in pagemap)",
    already_on_target: "candidates whose page had moved to a top-tier node already",
    not_lru: "candidates not on an LRU list (kpageflags)",
    would_promote: "pages observe-only mode would have moved",
    rate_limited: "pages deferred by the rate limit (their records re-armed)",
    watermark_limited: "pages deferred to keep the target above its low watermark plus headroom",
    colder_deferred: "pages deferred because hotter ones took the room the target had",
    moved: "base pages promoted",
    moved_bytes: "bytes promoted",
    move_calls: "move_pages calls",
    not_migrated: "pages move_pages reported as not migrated (sum of its positive return values)",
    left_on_node: "pages whose migration failed without an errno (still on their node after the call)",
    on_other_node: "pages a move_pages status places on a node that is neither theirs nor the target",
    status_unknown: "pages whose status neither the call nor the follow-up query gave (never counted as moved)",
    rearmed: "records re-armed after a transient failure",
    err_ebusy: "pages move_pages refused with EBUSY (page busy or pinned)",
    err_enomem: "pages refused with ENOMEM (target node out of memory)",
    err_eacces: "pages refused with EACCES (mapped by several processes)",
    err_efault: "pages refused with EFAULT (bad address, zero page)",
    err_enoent: "pages refused with ENOENT (not present, or not migratable)",
    err_esrch: "pages of processes that exited during the call (ESRCH, or EINVAL with their memory gone)",
    err_other: "pages refused with any other errno",
    call_errors: "move_pages calls that failed as a whole (other than a process's exit: see err_esrch)",
    }
}

/// Upper bounds (ms) of the latency histogram's buckets; the last is open.
pub const LATENCY_BUCKETS_MS: [u64; 15] =
    [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 30_000, 60_000];

/// Time from a page becoming ready to its move.
#[derive(Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    sum_ms: AtomicU64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct LatencySnapshot {
    /// Counts per bucket of [`LATENCY_BUCKETS_MS`], then the overflow bucket.
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum_ms: u64,
}

fn bucket_of(ms: u64) -> usize {
    LATENCY_BUCKETS_MS.iter().position(|&b| ms <= b).unwrap_or(LATENCY_BUCKETS_MS.len())
}

/// Latencies gathered over a batch, added to the shared histogram at once.
#[derive(Default)]
pub struct LocalHistogram {
    buckets: [u64; LATENCY_BUCKETS_MS.len() + 1],
    sum_ms: u64,
}

impl LocalHistogram {
    pub fn observe(&mut self, ms: u64) {
        self.buckets[bucket_of(ms)] += 1;
        self.sum_ms += ms;
    }
}

impl LatencyHistogram {
    pub fn observe(&self, ms: u64) {
        self.buckets[bucket_of(ms)].fetch_add(1, Relaxed);
        self.sum_ms.fetch_add(ms, Relaxed);
    }

    pub fn add(&self, local: &LocalHistogram) {
        for (b, &n) in self.buckets.iter().zip(&local.buckets) {
            if n > 0 {
                b.fetch_add(n, Relaxed);
            }
        }
        self.sum_ms.fetch_add(local.sum_ms, Relaxed);
    }

    pub fn snapshot(&self) -> LatencySnapshot {
        let buckets: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        LatencySnapshot { count: buckets.iter().sum(), buckets, sum_ms: self.sum_ms.load(Relaxed) }
    }
}

impl LatencySnapshot {
    /// The bucket bound below which `q` (0..=1) of the observations fall; None without any.
    pub fn quantile_ms(&self, q: f64) -> Option<u64> {
        crate::rule::latency::quantile_bucket(&self.buckets, self.count, q)
            .map(|i| LATENCY_BUCKETS_MS.get(i).copied().unwrap_or(u64::MAX))
    }

    pub fn merge(&mut self, other: &Self) {
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.sum_ms += other.sum_ms;
    }
}

/// Processes tracked per node before the dead ones are dropped.
const MAX_PROCESSES: usize = 4096;

/// One node worker's counters and histogram, shared with readers.
#[derive(Default)]
pub struct NodeStats {
    counters: NodeCounters,
    pub latency: LatencyHistogram,
    /// Base pages promoted per process (for `hotpage top`).
    by_pid: std::sync::Mutex<std::collections::HashMap<u32, u64>>,
}

impl NodeStats {
    /// Counts pages promoted for `pid` (once per batch). When the table grows
    /// past its bound, processes that no longer exist are dropped.
    pub fn add_process(&self, pid: u32, pages: u64, alive: impl Fn(u32) -> bool) {
        if pages == 0 {
            return;
        }
        let Ok(mut m) = self.by_pid.lock() else { return };
        *m.entry(pid).or_default() += pages;
        if m.len() > MAX_PROCESSES {
            m.retain(|&p, _| alive(p));
        }
    }

    pub fn processes(&self) -> std::collections::HashMap<u32, u64> {
        self.by_pid.lock().map(|m| m.clone()).unwrap_or_default()
    }

    pub fn add(&self, c: Counter, n: u64) {
        self.counters.add(c, n);
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        self.counters.snapshot()
    }
}

/// The counter for a per-page errno from move_pages.
pub fn errno_counter(errno: i32) -> Counter {
    match errno {
        libc::EBUSY => Counter::err_ebusy,
        libc::ENOMEM => Counter::err_enomem,
        libc::EACCES => Counter::err_eacces,
        libc::EFAULT => Counter::err_efault,
        libc::ENOENT => Counter::err_enoent,
        libc::ESRCH => Counter::err_esrch,
        _ => Counter::err_other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_bucket_bounds() {
        let h = LatencyHistogram::default();
        for ms in [0, 1, 3, 3, 4, 40, 90, 150, 150, 7000] {
            h.observe(ms);
        }
        let s = h.snapshot();
        assert_eq!(s.count, 10);
        assert_eq!(s.quantile_ms(0.5), Some(5), "5 of 10 are ≤ 5 ms");
        assert_eq!(s.quantile_ms(0.99), Some(10_000));
        assert_eq!(s.sum_ms, 7441);
        assert_eq!(LatencySnapshot::default().quantile_ms(0.5), None);
    }

    #[test]
    fn counters_by_name() {
        let s = NodeStats::default();
        s.add(Counter::moved, 3);
        s.add(errno_counter(libc::EBUSY), 2);
        s.add(errno_counter(libc::E2BIG), 1);
        let snap = s.snapshot();
        assert_eq!((snap.moved, snap.err_ebusy, snap.err_other), (3, 2, 1));
        assert_eq!(snap.get(Counter::moved), 3);
        assert_eq!(Counter::NAMES.len(), Counter::HELP.len());
        assert_eq!(Counter::NAMES[Counter::err_esrch as usize], "err_esrch");
    }
}
