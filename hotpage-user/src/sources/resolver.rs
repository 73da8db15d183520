//! Samples without a physical address (software events, PMUs that give none)
//! carry pid + vaddr only. This consumer stage, between the collector and the
//! hot map, finds their pfn in `/proc/<pid>/pagemap` and keeps those on a
//! lower-tier node. Every sample (with a physical address or not) then gets
//! its folio from `/proc/kpageflags`: a page of a THP or mTHP is recorded at
//! the folio's first pfn and address with the folio's order, as pghot keeps
//! one record per folio and as the promoter counts what a move costs. Events
//! of other sources pass through untouched (the hint-fault program reads the
//! folio at its hook).

use std::{path::Path, sync::Arc};

use hotpage_common::{HotpageEvent, PAGE_SHIFT, PfnRange, event_flags, source};

use crate::{
    collector::EventConsumer, sys::kpageflags::KPageFlags, sys::pagemap::PagemapCache,
    sys::topology::NodeRanges,
};

/// Open pagemap files kept at most; beyond that the cache starts over.
const MAX_OPEN: usize = 256;

crate::counter_set! {
    /// What became of the samples that needed a pfn, and of samples on large folios.
    pub struct ResolveStats, ids ResolveCounter, shared ResolveCounters {
        resolved: "found on a lower-tier node and passed on",
        not_lower_tier: "the page is on a top-tier node (or outside every lower-tier range)",
        not_present: "not mapped (yet, or any more), or swapped out",
        process_gone: "the process had exited, or its pagemap could not be read",
        large_folio: "samples (with or without a physical address) on a page of a large folio, recorded at its first page with its order",
    }
}

pub struct AddressResolver<C> {
    next: C,
    /// The lower-tier pfn ranges with their node.
    ranges: NodeRanges,
    maps: PagemapCache,
    /// None where the kernel hides it (not root): samples stay order 0.
    kpageflags: Option<KPageFlags>,
    stats: ResolveStats,
    published: Arc<ResolveCounters>,
    out: Vec<HotpageEvent>,
    /// New lower-tier ranges after memory hot-plug, taken between drains.
    layout: Option<tokio::sync::watch::Receiver<Arc<Vec<PfnRange>>>>,
}

impl<C: EventConsumer> AddressResolver<C> {
    /// `ranges`: the lower-tier pfn ranges, as the BPF tier filter takes them.
    pub fn new(next: C, root: &Path, ranges: &[PfnRange]) -> Self {
        Self {
            next,
            ranges: NodeRanges::lower_tier(ranges),
            maps: PagemapCache::new(root, MAX_OPEN),
            kpageflags: KPageFlags::open(root).ok(),
            stats: ResolveStats::default(),
            published: Arc::default(),
            out: Vec::with_capacity(256),
            layout: None,
        }
    }

    /// Follows the lower-tier ranges sent on `rx` (memory hot-plug).
    pub fn follow_layout(&mut self, rx: tokio::sync::watch::Receiver<Arc<Vec<PfnRange>>>) {
        self.layout = Some(rx);
    }

    pub fn counters(&self) -> Arc<ResolveCounters> {
        self.published.clone()
    }

    pub fn next(&self) -> &C {
        &self.next
    }

    pub fn next_mut(&mut self) -> &mut C {
        &mut self.next
    }

    /// The event with its pfn and node, or None (counted).
    fn resolve(&mut self, ev: &HotpageEvent) -> Option<HotpageEvent> {
        let Some(pm) = self.maps.get(ev.pid) else {
            self.stats.process_gone += 1;
            return None;
        };
        let entry = match pm.entry(ev.vaddr) {
            Ok(e) => e,
            Err(_) => {
                // The process exited since its file was opened.
                self.maps.forget(ev.pid);
                self.stats.process_gone += 1;
                return None;
            }
        };
        let Some(pfn) = entry.pfn().filter(|_| entry.present()) else {
            self.stats.not_present += 1;
            return None;
        };
        let Some(nid) = self.ranges.node_of(pfn).map(|n| n as i32) else {
            self.stats.not_lower_tier += 1;
            return None;
        };
        self.stats.resolved += 1;
        Some(HotpageEvent { pfn, page_nid: nid, flags: ev.flags & !event_flags::NEED_PFN, ..*ev })
    }

    /// A sample's event at its folio's first page: pfn, order and the address
    /// of that page (the folio is mapped in one piece at the sample's offset).
    fn at_folio(&mut self, ev: HotpageEvent) -> HotpageEvent {
        let Some(folio) = self.kpageflags.as_ref().and_then(|k| k.folio_of(ev.pfn).ok().flatten()) else {
            return ev;
        };
        if folio.order == 0 {
            return ev;
        }
        let back = (ev.pfn - folio.head) << PAGE_SHIFT;
        let Some(vaddr) = (ev.vaddr & !((1 << PAGE_SHIFT) - 1)).checked_sub(back) else { return ev };
        self.stats.large_folio += 1;
        HotpageEvent { pfn: folio.head, order: folio.order, vaddr, ..ev }
    }
}

