//! The promoter in the box: hot pages move and cold ones stay, large folios,
//! a workload that exits, observe-only, a full target.

use super::common::*;

/// Hint faults → collector → hot map → promoter, assembled as the daemon does.
struct Pipeline {
    pub faults: HintFaults,
    pub feeder: HotMapFeeder,
    pub map: Arc<HotMap>,
    pub promoter: Promoter,
    pub vmstat0: std::collections::BTreeMap<String, u64>,
    pub _kernel: SettingsGuard,
}

impl Pipeline {
    pub fn start(topo: &TierTopology, config: PromoterConfig) -> Self {
        let kernel = tiering_session();
        let vmstat0 = read_vmstat(root()).unwrap();
        let faults = HintFaults::attach(topo);
        let map = Arc::new(HotMap::new(&MemoryLayout::from(topo), HotMapConfig::default(), 1 << 18).unwrap());
        let feeder = HotMapFeeder::new(map.clone());
        let targets = Targets::new(topo, RecordMode::Default, None);
        let promoter = Promoter::start(map.clone(), targets, config, |_| LiveSystem::new(root())).unwrap();
        Self { faults, feeder, map, promoter, vmstat0, _kernel: kernel }
    }

    pub fn pump(&mut self) {
        self.faults.collector.drain(&mut self.feeder);
    }

    pub fn node1(&self) -> CounterSnapshot {
        self.promoter.reports().into_iter().find(|r| r.node == 1).unwrap().counters
    }

    /// Everything that explains a failure: kernel NUMA counters since the start,
    /// what the BPF program and the hot map saw, what the promoter did.
    pub fn diag(&self) -> String {
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

    /// Pumps events until `done` or the limit (another process does the reading).
    pub fn pump_until(&mut self, limit: Duration, done: impl Fn(&Self) -> bool) {
        let start = Instant::now();
        while start.elapsed() < limit && !done(self) {
            self.pump();
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Reads `pages` of the region and pumps events until `done` or the limit.
    pub fn run_until(
        &mut self,
        region: &Region,
        pages: &[usize],
        limit: Duration,
        done: impl Fn(&Self) -> bool,
    ) {
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

fn node_free_and_low(node: u32) -> (u64, u64) {
    let mut env = LiveSystem::new(root());
    let m = env.node_memory(node).unwrap();
    (m.free, m.low)
}

/// A sysfs choice file ("always [madvise] never") set for a test and put
/// back when dropped.
struct SysfsChoice {
    pub path: PathBuf,
    pub original: String,
}

impl SysfsChoice {
    pub fn set(path: &str, value: &str) -> Self {
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
    // A slow rate: the 32 MiB hot set takes seconds to move, so the exit
    // comes while many of its READY pages still wait.
    let config = PromoterConfig { rate_limit: RateLimit::MbPerSec(4), ..PromoterConfig::default() };
    let mut p = Pipeline::start(&topo, config);
    let mut w = Workload::start(64, 32, 120);
    let pid = w.pid;
    let waiting = |p: &Pipeline| p.map.hints().count_by_pid().get(&pid).copied().unwrap_or(0);
    let t = Instant::now();
    // Mid-promotion: some of its pages moved, hundreds wait with their hints.
    // Both read in one go (the worker may take the hints a moment later).
    loop {
        let (c, w) = (p.node1(), waiting(&p));
        if c.moved > 0 && w >= 256 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(90), "the workload's pages never moved: {}", p.diag());
        p.pump();
        std::thread::sleep(Duration::from_millis(10));
    }
    w.child.0.kill().unwrap();
    w.child.0.wait().unwrap();
    // Counted from the exit itself: read before the kill, the batch the
    // worker started while the process still lived counted as late (a CI
    // run: 520 pages "after the exit", a batch and a bit).
    let at_exit = p.node1();
    // The worker takes hints into its rate-limited queue before it gets to
    // them: wait for the hints to go and for the queue to reach the dead pages.
    let gone_since = |p: &Pipeline| {
        let c = p.node1();
        (c.process_gone + c.stale + c.err_esrch) - (at_exit.process_gone + at_exit.stale + at_exit.err_esrch)
    };
    p.pump_until(Duration::from_secs(60), |p| waiting(p) == 0 && gone_since(p) > 0);
    let c = p.node1();
    assert_eq!(waiting(&p), 0, "every waiting page of the dead process was taken: {}", p.diag());
    // Each was counted as gone (or, its pfn already reused, stale), none as an error.
    assert!(gone_since(&p) > 0, "the exit was counted as gone pages: {}", p.diag());
    // Nothing of the dead process moved after its exit, but a batch already in move_pages.
    let late = c.moved - at_exit.moved;
    assert!(
        late <= PromoterConfig::default().batch_pages as u64,
        "{late} pages moved after the exit: {}",
        p.diag()
    );
    assert_eq!(
        (c.call_errors, c.err_other, c.err_efault, c.err_eacces, c.err_enomem),
        (0, 0, 0, 0, 0),
        "{}",
        p.diag()
    );
    // The worker lives on: the next process's hot pages still move. Another
    // workload, not a region of this process: the kernel scans a VMA only for
    // the threads that touched it lately, and the test binary, with the
    // threads of every test before, skipped a fresh region here for 90 s in a
    // CI run (NUMAB_SKIP_PID_INACTIVE), with no hint fault to promote on.
    let next = Workload::start(8, 8, 120);
    let on_0 = |w: &Workload| w.region_nodes().get(&0).copied().unwrap_or(0);
    p.pump_until(Duration::from_secs(90), |_| on_0(&next) >= next.hot_pages() * 9 / 10);
    assert!(
        on_0(&next) >= next.hot_pages() * 9 / 10,
        "numa_maps {:?} of the next workload: {}",
        next.region_nodes(),
        p.diag()
    );
    assert!(p.node1().moved > c.moved);
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
    // The pages turn READY and wait there: the worker sees no room and walks
    // nothing (its rounds before any page was READY were idle, not limited).
    p.run_until(&region, &pages, Duration::from_secs(60), |p| {
        p.map.ready_pages(1) >= 256 && p.node1().limited_rounds >= 1
    });
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
