//! Hot map tests, written from the specification (design.md §3): one per
//! rule, the seed's corner cases, and a property test against a plain
//! HashMap model of pfn → record.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use hotpage_common::{PAGES_PER_SECTION as S, PFN_SECTION_SHIFT, source};
use proptest::prelude::*;

use super::*;

const HF: u16 = source::HINT_FAULT;
const HW: u16 = source::HW_SAMPLE;

/// node 0: top tier, pfn 0 .. 4S+1000 (shares section 4 with node 1)
/// node 1: lower tier, 4S+1000 .. 7S+100 (does not start at 0; shares section 7 with node 2)
/// node 2: lower tier, 7S+100 .. 9S, and 10S .. 10S+50 (a hole in between)
fn layout() -> MemoryLayout {
    MemoryLayout {
        nodes: vec![
            LayoutNode { id: 0, top_tier: true, ranges: vec![(0, 4 * S + 1000)] },
            LayoutNode { id: 1, top_tier: false, ranges: vec![(4 * S + 1000, 7 * S + 100)] },
            LayoutNode { id: 2, top_tier: false, ranges: vec![(7 * S + 100, 9 * S), (10 * S, 10 * S + 50)] },
        ],
    }
}

fn started(mode: RecordMode) -> HotMap {
    let m = HotMap::new(&layout(), HotMapConfig::defaults(mode), 1024).unwrap();
    m.start();
    m
}

const N1: u64 = 5 * S + 7; // a node-1 page
const N2: u64 = 8 * S + 9; // a node-2 page

fn upd(ready: bool, newly_ready: bool) -> Result<Recorded, RecordError> {
    Ok(Recorded::Updated { ready, newly_ready })
}

#[test]
fn nothing_is_recorded_before_the_promoter_starts() {
    let m = HotMap::new(&layout(), HotMapConfig::default(), 16).unwrap();
    assert_eq!(m.record_access(N1, 0, 0, HF, 10), Ok(Recorded::NotStarted));
    assert_eq!(m.counters(), HotMapCounters::default(), "not even counted per source");
    assert_eq!(m.peek(N1).unwrap().freq, 0);
    m.start();
    assert_eq!(m.record_access(N1, 0, 0, HF, 10), upd(false, false));
}

#[test]
fn an_invalid_accessing_node_is_an_error() {
    let m = started(RecordMode::Default);
    let e = m.record_access(N1, 0, 5, HF, 10).unwrap_err();
    assert_eq!(e, RecordError::InvalidNode(5));
    assert_eq!(e.kernel_return(), -22);
    assert!(m.record_access(N1, 0, -2, HF, 10).is_err());
    assert!(m.record_access(N1, 0, 4096, HF, 10).is_err());
    // NUMA_NO_NODE is valid: "use the default target".
    assert!(m.record_access(N1, 0, NUMA_NO_NODE, HF, 10).is_ok());
    assert_eq!(m.counters().recorded_hintfaults, 1, "the invalid ones were not counted");
}

#[test]
fn an_unknown_source_is_an_error() {
    let m = started(RecordMode::Default);
    assert_eq!(m.record_access(N1, 0, 0, 9, 10), Err(RecordError::UnknownSource(9)));
    // The page-table-scan source (pghot's kscand wave; DAMON here) is known.
    assert!(m.record_access(N1, 0, 0, source::PGTABLE_SCAN, 10).is_ok());
    assert_eq!(m.counters().recorded_pgtscans, 1);
}

#[test]
fn a_disabled_source_is_ignored_and_not_counted() {
    let cfg = HotMapConfig { enabled_sources: SOURCE_HINT_FAULTS, ..HotMapConfig::default() };
    let m = HotMap::new(&layout(), cfg, 16).unwrap();
    m.start();
    assert_eq!(m.record_access(N1, 0, 0, HW, 10), Ok(Recorded::SourceDisabled));
    assert_eq!(m.counters().recorded_hwhints, 0);
    assert_eq!(m.record_access(N1, 0, 0, HF, 10), upd(false, false));
}

#[test]
fn a_top_tier_page_is_counted_per_source_but_not_recorded() {
    let m = started(RecordMode::Default);
    // Deep in node 0, and in node 0's part of the section it shares with node 1.
    for pfn in [100, 4 * S + 999] {
        assert_eq!(m.record_access(pfn, 0, NUMA_NO_NODE, HW, 10), Ok(Recorded::TopTier));
    }
    let c = m.counters();
    assert_eq!((c.recorded_hwhints, c.recorded_accesses), (2, 0));
    assert_eq!(m.peek(4 * S + 999).unwrap().freq, 0, "the shared section's top-tier record stays zero");
}

