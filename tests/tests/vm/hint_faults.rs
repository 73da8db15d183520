//! The hint-fault source in the box: the topology, the events against pagemap
//! (base pages and THP), no kernel promotion while they flow, the hot map they feed.

use super::common::*;

/// Reads every page of the region again and again (each read after a scan
/// takes a hint fault) until `enough` says so or the time runs out.
fn access_until(
    region: &Region,
    step: usize,
    faults: &mut HintFaults,
    sink: &mut Events,
    limit: Duration,
    enough: impl Fn(&Events) -> bool,
) {
    let start = Instant::now();
    while start.elapsed() < limit {
        keep_reading(region, (0..region.pages()).step_by(step), Duration::from_millis(20));
        faults.drain_into(sink);
        if enough(sink) {
            return;
        }
    }
}

/// Both: this test's events and the hot map they feed.
struct Tee<'a> {
    pub events: &'a mut Events,
    pub feeder: &'a mut HotMapFeeder,
}

impl EventConsumer for Tee<'_> {
    fn consume(&mut self, ev: &HotpageEvent) {
        self.events.consume(ev);
        self.feeder.consume(ev);
    }

    fn drained(&mut self) {
        self.feeder.drained();
    }
}

#[test]
fn topology_sees_node0_top_tier_and_node1_lower_tier() {
    let topo = in_the_box();
    let n0 = topo.node(0).unwrap();
    let n1 = topo.node(1).unwrap();
    assert!(n0.top_tier, "{topo:?}");
    assert!(!n1.top_tier, "{topo:?}");
    assert!(n0.tier.unwrap() < n1.tier.unwrap());
    assert!(n1.cpus.is_empty());
    assert!(!n0.cpus.is_empty());
    assert_eq!(topo.nearest_top_tier(1), Some(0));
    // Node 1's pfns: all of them in the BPF filter's ranges, none of node 0's.
    let ranges = topo.lower_tier_ranges().unwrap();
    assert!(ranges.iter().all(|r| r.nid == 1));
    assert_eq!(ranges.iter().map(|r| r.end_pfn - r.start_pfn).sum::<u64>(), n1.pages());
}

#[test]
fn hint_faults_on_node1_pages_carry_the_pagemap_pfn() {
    let topo = in_the_box();
    let _k = tiering_session();
    let mut faults = HintFaults::attach(&topo);
    let region = region_on_node1(32, false);
    let mut events = Events::default();
    let want = region.pages() / 2;
    access_until(&region, 1, &mut faults, &mut events, Duration::from_secs(60), |e| e.by_page.len() >= want);
    assert!(
        events.by_page.len() >= want,
        "only {} of {} pages faulted",
        events.by_page.len(),
        region.pages()
    );

    let pagemap = Pagemap::open(root(), std::process::id()).unwrap();
    let (start, end) = (region.addr(), region.addr() + region.len() as u64);
    let mut checked = 0;
    for (page, ev) in &events.by_page {
        if !(start..end).contains(page) {
            continue;
        }
        let pfn = pagemap.entry(*page).unwrap().pfn().expect("page present");
        assert_eq!(ev.pfn, pfn, "event pfn of {page:#x} matches pagemap");
        assert_eq!(ev.page_nid, 1, "page node from the tier map");
        assert_eq!(ev.nid, 0, "the CPUs are on node 0");
        assert_eq!(ev.source, source::HINT_FAULT);
        assert_eq!(ev.flags & event_flags::PMD, 0);
        assert_eq!(ev.order, 0);
        assert_eq!(topo.node_of_pfn(ev.pfn), Some(1));
        checked += 1;
    }
    assert!(checked >= want, "checked {checked}");
    let c = faults.counters.read().unwrap();
    assert_eq!(c.dropped, 0, "{c:?}");
    assert!(c.emitted >= checked as u64, "{c:?}");
}