/// Samples, and events the kernel gave no pfn: both are looked up here.
fn needs_lookup(ev: &HotpageEvent) -> bool {
    ev.flags & event_flags::NEED_PFN != 0 || ev.source == source::HW_SAMPLE
}

impl<C: EventConsumer> EventConsumer for AddressResolver<C> {
    fn consume(&mut self, ev: &HotpageEvent) {
        self.consume_batch(std::slice::from_ref(ev));
    }

    fn consume_batch(&mut self, events: &[HotpageEvent]) {
        if !events.iter().any(needs_lookup) {
            self.next.consume_batch(events);
            return;
        }
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        for ev in events {
            if !needs_lookup(ev) {
                out.push(*ev);
                continue;
            }
            let with_pfn = if ev.flags & event_flags::NEED_PFN == 0 { Some(*ev) } else { self.resolve(ev) };
            if let Some(e) = with_pfn {
                let e = self.at_folio(e);
                out.push(e);
            }
        }
        if !out.is_empty() {
            self.next.consume_batch(&out);
        }
        self.out = out;
    }

    fn drained(&mut self) {
        self.published.publish(&self.stats);
        if let Some(rx) = self.layout.as_mut()
            && rx.has_changed().unwrap_or(false)
        {
            self.ranges = NodeRanges::lower_tier(&rx.borrow_and_update());
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
        let mut r = AddressResolver::new(Sink::default(), Path::new("/nonexistent"), &[range(0, 100, 1)]);
        let with = HotpageEvent { pfn: 5, page_nid: 1, pid: 7, ..HotpageEvent::default() };
        r.consume_batch(&[with, need_pfn(u32::MAX, 0x1000)]);
        r.drained();
        assert_eq!(r.next().0, vec![with]);
        let s = r.counters().snapshot();
        assert_eq!((s.resolved, s.process_gone), (0, 1));
    }

    /// A fake root with a THP (pfns 2048..2560) mapped at 0x4000_0000 and a
    /// 64 KiB mTHP (pfns 4128..4144) mapped at 0x5000_0000, in process 4242.
    fn root_with_large_folios() -> tempfile::TempDir {
        use std::os::unix::fs::FileExt;

        use crate::sys::kpageflags::kpf;

        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc/4242")).unwrap();
        let flags = std::fs::File::create(dir.path().join("proc/kpageflags")).unwrap();
        let pagemap = std::fs::File::create(dir.path().join("proc/4242/pagemap")).unwrap();
        let put = |head: u64, pages: u64, vaddr: u64| {
            for i in 0..pages {
                let f = if i == 0 { kpf::COMPOUND_HEAD } else { kpf::COMPOUND_TAIL } | kpf::THP;
                flags.write_all_at(&f.to_le_bytes(), (head + i) * 8).unwrap();
                let entry = (1u64 << 63) | (head + i);
                pagemap.write_all_at(&entry.to_le_bytes(), ((vaddr >> 12) + i) * 8).unwrap();
            }
        };
        put(2048, 512, 0x4000_0000);
        put(4128, 16, 0x5000_0000);
        // A base page after the mTHP.
        flags.write_all_at(&kpf::LRU.to_le_bytes(), 4144 * 8).unwrap();
        dir
    }

    #[test]
    fn samples_are_recorded_at_their_folios_first_page_with_its_order() {
        let root = root_with_large_folios();
        let mut r = AddressResolver::new(Sink::default(), root.path(), &[range(0, 10_000, 1)]);
        let sample = |pfn: u64, vaddr: u64, flags: u8| HotpageEvent {
            pfn,
            vaddr,
            pid: 4242,
            source: source::HW_SAMPLE,
            flags,
            page_nid: if pfn == 0 { -1 } else { 1 },
            ..HotpageEvent::default()
        };
        r.consume_batch(&[
            // No physical address: the 38th page of the THP, mid-page.
            sample(0, 0x4000_0000 + 37 * 4096 + 123, event_flags::NEED_PFN),
            // A physical address on the 9th page of the mTHP.
            sample(4136, 0x5000_0000 + 8 * 4096, 0),
            // A base page.
            sample(4144, 0x6000_0000, 0),
        ]);
        r.drained();
        let got: Vec<(u64, u8, u64)> = r.next().0.iter().map(|e| (e.pfn, e.order, e.vaddr)).collect();
        assert_eq!(got, vec![(2048, 9, 0x4000_0000), (4128, 4, 0x5000_0000), (4144, 0, 0x6000_0000)]);
        let s = r.counters().snapshot();
        assert_eq!((s.resolved, s.large_folio), (1, 2));
    }
}