#[test]
fn an_access_from_the_pages_own_node_is_ignored() {
    let m = started(RecordMode::Default);
    assert_eq!(m.record_access(N1, 0, 1, HF, 10), Ok(Recorded::SameNode));
    assert_eq!(m.counters().recorded_accesses, 0);
}

#[test]
fn offline_pfns_and_holes_are_ignored() {
    let m = started(RecordMode::Default);
    assert_eq!(m.record_access(9 * S + 5, 0, 0, HF, 10), Ok(Recorded::NotOnline), "the hole");
    assert_eq!(m.record_access(1 << 40, 0, 0, HF, 10), Ok(Recorded::NotOnline), "beyond memory");
    assert_eq!(m.record_access(10 * S + 50, 0, 0, HF, 10), Ok(Recorded::NotOnline), "just past a range");
    assert_eq!(m.record_access(10 * S + 49, 0, 0, HF, 10), upd(false, false), "its last page");
}

#[test]
fn without_a_record_array_an_access_is_ignored() {
    // The kernel's case: memory online but its section's array not allocated.
    let m = started(RecordMode::Default);
    let nr = N2 >> PFN_SECTION_SHIFT;
    m.dir.insert(nr, {
        let s = Section::new(nr, m.dir.get(nr).unwrap().segments.clone(), RecordMode::Default);
        s.online.store(false, Ordering::Relaxed);
        s
    });
    assert_eq!(m.record_access(N2, 0, 0, HF, 10), Ok(Recorded::NoRecordArray));
    assert_eq!(m.counters().recorded_accesses, 0, "recorded_accesses counts only updates");
    assert_eq!(m.counters().recorded_hintfaults, 1);
}

#[test]
fn the_second_access_within_the_window_makes_a_page_ready() {
    let m = started(RecordMode::Default);
    assert_eq!(m.record_access(N1, 0, 0, HF, 1000), upd(false, false));
    assert_eq!(m.record_access(N1, 0, 0, HF, 1500), upd(true, true));
    assert_eq!(m.record_access(N1, 0, 0, HF, 1600), upd(true, false), "already ready");
    assert_eq!(m.counters().recorded_accesses, 3);
    let f = m.peek(N1).unwrap();
    assert_eq!((f.freq, f.ready, f.nid), (3, true, 0));
}

#[test]
fn all_pages_of_a_large_folio_share_the_first_pfns_record() {
    let m = started(RecordMode::Default);
    let head = 6 * S + 512; // a 2 MiB-aligned THP of node 1
    assert_eq!(m.record_access(head + 3, 9, 0, HF, 10), upd(false, false));
    assert_eq!(m.record_access(head + 300, 9, 0, HF, 20), upd(true, true), "another tail page, same record");
    assert_eq!(m.peek(head).unwrap().freq, 2);
    assert_eq!(m.peek(head + 3).unwrap().freq, 0, "tail records are never used");
    let mut pages = Vec::new();
    m.walk_node(1, |p| {
        pages.push(p.pfn);
        WalkControl::Continue
    });
    assert_eq!(pages, vec![head]);
}

#[test]
fn ready_flags_the_section_and_activates_the_node_once() {
    let m = started(RecordMode::Default);
    let wakes = Arc::new(AtomicU64::new(0));
    let w = wakes.clone();
    m.set_waker(
        1,
        Arc::new(move || {
            w.fetch_add(1, Ordering::Relaxed);
        }),
    );
    for pfn in [N1, N1 + 1] {
        m.record_access(pfn, 0, 0, HF, 10).unwrap();
        m.record_access(pfn, 0, 0, HF, 11).unwrap();
    }
    assert_eq!(wakes.load(Ordering::Relaxed), 1, "woken when the flag turned on, not per page");
    assert!(m.take_activate(1));
    assert!(!m.take_activate(1), "test-and-clear");
    assert!(!m.take_activate(2));
    let sec = m.dir.get(N1 >> PFN_SECTION_SHIFT).unwrap();
    assert_ne!(sec.hot.load(Ordering::Relaxed), 0);
}

fn make_ready(m: &HotMap, pfn: u64) {
    m.record_access(pfn, 0, 0, HF, 100).unwrap();
    assert!(matches!(m.record_access(pfn, 0, 0, HF, 101), Ok(Recorded::Updated { ready: true, .. })));
}