#[test]
fn thp_hint_faults_carry_the_head_pfn() {
    let topo = in_the_box();
    let _k = tiering_session();
    let mut faults = HintFaults::attach(&topo);
    let region = region_on_node1(64, true);
    let pagemap = Pagemap::open(root(), std::process::id()).unwrap();
    let head = pagemap.entry(region.addr()).unwrap().pfn().unwrap();
    let second = pagemap.entry(region.addr() + 4096).unwrap().pfn().unwrap();
    assert_eq!(head % 512, 0, "the region is backed by 2 MiB pages");
    assert_eq!(second, head + 1);

    let mut events = Events::default();
    let huge_pages = region.len() / (2 << 20);
    access_until(&region, 512, &mut faults, &mut events, Duration::from_secs(60), |e| {
        e.by_page.values().filter(|ev| ev.flags & event_flags::PMD != 0).count() >= huge_pages / 2
    });
    let pmd: Vec<&HotpageEvent> =
        events.by_page.values().filter(|e| e.flags & event_flags::PMD != 0).collect();
    assert!(pmd.len() >= huge_pages / 2, "{} PMD events for {huge_pages} huge pages", pmd.len());
    for ev in pmd {
        assert_eq!(ev.vaddr % (2 << 20), 0, "PMD faults report the huge page's address");
        let pfn = pagemap.entry(ev.vaddr).unwrap().pfn().unwrap();
        assert_eq!(ev.pfn, pfn, "head pfn from pagemap");
        assert_eq!(ev.pfn % 512, 0);
        assert_eq!(ev.order, 9);
        assert_eq!(ev.page_nid, 1);
    }
}

#[test]
fn the_kernel_promotes_nothing_while_hint_faults_flow_to_hotpage() {
    let topo = in_the_box();
    let before = (
        settings::read_value(&root().join(NUMA_BALANCING)).unwrap(),
        settings::read_value(&root().join(PROMOTE_RATE_LIMIT)).unwrap(),
    );
    {
        let k = tiering_session();
        // The settings are hotpage's: set by the guard, as hotpage runs.
        assert_ne!(k.read_u64(NUMA_BALANCING).unwrap() & 2, 0, "memory tiering mode on");
        assert_eq!(k.read_u64(PROMOTE_RATE_LIMIT).unwrap(), 0);

        // Read first: every event counted below happens after this.
        let vm0 = read_vmstat(root()).unwrap();
        let mut faults = HintFaults::attach(&topo);
        let region = region_on_node1(32, false);
        let mut events = Events::default();
        access_until(&region, 1, &mut faults, &mut events, Duration::from_secs(60), |e| e.count >= 4096);
        let vm1 = read_vmstat(root()).unwrap();
        assert!(events.count >= 4096, "hint faults reached hotpage: {}", events.count);
        assert_eq!(
            vm1["pgpromote_success"], vm0["pgpromote_success"],
            "the kernel promoted pages although hotpage owns promotion"
        );
        assert!(vm1["numa_hint_faults"] - vm0["numa_hint_faults"] >= events.count);
        assert_eq!(share_on(&nodes_of(&region).unwrap(), 1), 1.0, "every page still on node 1");
    }
    // And they are restored when hotpage lets go.
    let after = (
        settings::read_value(&root().join(NUMA_BALANCING)).unwrap(),
        settings::read_value(&root().join(PROMOTE_RATE_LIMIT)).unwrap(),
    );
    assert_eq!(after, before);
}

#[test]
fn hint_faults_feed_the_hot_map_and_repeatedly_faulted_pages_become_ready() {
    let topo = in_the_box();
    let _k = tiering_session();
    let mut faults = HintFaults::attach(&topo);
    let map = Arc::new(HotMap::new(&MemoryLayout::from(&topo), HotMapConfig::default(), 1 << 16).unwrap());
    map.start();
    let mut feeder = HotMapFeeder::new(map.clone());
    let region = region_on_node1(16, false);
    let pagemap = Pagemap::open(root(), std::process::id()).unwrap();
    // Other memory of this process may sit on node 1 too (it fills up as tests
    // run), so count the region's own ready pages.
    let ready_in_region = |map: &HotMap| {
        (0..region.pages())
            .filter(|&i| {
                let pfn = pagemap.entry(region.page_addr(i)).unwrap().pfn().unwrap();
                map.peek(pfn).is_some_and(|f| f.ready)
            })
            .count()
    };
    let mut events = Events::default();
    // Every page faults once per scan pass (100 ms to 1 s apart here); two
    // passes within the 3 s window make it ready.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(90) && ready_in_region(&map) < region.pages() / 2 {
        keep_reading(&region, 0..region.pages(), Duration::from_millis(20));
        faults.collector.drain(&mut Tee { events: &mut events, feeder: &mut feeder });
    }
    let in_region = ready_in_region(&map);
    assert!(in_region >= region.pages() / 2, "{in_region} of {} pages ready", region.pages());
    let stats = feeder.stats();
    let ready = map.ready_pages(1);
    assert_eq!(stats.newly_ready, ready, "nothing walked the map, so every ready page is still there");
    assert_eq!(map.counters().recorded_accesses, stats.updated);
    assert!(map.counters().recorded_hintfaults >= stats.updated);

    // Every ready page has a hint that points back to it; the region's are ours.
    let (start, end) = (region.addr(), region.addr() + region.len() as u64);
    let (mut seen, mut ours) = (0, 0);
    map.walk_node(1, |p| {
        let hint = map.hints().get(p.pfn).expect("a ready page has a hint");
        assert!(p.fields.freq >= 2);
        if let Ok(pm) = Pagemap::open(root(), hint.pid) {
            assert_eq!(pm.entry(hint.vaddr).unwrap().pfn(), Some(p.pfn), "hint of pid {}", hint.pid);
        }
        if (start..end).contains(&hint.vaddr) {
            assert_eq!(hint.pid, std::process::id());
            ours += 1;
        }
        seen += 1;
        hotpage::hotmap::WalkControl::Continue
    });
    assert_eq!(seen, ready);
    assert_eq!(ours, in_region);
    assert_eq!(map.ready_pages(1), 0, "the walk took them all");
}

