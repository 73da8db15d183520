//! Samples without a physical address (software events, PMUs that give none)
//! carry pid + vaddr only. This consumer stage, between the collector and the
//! hot map, finds their pfn in `/proc/<pid>/pagemap` and keeps those on a
//! lower-tier node. Every sample (with a physical address or not) then gets
//! its folio from `/proc/kpageflags`: a page of a THP or mTHP is recorded at
//! the folio's first pfn and address with the folio's order, as pghot keeps
//! one record per folio and as the promoter counts what a move costs. DAMON's
//! region reports become the region's lower-tier pages here too, within the
//! budget the [`RegionPlanner`] keeps. Events of other sources pass through
//! untouched (the hint-fault program reads the folio at its hook).

use std::{path::Path, sync::Arc};

use hotpage_common::{HotpageEvent, PAGE_SHIFT, PfnRange, event_flags, source};

use crate::{
    collector::EventConsumer,
    sources::damon::{
        RegionPlanner, RegionStats,
        regions::{RegionCounters, Window},
    },
    sys::kpageflags::KPageFlags,
    sys::pagemap::{PagemapCache, PagemapEntry},
    sys::thread_time::thread_cpu_time,
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
    /// DAMON regions: how many pages of which, when the DAMON source runs.
    regions: Option<Regions>,
}

struct Regions {
    planner: RegionPlanner,
    stats: RegionStats,
    published: Arc<RegionCounters>,
    windows: Vec<Window>,
    entries: Vec<PagemapEntry>,
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
            regions: None,
        }
    }

    /// Expands DAMON's region reports into their lower-tier pages, as
    /// `planner` bounds them. Without it, region reports are dropped.
    pub fn expand_regions(&mut self, planner: RegionPlanner) -> Arc<RegionCounters> {
        let published = Arc::<RegionCounters>::default();
        self.regions = Some(Regions {
            planner,
            stats: RegionStats::default(),
            published: published.clone(),
            windows: Vec::new(),
            entries: Vec::new(),
        });
        published
    }

    /// The lower-tier pages of the windows planned for `events`' regions,
    /// each an access at the rate DAMON saw for its region, appended to `out`.
    fn expand(&mut self, events: &[HotpageEvent], out: &mut Vec<HotpageEvent>) {
        let Some(r) = self.regions.as_mut() else { return };
        // The source's own cost, for stats and the DAMON CPU budget: one
        // clock read per batch holding regions (a few per aggregation).
        let started = thread_cpu_time();
        let mut windows = std::mem::take(&mut r.windows);
        let mut entries = std::mem::take(&mut r.entries);
        windows.clear();
        r.planner.plan(events, &mut r.stats, &mut windows);
        for w in &windows {
            entries.clear();
            entries.resize(w.pages as usize, PagemapEntry(0));
            let Some(pm) = self.maps.get(w.pid) else {
                self.stats.process_gone += 1;
                continue;
            };
            if pm.entries(w.start, &mut entries).is_err() {
                self.maps.forget(w.pid);
                self.stats.process_gone += 1;
                continue;
            }
            let mut i = 0usize;
            while i < entries.len() {
                let entry = entries[i];
                let vaddr = w.start + ((i as u64) << PAGE_SHIFT);
                i += 1;
                let Some(pfn) = entry.pfn().filter(|_| entry.present()) else { continue };
                let Some(nid) = self.ranges.node_of(pfn) else { continue };
                self.stats.resolved += 1;
                let ev = self.at_folio(HotpageEvent {
                    pfn,
                    vaddr,
                    time_ns: w.time_ns,
                    pid: w.pid,
                    nid: w.nid,
                    page_nid: nid as i32,
                    source: source::PGTABLE_SCAN,
                    order: 0,
                    flags: event_flags::LATENCY,
                    latency_ms: w.interval_ms,
                    reserved: 0,
                });
                // One access per folio: skip the rest of a large one.
                if ev.order > 0 {
                    let rest = hotpage_common::folio_pages(ev.order).saturating_sub(pfn - ev.pfn + 1);
                    i = i.saturating_add(rest as usize);
                }
                out.push(ev);
            }
        }
        if let Some(r) = self.regions.as_mut() {
            r.windows = windows;
            r.entries = entries;
            r.stats.cpu_ns += thread_cpu_time().saturating_sub(started).as_nanos() as u64;
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

fn is_region(ev: &HotpageEvent) -> bool {
    ev.flags & event_flags::REGION != 0
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
        if events.iter().any(is_region) {
            self.expand(events, &mut out);
        }
        for ev in events {
            if is_region(ev) {
                continue;
            }
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
        if let Some(r) = &self.regions {
            r.published.publish(&r.stats);
        }
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

    /// A DAMON region becomes one access per lower-tier folio in it, with the
    /// interval its nr_accesses implies; pages elsewhere are left out.
    #[test]
    fn a_damon_region_becomes_its_lower_tier_folios() {
        use crate::sources::damon::{DamonConfig, RegionPlanner};

        use std::os::unix::fs::FileExt;

        let root = root_with_large_folios();
        // The base page 4144 mapped right after the mTHP.
        let pagemap =
            std::fs::OpenOptions::new().write(true).open(root.path().join("proc/4242/pagemap")).unwrap();
        pagemap.write_all_at(&((1u64 << 63) | 4144).to_le_bytes(), (0x5001_0000u64 >> 12) * 8).unwrap();
        // The THP (pfns 2048..2560), the mTHP (4128..4144) and that page are
        // on node 1; nothing else is.
        let mut r = AddressResolver::new(Sink::default(), root.path(), &[range(2048, 4145, 1)]);
        let counters = r.expand_regions(RegionPlanner::new(DamonConfig::default()));
        let region = |start: u64, pages: u64, n: u32| HotpageEvent {
            pid: 4242,
            vaddr: start,
            pfn: start + pages * 4096,
            latency_ms: n,
            time_ns: 1_000_000_000,
            nid: 0,
            page_nid: -1,
            source: source::PGTABLE_SCAN,
            flags: event_flags::REGION | event_flags::NEED_PFN,
            ..HotpageEvent::default()
        };
        let other = HotpageEvent { pfn: 3000, page_nid: 1, pid: 7, ..HotpageEvent::default() };
        // The THP's region (512 pages: the default cap) and the mTHP's with the page after it.
        r.consume_batch(&[region(0x4000_0000, 512, 10), other, region(0x5000_0000, 17, 3)]);
        r.drained();
        let got: Vec<(u64, u8, u64)> = r.next().0.iter().map(|e| (e.pfn, e.order, e.vaddr)).collect();
        assert_eq!(
            got,
            vec![(2048, 9, 0x4000_0000), (4128, 4, 0x5000_0000), (4144, 0, 0x5001_0000), (3000, 0, 0)]
        );
        let pages = &r.next().0[..3];
        assert!(pages.iter().all(|e| e.source == source::PGTABLE_SCAN && e.flags == event_flags::LATENCY));
        assert!(pages[0].latency_ms < pages[1].latency_ms, "10 accesses: a shorter interval than 3");
        assert_eq!(pages[1].latency_ms, pages[2].latency_ms);
        let s = counters.snapshot();
        assert_eq!((s.regions, s.pages), (2, 529));
    }
}