#[test]
fn a_walk_never_leaves_its_node_even_in_a_shared_section() {
    let m = started(RecordMode::Default);
    // Section 7 holds node 1 (..7S+100) and node 2 (7S+100..).
    let (a, b) = (7 * S + 99, 7 * S + 100);
    make_ready(&m, a);
    make_ready(&m, b);
    make_ready(&m, N2);
    let mut got = Vec::new();
    let stats = m.walk_node(1, |p| {
        got.push((p.pfn, p.node));
        WalkControl::Continue
    });
    assert_eq!(got, vec![(a, 1)]);
    assert_eq!(stats.pages_taken, 1);
    assert!(m.peek(b).unwrap().ready, "node 2's page in the shared section was not touched");
    // Node 2's hot bit survived node 1's walk.
    got.clear();
    m.walk_node(2, |p| {
        got.push((p.pfn, p.node));
        WalkControl::Continue
    });
    assert_eq!(got, vec![(b, 2), (N2, 2)]);
}

#[test]
fn a_walk_skips_sections_that_are_not_flagged() {
    let m = started(RecordMode::Default);
    make_ready(&m, N1);
    let stats = m.walk_node(1, |_| WalkControl::Continue);
    // Node 1 has sections 4, 5, 6, 7; only 5 was hot.
    assert_eq!((stats.sections_walked, stats.sections_skipped, stats.pages_taken), (1, 3, 1));
    let again = m.walk_node(1, |_| WalkControl::Continue);
    assert_eq!((again.sections_walked, again.pages_taken), (0, 0), "the flag was cleared, the record taken");
}

#[test]
fn a_stopped_walk_leaves_the_rest_for_the_next_one() {
    let m = started(RecordMode::Default);
    for i in 0..10 {
        make_ready(&m, N1 + i);
    }
    let mut n = 0;
    m.walk_node(1, |_| {
        n += 1;
        if n == 4 { WalkControl::Stop } else { WalkControl::Continue }
    });
    assert_eq!(n, 4);
    assert!(m.take_activate(1), "the node is active again");
    let stats = m.walk_node(1, |_| WalkControl::Continue);
    assert_eq!(stats.pages_taken, 6);
}

#[test]
fn consuming_a_ready_record_swaps_it_to_zero() {
    let m = started(RecordMode::Default);
    make_ready(&m, N1);
    let f = m.take_ready(N1).unwrap();
    assert_eq!((f.freq, f.ready, f.nid), (2, true, 0));
    assert_eq!(m.peek(N1).unwrap(), RecordFields { nid: 0, freq: 0, time: 0, ready: false });
}

#[test]
fn consuming_a_record_that_is_not_ready_leaves_it_alone() {
    let m = started(RecordMode::Default);
    m.record_access(N1, 0, 0, HF, 300).unwrap();
    let before = m.peek(N1).unwrap();
    assert_eq!(m.take_ready(N1), None);
    assert_eq!(m.peek(N1).unwrap(), before);
}

#[test]
fn a_taken_record_can_be_rearmed_after_a_transient_failure() {
    let m = started(RecordMode::Default);
    make_ready(&m, N1);
    let mut taken = None;
    m.walk_node(1, |p| {
        taken = Some(p);
        WalkControl::Continue
    });
    let p = taken.unwrap();
    assert!(m.rearm(&p));
    assert!(m.peek(N1).unwrap().ready);
    assert_eq!(m.walk_node(1, |_| WalkControl::Continue).pages_taken, 1, "found again");
    // Not over a record the collector refilled meanwhile.
    m.record_access(N1, 0, 0, HF, 500).unwrap();
    assert!(!m.rearm(&p));
}

#[test]
fn precise_records_keep_the_accessing_node() {
    let layout = MemoryLayout {
        nodes: vec![
            LayoutNode { id: 0, top_tier: true, ranges: vec![(0, S)] },
            LayoutNode { id: 1, top_tier: true, ranges: vec![(S, 2 * S)] },
            LayoutNode { id: 2, top_tier: false, ranges: vec![(2 * S, 3 * S)] },
        ],
    };
    let cfg = HotMapConfig { target_nid: 1, ..HotMapConfig::defaults(RecordMode::Precise) };
    let m = HotMap::new(&layout, cfg, 16).unwrap();
    m.start();
    let p = 2 * S + 5;
    m.record_access(p, 0, 0, HF, 10).unwrap();
    m.record_access(p, 0, 0, HF, 20).unwrap();
    assert_eq!(m.take_ready(p).unwrap().nid, 0, "the accessing node");
    m.record_access(p, 0, NUMA_NO_NODE, HW, 30).unwrap();
    m.record_access(p, 0, NUMA_NO_NODE, HW, 40).unwrap();
    assert_eq!(m.take_ready(p).unwrap().nid, 1, "NUMA_NO_NODE: the target node");
}

