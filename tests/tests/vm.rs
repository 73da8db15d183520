//! Box tests: run as root inside the emulated CXL box (`cargo xtask vm test`),
//! where node 0 is DRAM with the CPUs and node 1 a CPU-less lower tier.
//! They fail, rather than skip, anywhere else.

// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use hotpage::{
    collector::HotMapFeeder,
    collector::{Collector, EventConsumer},
    hotmap::{HotMap, HotMapConfig, MemoryLayout, RecordMode},
    kernel,
    kernel::settings::{
        self, NUMA_BALANCING, PROMOTE_RATE_LIMIT, SCAN_DELAY_MS, SCAN_PERIOD_MAX_MS, SCAN_PERIOD_MIN_MS,
        SettingsGuard,
    },
    promoter::{CounterSnapshot, LiveSystem, Promoter, PromoterConfig, PromoterSystem, RateLimit, Targets},
    sources::{LoadOptions, LoadedSource, SourceCounters, SourceKind},
    sys::kpageflags::KPageFlags,
    sys::pagemap::Pagemap,
    sys::topology::TierTopology,
    sys::vmstat::read_vmstat,
};
use hotpage_common::{HotpageEvent, event_flags, source};
use hotpage_tests::{
    memory::Region,
    require_root,
    thread_time::named_thread_cpu_time,
    workload::{nodes_of, place_on_node, share_on},
};

const ROOT: &str = "/";
/// The library-level tests keep their lock apart from the CLI's.
const TEST_RUN_DIR: &str = "/run/hotpage-vm-tests";

fn root() -> &'static Path {
    Path::new(ROOT)
}

fn in_the_box() -> TierTopology {
    require_root();
    let topo = TierTopology::read(root()).expect("sysfs topology");
    assert!(
        topo.lower_tier_nodes().any(|n| n.id == 1),
        "not in the emulated CXL box (node 1 is not a lower tier): run `cargo xtask vm test`"
    );
    topo
}

/// Kernel set up as hotpage runs it, with the NUMA-balancing scanner sped up
/// (first scan at once, then every 100 ms to 1 s of the task's CPU time) so
/// tests see faults in seconds, and in pure tiering mode (2) so that scans
/// spend their budget on lower-tier pages only.
fn tiering_session() -> SettingsGuard {
    let (mut g, _) = SettingsGuard::acquire(root(), Path::new(TEST_RUN_DIR)).expect("settings lock");
    g.hint_faults_without_kernel_promotion().expect("tiering settings");
    g.set(NUMA_BALANCING, "2").expect("numa_balancing");
    g.set(SCAN_DELAY_MS, "0").expect("scan_delay_ms");
    g.set(SCAN_PERIOD_MIN_MS, "100").expect("scan_period_min_ms");
    g.set(SCAN_PERIOD_MAX_MS, "1000").expect("scan_period_max_ms");
    g
}

/// The hint-fault program attached as the daemon attaches it.
struct HintFaults {
    _src: LoadedSource,
    collector: Collector,
    counters: SourceCounters,
    _rt: tokio::runtime::Runtime,
}

impl HintFaults {
    fn attach(topo: &TierTopology) -> Self {
        let btf = kernel::kernel_btf(root()).expect("kernel BTF");
        let hook = kernel::hint_fault_hook(&btf, &kernel::release(root())).expect("a hint-fault hook");
        assert_eq!(hook, "numa_migrate_check", "Linux 6.12 has numa_migrate_check");
        let ranges = topo.lower_tier_ranges().unwrap();
        let (src, ring, counters) = LoadedSource::hint_faults(&LoadOptions::default(), &ranges, hook)
            .expect("fentry attaches in the box");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let collector = {
            let _g = rt.enter();
            Collector::new(vec![ring], Duration::from_millis(100)).unwrap()
        };
        Self { _src: src, collector, counters, _rt: rt }
    }

    fn drain_into(&mut self, sink: &mut Events) {
        self.collector.drain(sink);
    }
}

/// Events of this process, by page.
#[derive(Default)]
struct Events {
    by_page: HashMap<u64, HotpageEvent>,
    count: u64,
}

impl EventConsumer for Events {
    fn consume(&mut self, ev: &HotpageEvent) {
        if ev.pid == std::process::id() {
            self.count += 1;
            self.by_page.insert(ev.vaddr & !0xfff, *ev);
        }
    }
}

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

