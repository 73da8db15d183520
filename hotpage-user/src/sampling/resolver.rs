//! Samples without a physical address (software events, PMUs that give none)
//! carry pid + vaddr only. This consumer stage, between the collector and the
//! hot map, finds their pfn in `/proc/<pid>/pagemap`, keeps those on a
//! lower-tier node, and passes everything else through untouched.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

use hotpage_common::{HotpageEvent, PfnRange, event_flags};
use serde::{Deserialize, Serialize};

use crate::{collector::EventConsumer, pagemap::Pagemap};

/// Open pagemap files kept at most; beyond that the cache starts over.
const MAX_OPEN: usize = 256;

/// What became of the samples that needed a pfn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolveStats {
    /// Found on a lower-tier node and passed on.
    pub resolved: u64,
    /// The page is on a top-tier node (or outside every lower-tier range).
    pub not_lower_tier: u64,
    /// Not mapped (yet, or any more), or swapped out.
    pub not_present: u64,
    /// The process had exited, or its pagemap could not be read.
    pub process_gone: u64,
}

#[derive(Default)]
pub struct ResolveCounters([AtomicU64; 4]);

impl ResolveCounters {
    pub fn snapshot(&self) -> ResolveStats {
        let v: Vec<u64> = self.0.iter().map(|c| c.load(Relaxed)).collect();
        ResolveStats { resolved: v[0], not_lower_tier: v[1], not_present: v[2], process_gone: v[3] }
    }
}

pub struct PfnResolver<C> {
    next: C,
    root: PathBuf,
    /// Lower-tier `[start, end)` pfn ranges with their node, sorted.
    ranges: Vec<(u64, u64, i32)>,
    maps: HashMap<u32, Option<Pagemap>>,
    stats: ResolveStats,
    published: Arc<ResolveCounters>,
    out: Vec<HotpageEvent>,
}

impl<C: EventConsumer> PfnResolver<C> {
    /// `ranges`: the lower-tier pfn ranges, as the BPF tier filter takes them.
    pub fn new(next: C, root: &Path, ranges: &[PfnRange]) -> Self {
        let mut ranges: Vec<(u64, u64, i32)> =
            ranges.iter().map(|r| (r.start_pfn, r.end_pfn, r.nid)).collect();
        ranges.sort_unstable();
        Self {
            next,
            root: root.to_owned(),
            ranges,
            maps: HashMap::new(),
            stats: ResolveStats::default(),
            published: Arc::default(),
            out: Vec::with_capacity(256),
        }
    }

    pub fn counters(&self) -> Arc<ResolveCounters> {
        self.published.clone()
    }

    pub fn next(&self) -> &C {
        &self.next
    }

    fn node_of(&self, pfn: u64) -> Option<i32> {
        let i = self.ranges.partition_point(|r| r.0 <= pfn);
        let r = self.ranges.get(i.checked_sub(1)?)?;
        (pfn < r.1).then_some(r.2)
    }

    /// The event with its pfn and node, or None (counted).
    fn resolve(&mut self, ev: &HotpageEvent) -> Option<HotpageEvent> {
        if self.maps.len() >= MAX_OPEN && !self.maps.contains_key(&ev.pid) {
            self.maps.clear();
        }
        let root = &self.root;
        let map = self.maps.entry(ev.pid).or_insert_with(|| Pagemap::open(root, ev.pid).ok());
        let Some(pm) = map else {
            self.stats.process_gone += 1;
            return None;
        };
        let entry = match pm.entry(ev.vaddr) {
            Ok(e) => e,
            Err(_) => {
                // The process exited since its file was opened.
                self.maps.remove(&ev.pid);
                self.stats.process_gone += 1;
                return None;
            }
        };
        let Some(pfn) = entry.pfn().filter(|_| entry.present()) else {
            self.stats.not_present += 1;
            return None;
        };
        let Some(nid) = self.node_of(pfn) else {
            self.stats.not_lower_tier += 1;
            return None;
        };
        self.stats.resolved += 1;
        Some(HotpageEvent { pfn, page_nid: nid, flags: ev.flags & !event_flags::NEED_PFN, ..*ev })
    }
}

impl<C: EventConsumer> EventConsumer for PfnResolver<C> {
    fn consume(&mut self, ev: &HotpageEvent) {
        self.consume_batch(std::slice::from_ref(ev));
    }

    fn consume_batch(&mut self, events: &[HotpageEvent]) {
        if events.iter().all(|e| e.flags & event_flags::NEED_PFN == 0) {
            self.next.consume_batch(events);
            return;
        }
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        for ev in events {
            if ev.flags & event_flags::NEED_PFN == 0 {
                out.push(*ev);
            } else if let Some(r) = self.resolve(ev) {
                out.push(r);
            }
        }
        if !out.is_empty() {
            self.next.consume_batch(&out);
        }
        self.out = out;
    }

    fn drained(&mut self) {
        let s = self.stats;
        for (slot, v) in
            self.published.0.iter().zip([s.resolved, s.not_lower_tier, s.not_present, s.process_gone])
        {
            slot.store(v, Relaxed);
        }
        self.next.drained();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Sink(Vec<HotpageEvent>);

    impl EventConsumer for Sink {
        fn consume(&mut self, ev: &HotpageEvent) {
            self.0.push(*ev);
        }
    }

    fn range(start_pfn: u64, end_pfn: u64, nid: i32) -> PfnRange {
        PfnRange { start_pfn, end_pfn, nid, reserved: 0 }
    }

    fn need_pfn(pid: u32, vaddr: u64) -> HotpageEvent {
        HotpageEvent { pid, vaddr, flags: event_flags::NEED_PFN, page_nid: -1, ..HotpageEvent::default() }
    }

    #[test]
    fn events_with_a_pfn_pass_untouched_and_gone_processes_are_counted() {
        let mut r = PfnResolver::new(Sink::default(), Path::new("/nonexistent"), &[range(0, 100, 1)]);
        let with = HotpageEvent { pfn: 5, page_nid: 1, pid: 7, ..HotpageEvent::default() };
        r.consume_batch(&[with, need_pfn(u32::MAX, 0x1000)]);
        r.drained();
        assert_eq!(r.next().0, vec![with]);
        let s = r.counters().snapshot();
        assert_eq!((s.resolved, s.process_gone), (0, 1));
    }

    #[test]
    fn ranges_decide_the_node() {
        let r = PfnResolver::new(Sink::default(), Path::new("/"), &[range(300, 400, 2), range(100, 200, 1)]);
        assert_eq!(r.node_of(100), Some(1));
        assert_eq!(r.node_of(199), Some(1));
        assert_eq!(r.node_of(200), None);
        assert_eq!(r.node_of(350), Some(2));
        assert_eq!(r.node_of(5), None);
    }
}