#[test]
fn the_target_node_must_be_an_online_top_tier_node() {
    for nid in [1, 2, 7] {
        let cfg = HotMapConfig { target_nid: nid, ..HotMapConfig::default() };
        assert_eq!(HotMap::new(&layout(), cfg, 16).err(), Some(ConfigError::TargetNotTopTier(nid)));
    }
}

#[test]
fn memory_onlined_later_gets_records_and_offlined_memory_loses_them() {
    let m = started(RecordMode::Default);
    let new_pfn = 20 * S + 3;
    assert_eq!(m.record_access(new_pfn, 0, 0, HF, 10), Ok(Recorded::NotOnline));
    let mut grown = layout();
    grown.nodes[2].ranges.push((20 * S, 21 * S));
    m.update_layout(&grown);
    assert_eq!(m.record_access(new_pfn, 0, 0, HF, 10), upd(false, false));
    make_ready(&m, N2);
    // Node 2's sections 8 and 20 go offline.
    let mut shrunk = layout();
    shrunk.nodes[2].ranges = vec![(7 * S + 100, 8 * S)];
    m.update_layout(&shrunk);
    assert_eq!(m.record_access(N2, 0, 0, HF, 10), Ok(Recorded::NotOnline));
    assert_eq!(m.record_access(new_pfn, 0, 0, HF, 10), Ok(Recorded::NotOnline));
    assert_eq!(m.walk_node(2, |_| WalkControl::Continue).pages_taken, 0, "offline sections are not walked");
    // Back online: a clean array.
    m.update_layout(&layout());
    assert_eq!(m.peek(N2).unwrap().freq, 0);
}

#[test]
fn one_byte_per_page_default_and_four_precise() {
    let full = MemoryLayout {
        nodes: vec![
            LayoutNode { id: 0, top_tier: true, ranges: vec![(0, 4 * S)] },
            LayoutNode { id: 1, top_tier: false, ranges: vec![(4 * S, 12 * S)] },
        ],
    };
    for (mode, bytes) in [(RecordMode::Default, 1), (RecordMode::Precise, 4)] {
        let m = HotMap::new(&full, HotMapConfig::defaults(mode), 16).unwrap();
        let mem = m.memory();
        assert_eq!(mem.sections, 8);
        assert_eq!(mem.tracked_pages, 8 * S);
        assert_eq!(mem.record_bytes, bytes * 8 * S);
        // A fixed directory (root table and one chunk, 96 KiB) plus a little per section.
        assert!(mem.overhead_bytes < 96 * 1024 + 8 * 256, "{mem:?}");
    }
}