/// Reads the pages again and again for `d`. NUMA balancing schedules scans by
/// the task's CPU time, not wall time, so an accessing thread must keep busy.
fn keep_reading(region: &Region, pages: impl Iterator<Item = usize> + Clone, d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        for i in pages.clone() {
            std::hint::black_box(region.read(i));
        }
    }
}

fn region_on_node1(mib: usize, huge: bool) -> Region {
    let region =
        if huge { Region::map_huge_aligned(mib << 20).unwrap() } else { Region::map(mib << 20).unwrap() };
    if huge {
        region.madvise(libc::MADV_HUGEPAGE).unwrap();
    } else {
        region.no_huge_pages().unwrap();
    }
    place_on_node(&region, 1).unwrap();
    let nodes = nodes_of(&region).unwrap();
    assert_eq!(share_on(&nodes, 1), 1.0, "every page starts on node 1");
    region
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

/// Both: this test's events and the hot map they feed.
struct Tee<'a> {
    events: &'a mut Events,
    feeder: &'a mut HotMapFeeder,
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

/// Hint faults → collector → hot map → promoter, assembled as the daemon does.
struct Pipeline {
    faults: HintFaults,
    feeder: HotMapFeeder,
    map: Arc<HotMap>,
    promoter: Promoter,
    vmstat0: std::collections::BTreeMap<String, u64>,
    _kernel: SettingsGuard,
}

impl Pipeline {
    fn start(topo: &TierTopology, config: PromoterConfig) -> Self {
        let kernel = tiering_session();
        let vmstat0 = read_vmstat(root()).unwrap();
        let faults = HintFaults::attach(topo);
        let map = Arc::new(HotMap::new(&MemoryLayout::from(topo), HotMapConfig::default(), 1 << 18).unwrap());
        let feeder = HotMapFeeder::new(map.clone());
        let targets = Targets::new(topo, RecordMode::Default, None);
        let promoter = Promoter::start(map.clone(), targets, config, |_| LiveSystem::new(root())).unwrap();
        Self { faults, feeder, map, promoter, vmstat0, _kernel: kernel }
    }

    fn pump(&mut self) {
        self.faults.collector.drain(&mut self.feeder);
    }

    fn node1(&self) -> CounterSnapshot {
        self.promoter.reports().into_iter().find(|r| r.node == 1).unwrap().counters
    }

    /// Everything that explains a failure: kernel NUMA counters since the start,
    /// what the BPF program and the hot map saw, what the promoter did.
    fn diag(&self) -> String {
        let now = read_vmstat(root()).unwrap();
        let delta = |k: &str| {
            now.get(k).copied().unwrap_or(0).saturating_sub(self.vmstat0.get(k).copied().unwrap_or(0))
        };
        let kernel: Vec<String> = [
            "numa_pte_updates",
            "numa_hint_faults",
            "numa_hint_faults_local",
            "pgpromote_success",
            "pgdemote_kswapd",
        ]
        .iter()
        .map(|k| format!("{k} +{}", delta(k)))
        .collect();
        format!(
            "\n  kernel: {}\n  bpf: {:?}\n  hot map: {:?} {:?}\n  promoter: {:?}",
            kernel.join(", "),
            self.faults.counters.read().ok(),
            self.map.counters(),
            self.feeder.stats(),
            self.node1()
        )
    }

    /// Reads `pages` of the region and pumps events until `done` or the limit.
    fn run_until(&mut self, region: &Region, pages: &[usize], limit: Duration, done: impl Fn(&Self) -> bool) {
        let start = Instant::now();
        while start.elapsed() < limit && !done(self) {
            keep_reading(region, pages.iter().copied(), Duration::from_millis(20));
            self.pump();
        }
    }
}

fn share_of_pages_on(region: &Region, pages: &[usize], node: i32) -> f64 {
    let all = nodes_of(region).unwrap();
    let these: Vec<i32> = pages.iter().map(|&i| all[i]).collect();
    share_on(&these, node)
}

#[test]
fn repeatedly_accessed_node1_pages_move_to_node0_and_untouched_ones_stay() {
    let topo = in_the_box();
    let mut p = Pipeline::start(&topo, PromoterConfig::default());
    let region = region_on_node1(32, false);
    // Each hot folio is first read at its 8th page, so its hint faults are
    // taken there, not at its first page.
    let hot: Vec<usize> =
        (0..region.pages() / 4 / 16).flat_map(|f| (0..16).map(move |k| f * 16 + (k + 7) % 16)).collect();
    let cold: Vec<usize> = (region.pages() / 4..region.pages()).collect();
    p.run_until(&region, &hot, Duration::from_secs(120), |_| share_of_pages_on(&region, &hot, 0) >= 0.9);
    let hot_on_0 = share_of_pages_on(&region, &hot, 0);
    let c = p.node1();
    assert!(hot_on_0 >= 0.9, "{:.1}% of the hot pages on node 0: {}", hot_on_0 * 100.0, p.diag());
    assert_eq!(share_of_pages_on(&region, &cold, 1), 1.0, "every untouched page stays on node 1");
    assert!(c.moved >= (hot.len() as f64 * 0.9) as u64, "{}", p.diag());
    assert_eq!((c.call_errors, c.err_other, c.err_efault, c.err_eacces), (0, 0, 0, 0), "{}", p.diag());
    // Data survived the move.
    for &i in &hot {
        assert_eq!(region.read(i), 1);
    }
    p.promoter.stop();
}

#[test]
fn a_workload_that_exits_during_promotion_only_adds_counted_gone_pages() {
    let topo = in_the_box();
    let mut p = Pipeline::start(&topo, PromoterConfig::default());
    let mut child = Command::new(workload_bin())
        .args(["hot-set", "--node", "1", "--size-mib", "64", "--hot-mib", "32", "--seconds", "120"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while p.node1().moved == 0 {
        assert!(t.elapsed() < Duration::from_secs(90), "the workload's pages never moved: {}", p.diag());
        p.pump();
        std::thread::sleep(Duration::from_millis(10));
    }
    // Mid-promotion: events, hints and batches of this pid are still in flight.
    child.kill().unwrap();
    child.wait().unwrap();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        p.pump();
        std::thread::sleep(Duration::from_millis(20));
    }
    let c = p.node1();
    assert_eq!(
        (c.call_errors, c.err_other, c.err_efault, c.err_eacces, c.err_enomem),
        (0, 0, 0, 0, 0),
        "{}",
        p.diag()
    );
    // The worker lives on: our own hot pages still move.
    let region = region_on_node1(8, false);
    let pages: Vec<usize> = (0..region.pages()).collect();
    let before = c.moved;
    p.run_until(&region, &pages, Duration::from_secs(90), |_| share_of_pages_on(&region, &pages, 0) >= 0.9);
    assert!(share_of_pages_on(&region, &pages, 0) >= 0.9, "{}", p.diag());
    assert!(p.node1().moved > before);
}

#[test]
fn observe_only_moves_nothing_but_counts_what_would_move() {
    let topo = in_the_box();
    let cfg = PromoterConfig { rate_limit: RateLimit::ObserveOnly, ..PromoterConfig::default() };
    let mut p = Pipeline::start(&topo, cfg);
    let region = region_on_node1(8, false);
    let pages: Vec<usize> = (0..region.pages()).collect();
    p.run_until(&region, &pages, Duration::from_secs(60), |p| {
        p.node1().would_promote >= region.pages() as u64 / 2
    });
    let c = p.node1();
    assert!(c.would_promote >= region.pages() as u64 / 2, "{}", p.diag());
    assert_eq!((c.moved, c.move_calls), (0, 0));
    assert_eq!(share_on(&nodes_of(&region).unwrap(), 1), 1.0, "nothing moved");
}

fn node_free_and_low(node: u32) -> (u64, u64) {
    let mut env = LiveSystem::new(root());
    let m = env.node_memory(node).unwrap();
    (m.free, m.low)
}

fn workload_bin() -> String {
    std::env::var("HOTPAGE_WORKLOAD").unwrap_or_else(|_| "/bin/hotpage-workload".into())
}

#[test]
fn a_nearly_full_target_stops_promotion_and_nothing_ooms() {
    let topo = in_the_box();
    let oom_before = read_vmstat(root()).unwrap().get("oom_kill").copied().unwrap_or(0);
    // Fill node 0 until it sits between its low watermark and hotpage's headroom,
    // from another process, so its memory is not in this process's scans.
    let cfg = PromoterConfig::default();
    let (_, low) = node_free_and_low(0);
    let total = topo.node(0).unwrap().pages();
    let leave = low + cfg.headroom_pages(total) / 2;
    let mut hog = KillOnDrop(
        Command::new(workload_bin())
            .args(["fill", "--node", "0", "--leave-free-pages", &leave.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // It prints one line once node 0 is full.
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(hog.0.stdout.take().unwrap()), &mut line)
        .unwrap();
    assert!(line.starts_with("filled"), "{line}");
    let (free, _) = node_free_and_low(0);
    assert!(free < low + cfg.headroom_pages(total), "node 0 free {free} pages, low {low}");

    let mut p = Pipeline::start(&topo, cfg);
    let region = region_on_node1(8, false);
    let pages: Vec<usize> = (0..region.pages()).collect();
    // The pages turn READY and wait there: the worker sees no room and walks nothing.
    p.run_until(&region, &pages, Duration::from_secs(60), |p| p.map.ready_pages(1) >= 256);
    let c = p.node1();
    assert!(p.map.ready_pages(1) >= 256, "{}", p.diag());
    assert!(c.limited_rounds >= 1, "{}", p.diag());
    assert_eq!((c.moved, c.move_calls), (0, 0), "{}", p.diag());

    // While the target stays full, with pages turning ready all along, the
    // worker backs off for its sleep each round: few rounds, little CPU.
    let (rounds0, cpu0, t0) = (c.rounds, named_thread_cpu_time("kmigrated1").unwrap(), Instant::now());
    p.run_until(&region, &pages, Duration::from_secs(5), |_| false);
    let (rounds, cpu, ms) = (
        p.node1().rounds - rounds0,
        (named_thread_cpu_time("kmigrated1").unwrap() - cpu0).as_millis() as u64,
        t0.elapsed().as_millis() as u64,
    );
    assert!(rounds <= ms / cfg.sleep_ms + 3, "{rounds} rounds in {ms} ms: {}", p.diag());
    assert!(cpu * 20 <= ms, "the worker used {cpu} ms of CPU in {ms} ms: {}", p.diag());
    assert_eq!(p.node1().moved, 0);

    assert_eq!(share_on(&nodes_of(&region).unwrap(), 1), 1.0, "the pages wait on node 1");
    let oom_after = read_vmstat(root()).unwrap().get("oom_kill").copied().unwrap_or(0);
    assert_eq!(oom_after, oom_before, "nothing was OOM-killed");
    assert!(hog.0.try_wait().unwrap().is_none(), "the hog is alive");
}

/// A child process killed when the test ends, passed or failed, so that what
/// it holds (node 0's memory) does not leak into the next test.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A sysfs choice file ("always [madvise] never") set for a test and put
/// back when dropped.
struct SysfsChoice {
    path: PathBuf,
    original: String,
}

impl SysfsChoice {
    fn set(path: &str, value: &str) -> Self {
        let path = root().join(path);
        let text = std::fs::read_to_string(&path).unwrap();
        let original = text
            .split_whitespace()
            .find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')))
            .unwrap()
            .to_owned();
        std::fs::write(&path, value).unwrap();
        Self { path, original }
    }
}

impl Drop for SysfsChoice {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.path, &self.original);
    }
}

#[test]
fn pte_mapped_large_folios_move_whole_by_their_first_page() {
    let topo = in_the_box();
    // 64 KiB folios (mTHP) only: no PMD THP.
    let _thp = SysfsChoice::set("sys/kernel/mm/transparent_hugepage/enabled", "never");
    let _mthp = SysfsChoice::set("sys/kernel/mm/transparent_hugepage/hugepages-64kB/enabled", "always");
    let mut p = Pipeline::start(&topo, PromoterConfig::default());
    let region = Region::map_huge_aligned(16 << 20).unwrap();
    place_on_node(&region, 1).unwrap();
    assert_eq!(share_on(&nodes_of(&region).unwrap(), 1), 1.0, "every page starts on node 1");
    let flags = KPageFlags::open(root()).unwrap();
    let pagemap = Pagemap::open(root(), std::process::id()).unwrap();
    let folio_of = |i: usize| {
        let pfn = pagemap.entry(region.page_addr(i)).unwrap().pfn().unwrap();
        flags.folio_of(pfn).unwrap()
    };
    let in_mthp = (0..region.pages()).filter(|&i| folio_of(i).is_some_and(|f| f.order == 4)).count();
    assert!(in_mthp * 10 >= region.pages() * 9, "{in_mthp} of {} pages in 64 KiB folios", region.pages());

    // Each hot folio is first read at its 8th page, so its hint faults are
    // taken there, not at its first page.
    let hot: Vec<usize> =
        (0..region.pages() / 4 / 16).flat_map(|f| (0..16).map(move |k| f * 16 + (k + 7) % 16)).collect();
    let cold: Vec<usize> = (region.pages() / 4..region.pages()).collect();
    p.run_until(&region, &hot, Duration::from_secs(120), |_| share_of_pages_on(&region, &hot, 0) >= 0.9);
    let hot_on_0 = share_of_pages_on(&region, &hot, 0);
    assert!(hot_on_0 >= 0.9, "{:.1}% of the hot pages on node 0: {}", hot_on_0 * 100.0, p.diag());
    assert_eq!(share_of_pages_on(&region, &cold, 1), 1.0, "the untouched folios stay on node 1");
    let c = p.node1();
    // Folios move whole and count all their pages; their first page's
    // address maps their first pfn, so none is stale.
    assert!(c.moved >= (hot.len() as f64 * 0.9) as u64, "{}", p.diag());
    assert!(c.stale * 10 <= c.candidates, "{}", p.diag());
    // One record per folio: far fewer candidates than base pages moved.
    assert!(c.candidates * 4 <= c.moved, "{}", p.diag());
    for &i in &hot {
        assert_eq!(region.read(i), 1, "data survived the move");
    }
    p.promoter.stop();
}

fn hotpage_bin() -> PathBuf {
    PathBuf::from(std::env::var("HOTPAGE_BIN").unwrap_or_else(|_| "/bin/hotpage".into()))
}

fn settings_now() -> (String, String) {
    (
        settings::read_value(&root().join(NUMA_BALANCING)).unwrap(),
        settings::read_value(&root().join(PROMOTE_RATE_LIMIT)).unwrap(),
    )
}

/// Starts `hotpage trace --set-tiering` and waits until it has changed the settings.
fn start_trace_with_settings() -> Child {
    let mut child = Command::new(hotpage_bin())
        .args(["trace", "--set-tiering", "--summary-only"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start hotpage");
    let start = Instant::now();
    loop {
        let (mode, rate) = settings_now();
        if rate == "0" && mode.parse::<u64>().unwrap() & 2 != 0 {
            return child;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("hotpage trace exited early: {st}");
        }
        assert!(start.elapsed() < Duration::from_secs(60), "hotpage never changed the settings");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Something other than what hotpage writes, so a restore is visible.
fn distinct_originals() -> SettingsGuard {
    let (mut g, _) = SettingsGuard::acquire(root(), Path::new(TEST_RUN_DIR)).unwrap();
    g.set(NUMA_BALANCING, "1").unwrap();
    g.set(PROMOTE_RATE_LIMIT, "4321").unwrap();
    g
}

#[test]
fn sigterm_restores_the_settings() {
    in_the_box();
    let _originals = distinct_originals();
    let before = settings_now();
    let child = start_trace_with_settings();
    assert_eq!(settings_now(), ("3".to_owned(), "0".to_owned()), "normal mode kept, tiering added");
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "hotpage exits cleanly on SIGTERM: {}", out.status);
    assert_eq!(settings_now(), before);
    assert!(!Path::new("/run/hotpage/kernel-settings.json").exists());
}

#[test]
fn kill_9_then_a_new_start_restores_the_settings() {
    in_the_box();
    let _originals = distinct_originals();
    let before = settings_now();
    let mut child = start_trace_with_settings();
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    let _ = child.wait();
    assert_eq!(settings_now(), ("3".to_owned(), "0".to_owned()), "a crash leaves the settings changed");
    assert!(Path::new("/run/hotpage/kernel-settings.json").exists(), "the state file survives the crash");

    let out = Command::new(hotpage_bin())
        .args(["trace", "--summary-only", "--duration", "0.5"])
        .output()
        .expect("run hotpage again");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("restored proc/sys/kernel/numa_balancing to 1"), "{stderr}");
    assert_eq!(settings_now(), before);
    assert!(!Path::new("/run/hotpage/kernel-settings.json").exists());
}

// ---- the daemon: `hotpage run` with `hotpage stats` over its socket ----

/// A hot-set workload on node 1, started and placed.
struct Workload {
    child: Child,
    pid: u32,
    region: (u64, u64),
    hot: (u64, u64),
}

impl Workload {
    fn start(size_mib: u32, hot_mib: u32, seconds: u32) -> Self {
        let truth = PathBuf::from(format!("/tmp/truth-{}.json", Instant::now().elapsed().as_nanos()));
        let _ = std::fs::remove_file(&truth);
        let child = Command::new(workload_bin())
            .args([
                "hot-set",
                "--node",
                "1",
                "--size-mib",
                &size_mib.to_string(),
                "--hot-mib",
                &hot_mib.to_string(),
            ])
            .args(["--seconds", &seconds.to_string(), "--truth", truth.to_str().unwrap()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        // The workload writes its ground truth once the region is on node 1.
        let text = loop {
            if let Ok(t) = std::fs::read_to_string(&truth)
                && t.ends_with('\n')
            {
                break t;
            }
            assert!(t.elapsed() < Duration::from_secs(60), "the workload never placed its memory");
            std::thread::sleep(Duration::from_millis(50));
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let pair = |a: &serde_json::Value| (a[0].as_u64().unwrap(), a[1].as_u64().unwrap());
        Self { pid: child.id(), child, region: pair(&v["region"]), hot: pair(&v["hot"][0]) }
    }

    /// Pages of the region on each node, from /proc/<pid>/numa_maps.
    fn region_nodes(&self) -> HashMap<u32, u64> {
        let maps = std::fs::read_to_string(format!("/proc/{}/numa_maps", self.pid)).unwrap();
        let start = format!("{:x}", self.region.0);
        let line =
            maps.lines().find(|l| l.split_whitespace().next() == Some(start.as_str())).unwrap_or_else(|| {
                panic!("no numa_maps line for the region at {start}:\n{maps}");
            });
        line.split_whitespace()
            .filter_map(|f| f.strip_prefix('N')?.split_once('='))
            .map(|(n, c)| (n.parse().unwrap(), c.parse().unwrap()))
            .collect()
    }

    fn hot_pages(&self) -> u64 {
        (self.hot.1 - self.hot.0) / 4096
    }

    /// Pages the daemon's stats say it promoted for `pid`.
    fn promoted_in(stats: &serde_json::Value, pid: u32) -> u64 {
        stats["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pid"] == pid)
            .map_or(0, |p| p["promoted_pages"].as_u64().unwrap())
    }

    /// `hotpage stats --json` once this workload has `pages` promoted, or at the limit.
    fn stats_when_promoted(&self, pages: u64, limit: Duration) -> serde_json::Value {
        let t = Instant::now();
        loop {
            let s = stats_json().expect("the daemon answers");
            if Self::promoted_in(&s, self.pid) >= pages || t.elapsed() > limit {
                return s;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const DAEMON_RUN_DIR: &str = "/run/hotpage";

fn hotpage_cli(args: &[&str]) -> std::process::Output {
    Command::new(hotpage_bin()).args(args).output().expect("run hotpage")
}

fn stats_json() -> Option<serde_json::Value> {
    let o = hotpage_cli(&["stats", "--json"]);
    o.status.success().then(|| serde_json::from_slice(&o.stdout).unwrap())
}

/// Starts `hotpage run` with the box tests' scan speed-up and waits until it answers.
fn start_daemon(extra: &[&str]) -> Child {
    let mut child = Command::new(hotpage_bin())
        .args(["run", "--scan-delay-ms", "0", "--scan-period-min-ms", "100", "--scan-period-max-ms", "1000"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start hotpage run");
    let t = Instant::now();
    while stats_json().is_none() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("hotpage run exited early: {st}");
        }
        assert!(t.elapsed() < Duration::from_secs(60), "hotpage run never answered on its socket");
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

fn sigterm(child: Child) -> std::process::Output {
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait_with_output().unwrap()
}

/// Names of the BPF programs loaded in the kernel now.
fn loaded_program_names() -> Vec<String> {
    aya::programs::loaded_programs().filter_map(|p| p.ok()?.name_as_str().map(str::to_owned)).collect()
}

fn vmstat(k: &str) -> u64 {
    read_vmstat(root()).unwrap().get(k).copied().unwrap_or(0)
}

fn pure_tiering_mode() -> SettingsGuard {
    let (mut g, _) = SettingsGuard::acquire(root(), Path::new(TEST_RUN_DIR)).unwrap();
    // Mode 2 only, so scans spend their budget on node-1 pages (docs/box.md).
    g.set(NUMA_BALANCING, "2").unwrap();
    g.set(PROMOTE_RATE_LIMIT, "4321").unwrap();
    g
}

#[test]
fn the_daemon_promotes_the_hot_set_and_its_stats_match_the_kernel() {
    in_the_box();
    let _mode = pure_tiering_mode();
    let before = settings_now();
    let textfile = Path::new("/tmp/hotpage-textfile");
    let _ = std::fs::remove_dir_all(textfile);
    // The daemon first: from then on the kernel's own promotion is held back.
    let daemon = start_daemon(&["--textfile-dir", textfile.to_str().unwrap()]);
    assert_eq!(settings_now(), ("2".to_owned(), "0".to_owned()), "tiering on, kernel promotion held back");
    let migrated0 = vmstat("pgmigrate_success");
    let promoted0 = vmstat("pgpromote_success");
    let w = Workload::start(64, 16, 300);

    let hot = w.hot_pages();
    let snap = w.stats_when_promoted(hot * 9 / 10, Duration::from_secs(150));
    let pid_promoted = |s: &serde_json::Value| Workload::promoted_in(s, w.pid);
    let moved = snap["promoter"][0]["counters"]["moved"].as_u64().unwrap();
    let by_pid = pid_promoted(&snap);
    assert!(by_pid >= hot * 9 / 10, "only {by_pid} of {hot} hot pages promoted: {snap}");
    // What stats says moved, the kernel moved: move_pages migrations are
    // pgmigrate_success; the kernel's own promotion stayed at zero.
    let migrated = vmstat("pgmigrate_success") - migrated0;
    assert!(migrated >= moved, "vmstat pgmigrate_success +{migrated} < stats moved {moved}");
    assert_eq!(vmstat("pgpromote_success"), promoted0, "the kernel promoted nothing itself");
    assert_eq!(snap["nodes"][0]["promoted_in_pages"].as_u64().unwrap(), moved);
    assert_eq!(snap["nodes"][1]["promoted_out_pages"].as_u64().unwrap(), moved);
    // numa_maps of the workload: the region started on node 1, so what is on
    // node 0 now is what hotpage promoted for this pid (and nothing more).
    let on = w.region_nodes();
    let n0 = on.get(&0).copied().unwrap_or(0);
    let again = pid_promoted(&stats_json().unwrap());
    assert!(
        n0 >= by_pid && n0 <= again,
        "numa_maps N0={n0}, stats promoted {by_pid}..{again} pages of pid {}",
        w.pid
    );
    // The human table and the Prometheus text say the same.
    let table = String::from_utf8(hotpage_cli(&["stats"]).stdout).unwrap();
    assert!(table.contains("fentry/numa_migrate_check"), "{table}");
    let metrics = String::from_utf8(hotpage_cli(&["metrics"]).stdout).unwrap();
    assert!(metrics.contains("hotpage_promoted_bytes_total{node=\"1\",target=\"0\"}"), "{metrics}");
    let top = String::from_utf8(hotpage_cli(&["top"]).stdout).unwrap();
    assert!(top.contains(&w.pid.to_string()) && top.contains("hotpage-workloa"), "{top}");

    assert!(loaded_program_names().iter().any(|n| n == "hint_fault"), "{:?}", loaded_program_names());
    let out = sigterm(daemon);
    assert!(out.status.success(), "hotpage run exits cleanly on SIGTERM: {}", out.status);
    assert!(
        !loaded_program_names().iter().any(|n| n == "hint_fault"),
        "our program is gone: {:?}",
        loaded_program_names()
    );
    assert_eq!(settings_now(), before, "settings restored");
    assert!(!Path::new(DAEMON_RUN_DIR).join("hotpage.sock").exists(), "socket removed");
    assert!(!Path::new(DAEMON_RUN_DIR).join("kernel-settings.json").exists());
    let text = std::fs::read_to_string(textfile.join("hotpage.prom")).unwrap();
    assert!(text.contains("hotpage_promoted_bytes_total"), "{text}");
    // `cargo xtask test` checks it with the reference parser on the host.
    std::fs::write("/results/live-metrics.prom", &text).unwrap();
}

#[test]
fn the_daemon_in_observe_only_mode_moves_nothing_and_changes_no_setting() {
    in_the_box();
    let _mode = pure_tiering_mode();
    // Observe-only leaves the kernel alone, so give it hint faults without promotion here.
    let (mut g, _) = SettingsGuard::acquire(root(), Path::new("/run/hotpage-vm-tests-2")).unwrap();
    g.set(PROMOTE_RATE_LIMIT, "0").unwrap();
    for (k, v) in [(SCAN_DELAY_MS, "0"), (SCAN_PERIOD_MIN_MS, "100"), (SCAN_PERIOD_MAX_MS, "1000")] {
        g.set(k, v).unwrap();
    }
    let before = settings_now();
    let w = Workload::start(32, 8, 300);
    let mut daemon =
        Command::new(hotpage_bin()).args(["run", "--observe-only"]).stdout(Stdio::null()).spawn().unwrap();
    let t = Instant::now();
    let snap = loop {
        if let Some(s) = stats_json()
            && (s["promoter"][0]["counters"]["would_promote"].as_u64().unwrap() >= w.hot_pages() / 2
                || t.elapsed() > Duration::from_secs(120))
        {
            break s;
        }
        if let Ok(Some(st)) = daemon.try_wait() {
            panic!("hotpage run --observe-only exited: {st}");
        }
        assert!(t.elapsed() < Duration::from_secs(150), "no answer from the daemon");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(settings_now(), before, "observe-only changes no kernel setting");
    let c = &snap["promoter"][0]["counters"];
    assert!(c["would_promote"].as_u64().unwrap() >= w.hot_pages() / 2, "{snap}");
    assert_eq!((c["moved"].as_u64(), c["move_calls"].as_u64()), (Some(0), Some(0)), "{snap}");
    assert_eq!(snap["observe_only"], true);
    assert_eq!(w.region_nodes().get(&0).copied().unwrap_or(0), 0, "nothing of the region moved to node 0");
    assert!(sigterm(daemon).status.success());
}

#[test]
fn the_daemon_killed_with_9_is_cleaned_up_by_the_next_start() {
    in_the_box();
    let _originals = distinct_originals();
    let before = settings_now();
    let mut daemon = start_daemon(&[]);
    daemon.kill().unwrap();
    let _ = daemon.wait();
    assert_eq!(settings_now(), ("3".to_owned(), "0".to_owned()), "a crash leaves the settings changed");
    assert!(Path::new(DAEMON_RUN_DIR).join("kernel-settings.json").exists());
    assert!(Path::new(DAEMON_RUN_DIR).join("hotpage.sock").exists(), "a dead daemon's socket stays behind");
    // The next start restores them, replaces the stale socket and runs.
    let out = Command::new(hotpage_bin()).args(["run", "--duration", "1"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("restored proc/sys/kernel/numa_balancing to 1"), "{stderr}");
    assert_eq!(settings_now(), before);
    assert!(!Path::new(DAEMON_RUN_DIR).join("hotpage.sock").exists());
    assert!(!loaded_program_names().iter().any(|n| n == "hint_fault"));
}

#[test]
fn a_second_daemon_is_refused_while_one_runs() {
    in_the_box();
    let _originals = distinct_originals();
    let daemon = start_daemon(&[]);
    let out = hotpage_cli(&["run", "--duration", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("already running"), "{stderr}");
    assert!(stats_json().is_some(), "the first daemon is unharmed");
    assert!(sigterm(daemon).status.success());
}

#[test]
fn the_sample_source_alone_promotes_the_hot_set() {
    in_the_box();
    let _mode = pure_tiering_mode();
    // No PMU under TCG: software page-fault samples, which the kernel's NUMA
    // hint faults raise too; hotpage's own hint-fault program stays off. The
    // budget is raised because TCG runs the BPF program and the pagemap
    // lookups 10-20 times slower than hardware.
    let daemon = start_daemon(&["--no-hint-faults", "--samples", "software", "--cpu-budget-percent", "25"]);
    let w = Workload::start(64, 16, 300);
    let hot = w.hot_pages();
    let snap = w.stats_when_promoted(hot * 9 / 10, Duration::from_secs(150));
    let pid_promoted = |s: &serde_json::Value| Workload::promoted_in(s, w.pid);
    assert!(
        pid_promoted(&snap) >= hot * 9 / 10,
        "only {} of {hot} hot pages promoted: {snap}",
        pid_promoted(&snap)
    );
    let sources: Vec<&str> =
        snap["sources"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(sources, ["samples"], "{snap}");
    assert_eq!(snap["sampler"]["kind"], "software_page_faults", "{snap}");
    assert!(snap["sample_pfn_lookups"]["resolved"].as_u64().unwrap() > 0, "{snap}");
    assert!(snap["sampler"]["period"].as_u64().unwrap() >= 1);
    let names = loaded_program_names();
    assert!(names.iter().any(|n| n == "hw_sample") && !names.iter().any(|n| n == "hint_fault"), "{names:?}");
    let hot_nodes = {
        let on = w.region_nodes();
        on.get(&0).copied().unwrap_or(0)
    };
    assert!(hot_nodes >= hot * 9 / 10, "numa_maps: {hot_nodes} pages of the region on node 0");
    assert!(sigterm(daemon).status.success());
    assert!(!loaded_program_names().iter().any(|n| n == "hw_sample"), "the sample program is gone");
}
