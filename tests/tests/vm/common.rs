//! What the box tests share: the box itself, the hint-fault source and the
//! pipeline as the daemon assembles them, workloads, and the daemon as a child.

pub use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

pub use hotpage::{
    collector::HotMapFeeder,
    collector::{Collector, EventConsumer},
    hotmap::{HotMap, HotMapConfig, MemoryLayout, RecordMode},
    kernel,
    kernel::settings::{
        self, NUMA_BALANCING, PROMOTE_RATE_LIMIT, SCAN_DELAY_MS, SCAN_PERIOD_MAX_MS, SCAN_PERIOD_MIN_MS,
        SettingsGuard,
    },
    promoter::{CounterSnapshot, LiveSystem, Promoter, PromoterConfig, PromoterSystem, RateLimit, Targets},
    sources::{LoadOptions, LoadedSource, SourceCounters},
    sys::kpageflags::KPageFlags,
    sys::pagemap::Pagemap,
    sys::topology::TierTopology,
    sys::vmstat::read_vmstat,
};
pub use hotpage_common::{HotpageEvent, event_flags, source};
pub use hotpage_tests::{
    daemon::{Daemon, RUN_DIR},
    memory::Region,
    require_root,
    thread_time::named_thread_cpu_time,
    workload::{nodes_of, place_on_node, share_on},
};
pub const ROOT: &str = "/";
/// The library-level tests keep their lock apart from the CLI's.
pub const TEST_RUN_DIR: &str = "/run/hotpage-vm-tests";

pub fn root() -> &'static Path {
    Path::new(ROOT)
}

pub fn in_the_box() -> TierTopology {
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
pub fn tiering_session() -> SettingsGuard {
    let (mut g, _) = SettingsGuard::acquire(root(), Path::new(TEST_RUN_DIR)).expect("settings lock");
    g.hint_faults_without_kernel_promotion().expect("tiering settings");
    g.set(NUMA_BALANCING, "2").expect("numa_balancing");
    g.set(SCAN_DELAY_MS, "0").expect("scan_delay_ms");
    g.set(SCAN_PERIOD_MIN_MS, "100").expect("scan_period_min_ms");
    g.set(SCAN_PERIOD_MAX_MS, "1000").expect("scan_period_max_ms");
    g
}

/// The hint-fault program attached as the daemon attaches it.
pub struct HintFaults {
    pub _src: LoadedSource,
    pub collector: Collector,
    pub counters: SourceCounters,
    pub _rt: tokio::runtime::Runtime,
}

impl HintFaults {
    pub fn attach(topo: &TierTopology) -> Self {
        let btf = kernel::kernel_btf(root()).expect("kernel BTF");
        let hook =
            kernel::HintFaultHook::probe(&btf, root(), &kernel::release(root())).expect("a hint-fault hook");
        assert_eq!(hook.function, "numa_migrate_check", "Linux 6.12 has numa_migrate_check");
        let ranges = topo.lower_tier_ranges().unwrap();
        let (src, ring, counters) = LoadedSource::hint_faults(&LoadOptions::default(), &ranges, &hook)
            .expect("fentry attaches in the box");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let collector = {
            let _g = rt.enter();
            Collector::new(vec![ring], Duration::from_millis(100)).unwrap()
        };
        Self { _src: src, collector, counters, _rt: rt }
    }

    pub fn drain_into(&mut self, sink: &mut Events) {
        self.collector.drain(sink);
    }
}

/// Events of this process, by page.
#[derive(Default)]
pub struct Events {
    pub by_page: HashMap<u64, HotpageEvent>,
    pub count: u64,
}

impl EventConsumer for Events {
    fn consume(&mut self, ev: &HotpageEvent) {
        if ev.pid == std::process::id() {
            self.count += 1;
            self.by_page.insert(ev.vaddr & !0xfff, *ev);
        }
    }
}

/// Reads the pages again and again for `d`. NUMA balancing schedules scans by
/// the task's CPU time, not wall time, so an accessing thread must keep busy.
pub fn keep_reading(region: &Region, pages: impl Iterator<Item = usize> + Clone, d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        for i in pages.clone() {
            std::hint::black_box(region.read(i));
        }
    }
}

pub fn region_on_node1(mib: usize, huge: bool) -> Region {
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

pub fn workload_bin() -> String {
    std::env::var("HOTPAGE_WORKLOAD").unwrap_or_else(|_| "/bin/hotpage-workload".into())
}

pub fn hotpage_bin() -> PathBuf {
    PathBuf::from(std::env::var("HOTPAGE_BIN").unwrap_or_else(|_| "/bin/hotpage".into()))
}

pub fn settings_now() -> (String, String) {
    (
        settings::read_value(&root().join(NUMA_BALANCING)).unwrap(),
        settings::read_value(&root().join(PROMOTE_RATE_LIMIT)).unwrap(),
    )
}

/// Something other than what hotpage writes, so a restore is visible.
pub fn distinct_originals() -> SettingsGuard {
    let (mut g, _) = SettingsGuard::acquire(root(), Path::new(TEST_RUN_DIR)).unwrap();
    g.set(NUMA_BALANCING, "1").unwrap();
    g.set(PROMOTE_RATE_LIMIT, "4321").unwrap();
    g
}

/// A hot-set workload on node 1, started and placed; killed when dropped,
/// so a failed test does not leave it running into the next.
pub struct Workload {
    pub child: KillOnDrop,
    pub pid: u32,
    pub region: (u64, u64),
    pub hot: (u64, u64),
}

impl Workload {
    pub fn start(size_mib: u32, hot_mib: u32, seconds: u32) -> Self {
        // One file per workload: `Instant::now().elapsed()`, the name before,
        // was always about 0 ns, so every workload shared one file.
        static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let truth = PathBuf::from(format!("/tmp/truth-{}-{n}.json", std::process::id()));
        let _ = std::fs::remove_file(&truth);
        // Killed on drop from here: a workload that never places its memory
        // does not outlive the failed test.
        let child = KillOnDrop(
            Command::new(workload_bin())
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
                .unwrap(),
        );
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
        Self { pid: child.0.id(), child, region: pair(&v["region"]), hot: pair(&v["hot"][0]) }
    }

    /// Pages of the region on each node, from /proc/<pid>/numa_maps.
    pub fn region_nodes(&self) -> HashMap<u32, u64> {
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

    pub fn hot_pages(&self) -> u64 {
        (self.hot.1 - self.hot.0) / 4096
    }
}

/// A child process killed when the test ends, passed or failed, so that what
/// it holds (its memory on either node) does not leak into the next test.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
