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
    bpf::{LoadOptions, LoadedSource, SourceCounters, SourceKind},
    collector::{Collector, EventConsumer},
    hotmap::{HotMap, HotMapConfig, HotMapFeeder, MemoryLayout},
    kernel,
    kernel_settings::{
        self, NUMA_BALANCING, PROMOTE_RATE_LIMIT, SCAN_DELAY_MS, SCAN_PERIOD_MAX_MS, SCAN_PERIOD_MIN_MS,
        SettingsGuard,
    },
    pagemap::Pagemap,
    topology::TierTopology,
    vmstat::read_vmstat,
};
use hotpage_common::{HotpageEvent, event_flags, source};
use hotpage_tests::{
    memory::Region,
    require_root,
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
/// (first scan at once, then every 100 ms to 1 s) so tests see faults in seconds.
fn tiering_session() -> SettingsGuard {
    let (mut g, _) = SettingsGuard::acquire(root(), Path::new(TEST_RUN_DIR)).expect("settings lock");
    g.hint_faults_without_kernel_promotion().expect("tiering settings");
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
        let mut src = LoadedSource::load(SourceKind::HintFault, &LoadOptions::default()).expect("load");
        src.set_lower_tier(&topo.lower_tier_ranges().unwrap()).unwrap();
        let ring = src.take_ring().unwrap();
        let counters = src.take_counters().unwrap();
        src.attach_fentry(hook).expect("fentry attaches in the box");
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
        for i in (0..region.pages()).step_by(step) {
            std::hint::black_box(region.read(i));
        }
        faults.drain_into(sink);
        if enough(sink) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
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
        kernel_settings::read_value(&root().join(NUMA_BALANCING)).unwrap(),
        kernel_settings::read_value(&root().join(PROMOTE_RATE_LIMIT)).unwrap(),
    );
    {
        let k = tiering_session();
        // The settings are hotpage's: set by the guard, as hotpage runs.
        assert_ne!(k.read_u64(NUMA_BALANCING).unwrap() & 2, 0, "memory tiering mode on");
        assert_eq!(k.read_u64(PROMOTE_RATE_LIMIT).unwrap(), 0);

        let mut faults = HintFaults::attach(&topo);
        let vm0 = read_vmstat(root()).unwrap();
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
        kernel_settings::read_value(&root().join(NUMA_BALANCING)).unwrap(),
        kernel_settings::read_value(&root().join(PROMOTE_RATE_LIMIT)).unwrap(),
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
    let mut events = Events::default();
    // Every page faults once per scan pass (100 ms to 1 s apart here); two
    // passes within the 3 s window make it ready.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(90) && map.ready_pages(1) < region.pages() as u64 / 2 {
        for i in 0..region.pages() {
            std::hint::black_box(region.read(i));
        }
        faults.collector.drain(&mut Tee { events: &mut events, feeder: &mut feeder });
        std::thread::sleep(Duration::from_millis(20));
    }
    let ready = map.ready_pages(1);
    assert!(ready >= region.pages() as u64 / 2, "{ready} of {} pages ready", region.pages());
    let stats = feeder.stats();
    assert_eq!(stats.newly_ready, ready, "nothing walked the map, so every ready page is still there");
    assert_eq!(map.counters().recorded_accesses, stats.updated);
    assert!(map.counters().recorded_hintfaults >= stats.updated);

    // Every ready page is one of ours, with a hint that points back to it.
    let pagemap = Pagemap::open(root(), std::process::id()).unwrap();
    let (start, end) = (region.addr(), region.addr() + region.len() as u64);
    let mut seen = 0;
    map.walk_node(1, |p| {
        let hint = map.hints().get(p.pfn).expect("a ready page has a hint");
        assert_eq!(hint.pid, std::process::id());
        assert!((start..end).contains(&hint.vaddr), "{:#x}", hint.vaddr);
        assert_eq!(pagemap.entry(hint.vaddr).unwrap().pfn(), Some(p.pfn));
        assert!(p.fields.freq >= 2);
        seen += 1;
        hotpage::hotmap::WalkControl::Continue
    });
    assert_eq!(seen, ready);
    assert_eq!(map.ready_pages(1), 0, "the walk took them all");
}

fn hotpage_bin() -> PathBuf {
    PathBuf::from(std::env::var("HOTPAGE_BIN").unwrap_or_else(|_| "/bin/hotpage".into()))
}

fn settings_now() -> (String, String) {
    (
        kernel_settings::read_value(&root().join(NUMA_BALANCING)).unwrap(),
        kernel_settings::read_value(&root().join(PROMOTE_RATE_LIMIT)).unwrap(),
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