/// Every event of this process in one region, in the order they came.
struct InRegion {
    range: std::ops::Range<u64>,
    events: Vec<HotpageEvent>,
}

impl EventConsumer for InRegion {
    fn consume(&mut self, ev: &HotpageEvent) {
        if ev.pid == std::process::id() && self.range.contains(&ev.vaddr) {
            self.events.push(*ev);
        }
    }
}

fn median(mut v: Vec<u32>) -> u32 {
    v.sort_unstable();
    v[v.len() / 2]
}

#[test]
fn hint_faults_carry_the_scan_to_fault_latency_and_hot_pages_fault_sooner() {
    let topo = in_the_box();
    let _k = tiering_session();
    let mut faults = HintFaults::attach(&topo);
    let region = region_on_node1(16, false);
    let pages = region.pages();
    // The first eighth is read on every pass, each other page on every eighth pass.
    let hot = pages / 8;
    let range = region.addr()..region.addr() + region.len() as u64;
    let mut seen = InRegion { range, events: Vec::new() };
    let read = |i: usize| {
        std::hint::black_box(region.read(i));
        let t = Instant::now();
        while t.elapsed() < Duration::from_micros(20) {}
    };
    let start = Instant::now();
    let mut pass = 0;
    while start.elapsed() < Duration::from_secs(30) && seen.events.len() < 4 * pages {
        (0..hot).for_each(read);
        (hot + pass % 8..pages).step_by(8).for_each(read);
        pass += 1;
        faults.collector.drain(&mut seen);
    }
    let c = faults.counters.read().unwrap();
    assert_eq!(c.stamp_mismatch, 0, "the node bits of every flags word name node 1: {c:?}");
    let with = seen.events.iter().filter(|e| e.flags & event_flags::LATENCY != 0).count();
    assert!(seen.events.len() > pages, "only {} events in {pass} passes", seen.events.len());
    assert!(
        with * 10 >= seen.events.len() * 9,
        "{with} of {} events carry a latency ({c:?})",
        seen.events.len()
    );

    // A page is stamped by a scan after its previous fault, so a fault's
    // latency cannot exceed the time since that page's previous fault (one
    // jiffy of slack: 4 ms at HZ 250).
    let mut last: HashMap<u64, u64> = HashMap::new();
    let (mut hot_lat, mut cold_lat, mut pairs) = (Vec::new(), Vec::new(), 0);
    for ev in seen.events.iter().filter(|e| e.flags & event_flags::LATENCY != 0) {
        if let Some(prev) = last.insert(ev.vaddr, ev.time_ns) {
            let gap_ms = (ev.time_ns - prev) / 1_000_000;
            assert!(
                u64::from(ev.latency_ms) <= gap_ms + 4,
                "latency {} ms after a {gap_ms} ms gap",
                ev.latency_ms
            );
            pairs += 1;
        }
        let page = ((ev.vaddr - region.addr()) >> 12) as usize;
        if page < hot { hot_lat.push(ev.latency_ms) } else { cold_lat.push(ev.latency_ms) }
    }
    assert!(pairs >= pages, "{pairs} repeated faults");
    let (h, cold) = (median(hot_lat), median(cold_lat));
    println!(
        "median scan-to-fault latency: hot pages {h} ms, cold pages {cold} ms ({pass} passes, {} events)",
        seen.events.len()
    );
    assert!(h * 2 < cold, "hot pages' median latency {h} ms, cold pages' {cold} ms");
}