#[test]
fn no_ready_page_is_lost_between_the_collector_and_a_walker() {
    let m = Arc::new(started(RecordMode::Default));
    let newly = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let taken = Arc::new(AtomicU64::new(0));
    let walker = {
        let (m, stop, taken) = (m.clone(), stop.clone(), taken.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                let s = m.walk_node(1, |_| WalkControl::Continue);
                taken.fetch_add(s.pages_taken, Ordering::Relaxed);
            }
        })
    };
    for round in 0..20u64 {
        for i in 0..5000u64 {
            // Node 1's pages only: 4S+1000 .. 7S+100.
            let pfn = 4 * S + 1000 + (i * 7919) % (3 * S - 900);
            if let Ok(Recorded::Updated { newly_ready: true, .. }) =
                m.record_access(pfn, 0, 0, HF, round * 10)
            {
                newly.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    stop.store(true, Ordering::Release);
    walker.join().unwrap();
    taken.fetch_add(m.walk_node(1, |_| WalkControl::Continue).pages_taken, Ordering::Relaxed);
    assert!(newly.load(Ordering::Relaxed) > 0);
    assert_eq!(taken.load(Ordering::Relaxed), newly.load(Ordering::Relaxed));
}

// ---------------------------------------------------------------------------
// Property test against a reference model: a HashMap of head pfn → record,
// with the update rule written out again from design.md §3.

#[derive(Default)]
struct Model {
    records: HashMap<u64, u32>,
}

impl Model {
    fn node_of(pfn: u64) -> Option<(u32, bool)> {
        layout()
            .nodes
            .iter()
            .find(|n| n.ranges.iter().any(|&(s, e)| (s..e).contains(&pfn)))
            .map(|n| (n.id, n.top_tier))
    }

    fn update(mode: RecordMode, old: u32, nid: i32, now: u64) -> u32 {
        match mode {
            RecordMode::Default => {
                let (freq, bucket, ready) = (old & 3, (old >> 2) & 31, old & 0x80);
                let lat = ((now as i64 & 0xf80) - (i64::from(bucket) << 7)).rem_euclid(4096) & 0xf80;
                let freq = if lat > 3000 { 1 } else { (freq + 1).min(3) };
                let bucket = ((now >> 7) & 31) as u32;
                let ready = if freq >= 2 { 0x80 } else { ready };
                ready | (bucket << 2) | freq
            }
            RecordMode::Precise => {
                let (freq, time, ready) = ((old >> 10) & 7, (old >> 13) & 0x3fff, old & (1 << 31));
                let t = (now & 0x3fff) as i64;
                let lat = (t - i64::from(time)).rem_euclid(16384);
                let freq = if lat > 5000 { 1 } else { (freq + 1).min(7) };
                let node = if nid < 0 { 0 } else { nid as u32 };
                let ready = if freq >= 2 { 1 << 31 } else { ready };
                (old & 0x7800_0000) | ready | ((t as u32) << 13) | (freq << 10) | node
            }
        }
    }

    fn record(&mut self, mode: RecordMode, pfn: u64, order: u8, nid: i32, now: u64) -> Recorded {
        let Some((page_nid, top)) = Self::node_of(pfn) else { return Recorded::NotOnline };
        if nid >= 0 && page_nid == nid as u32 {
            return Recorded::SameNode;
        }
        if top {
            return Recorded::TopTier;
        }
        let head = pfn & !((1 << order) - 1);
        if !matches!(Self::node_of(head), Some((_, false))) {
            return Recorded::NoRecordArray;
        }
        let ready_bit = mode.ready_bit();
        let old = self.records.get(&head).copied().unwrap_or(0);
        let new = Self::update(mode, old, nid, now);
        self.records.insert(head, new);
        let ready = new & ready_bit != 0;
        Recorded::Updated { ready, newly_ready: ready && old & ready_bit == 0 }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Access { pfn: u64, order: u8, nid: i32, dt: u64 },
    Take { pfn: u64 },
    Walk { node: u32 },
}

fn interesting_pfn() -> impl Strategy<Value = u64> {
    prop_oneof![
        // Dense around node and section boundaries, so records collide.
        (0..64u64).prop_map(|i| 4 * S + 980 + i),
        (0..64u64).prop_map(|i| 7 * S + 70 + i),
        (0..32u64).prop_map(|i| 9 * S - 16 + i),
        (0..32u64).prop_map(|i| 10 * S + 30 + i),
        (0..10 * S + 64),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (interesting_pfn(), prop_oneof![Just(0u8), Just(0), Just(2), Just(9)], -1..3i32,
              // Exact window edges (5000 precise; 2944/3072 around 3000 in buckets) and wraps.
              prop_oneof![0..200u64, 0..6000u64, Just(5000), Just(5001), Just(3072), Just(4096), Just(16384)])
            .prop_map(|(pfn, order, nid, dt)| Op::Access { pfn, order, nid, dt }),
        1 => interesting_pfn().prop_map(|pfn| Op::Take { pfn }),
        1 => (1..3u32).prop_map(|node| Op::Walk { node }),
    ]
}

fn check_against_model(mode: RecordMode, ops: &[Op]) {
    let m = started(mode);
    let mut model = Model::default();
    let mut now = 5000u64;
    for op in ops {
        match *op {
            Op::Access { pfn, order, nid, dt } => {
                now += dt;
                let got = m.record_access(pfn, order, nid, HF, now).unwrap();
                let want = model.record(mode, pfn, order, nid, now);
                assert_eq!(got, want, "access to {pfn} at {now}");
            }
            Op::Take { pfn } => {
                let got = m.take_ready(pfn);
                let rec = model.records.get(&pfn).copied().unwrap_or(0);
                if rec & mode.ready_bit() != 0 {
                    model.records.insert(pfn, 0);
                    assert_eq!(got, Some(mode.fields(rec, 0)));
                } else {
                    assert_eq!(got, None);
                }
            }
            Op::Walk { node } => {
                let mut got = Vec::new();
                m.walk_node(node, |p| {
                    got.push((p.pfn, p.fields));
                    WalkControl::Continue
                });
                let mut want: Vec<(u64, RecordFields)> = model
                    .records
                    .iter()
                    .filter(|&(&pfn, &rec)| {
                        rec & mode.ready_bit() != 0 && Model::node_of(pfn).map(|n| n.0) == Some(node)
                    })
                    .map(|(&pfn, &rec)| (pfn, mode.fields(rec, 0)))
                    .collect();
                want.sort_by_key(|w| w.0);
                for (pfn, _) in &want {
                    model.records.insert(*pfn, 0);
                }
                assert_eq!(got, want, "walk of node {node}");
            }
        }
    }
    for (&pfn, &rec) in &model.records {
        let f = m.peek(pfn).unwrap();
        assert_eq!(f, mode.fields(rec, 0), "final record of {pfn}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn default_mode_matches_the_model(ops in proptest::collection::vec(op(), 1..400)) {
        check_against_model(RecordMode::Default, &ops);
    }

    #[test]
    fn precise_mode_matches_the_model(ops in proptest::collection::vec(op(), 1..400)) {
        check_against_model(RecordMode::Precise, &ops);
    }
}

/// What changes READY, for the kept counts: accesses, takes, walks that stop
/// early, re-arms of walked pages, and memory going away and coming back.
#[derive(Clone, Debug)]
enum CountOp {
    Access {
        pfn: u64,
        dt: u64,
    },
    Take {
        pfn: u64,
    },
    Walk {
        node: u32,
        stop_after: usize,
        rearm: bool,
    },
    /// A walk, then the memory goes, then the walked pages are re-armed.
    WalkUnplugRearm {
        node: u32,
    },
    Unplug,
    Replug,
}

fn count_op() -> impl Strategy<Value = CountOp> {
    prop_oneof![
        8 => (interesting_pfn(), 0..400u64).prop_map(|(pfn, dt)| CountOp::Access { pfn, dt }),
        1 => interesting_pfn().prop_map(|pfn| CountOp::Take { pfn }),
        2 => (1..3u32, 0..8usize, any::<bool>())
            .prop_map(|(node, stop_after, rearm)| CountOp::Walk { node, stop_after, rearm }),
        1 => (1..3u32).prop_map(|node| CountOp::WalkUnplugRearm { node }),
        1 => Just(CountOp::Unplug),
        1 => Just(CountOp::Replug),
    ]
}

/// Node 2 without its second range (10S..10S+50): that memory was offlined.
fn layout_without_node2_tail() -> MemoryLayout {
    let mut l = layout();
    l.nodes[2].ranges.truncate(1);
    l
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The per-node READY counts a report reads in one load equal a scan of
    /// every record, whatever happened before.
    #[test]
    fn ready_counts_match_a_scan_through_any_sequence(
        mode in prop_oneof![Just(RecordMode::Default), Just(RecordMode::Precise)],
        ops in proptest::collection::vec(count_op(), 1..300),
    ) {
        let m = started(mode);
        let mut now = 5000u64;
        for op in &ops {
            match *op {
                CountOp::Access { pfn, dt } => {
                    now += dt;
                    let _ = m.record_access(pfn, 0, 0, HF, now);
                }
                CountOp::Take { pfn } => {
                    let _ = m.take_ready(pfn);
                }
                CountOp::Walk { node, stop_after, rearm } => {
                    let mut taken = Vec::new();
                    m.walk_node(node, |p| {
                        taken.push(p);
                        if taken.len() > stop_after { WalkControl::Stop } else { WalkControl::Continue }
                    });
                    if rearm {
                        for p in &taken {
                            m.rearm(p);
                        }
                    }
                }
                CountOp::WalkUnplugRearm { node } => {
                    let mut taken = Vec::new();
                    m.walk_node(node, |p| {
                        taken.push(p);
                        WalkControl::Continue
                    });
                    m.update_layout(&layout_without_node2_tail());
                    for p in &taken {
                        m.rearm(p);
                    }
                }
                CountOp::Unplug => m.update_layout(&layout_without_node2_tail()),
                CountOp::Replug => m.update_layout(&layout()),
            }
            for node in [1, 2] {
                prop_assert_eq!(m.ready_pages(node), m.ready_pages_by_scan(node), "node {} after {:?}", node, op);
            }
        }
    }
}
