//! `bench e2e` (in the box): GUPS workloads with a known hot set, first placed
//! on node 1, under each system in turn: no migration, the kernel's NUMA
//! balancing mode 2 (NUMAB-2), DAMON's `migrate_hot`, hotpage with pghot's
//! rule and with its latency rule (hint faults), hotpage with the sample
//! source (software page faults: the box has no PMU), and hotpage in
//! observe-only mode. Every half second the bench reads where each page of each
//! workload is (move_pages in query mode) and reports how fast and how exactly
//! the hot set reached node 0. TCG does not make node 1 slower, so this
//! measures detection and movement, not application speed.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use hotpage::{
    kernel::settings::{
        DEMOTION_ENABLED, NUMA_BALANCING, PROMOTE_RATE_LIMIT, SCAN_DELAY_MS, SCAN_PERIOD_MAX_MS,
        SCAN_PERIOD_MIN_MS, SettingsGuard,
    },
    promoter::move_pages::move_pages,
    sys::{topology::TierTopology, vmstat::read_vmstat},
};
use serde::Serialize;

use super::damon::{Kdamond, MigrateHot};
use crate::daemon::Daemon;

const RUN_DIR: &str = "/run/hotpage-bench";
const PAGE: u64 = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum System {
    NoMigration,
    Numab2,
    DamonMigrateHot,
    HotpagePghot,
    Hotpage,
    HotpageSamples,
    HotpageDamon,
    /// The DAMON source with DAMON's own 20 samples per aggregation (its
    /// 100 ms `aggr_us`), and with 200: the sample count's comparison
    /// (docs/damon.md); only when asked for by name.
    #[serde(rename = "hotpage_damon_20_samples")]
    HotpageDamon20Samples,
    #[serde(rename = "hotpage_damon_200_samples")]
    HotpageDamon200Samples,
    HotpageObserveOnly,
    /// hotpage with the scanner's rest on (`--scan-rest-after-s 20`; off by
    /// default): the rest's comparison; only when asked for by name.
    HotpageRest,
    /// hotpage at its defaults without `--record`: what recording every run
    /// for the replays adds to hotpage's own CPU; only when asked for by name.
    HotpageUnrecorded,
    /// The kernel's hint faults at hotpage's scan pace with nothing attached
    /// and nothing promoted: what the faults alone cost the workload, beside
    /// hotpage observe-only (the same faults with hotpage's program on them);
    /// only when asked for by name, with `--fast-scan` for the observe-only
    /// run's pace to match.
    HintFaultsOnly,
}

impl System {
    pub const ALL: [System; 13] = [
        Self::NoMigration,
        Self::Numab2,
        Self::DamonMigrateHot,
        Self::HotpagePghot,
        Self::Hotpage,
        Self::HotpageSamples,
        Self::HotpageDamon,
        Self::HotpageDamon20Samples,
        Self::HotpageDamon200Samples,
        Self::HotpageObserveOnly,
        Self::HotpageRest,
        Self::HotpageUnrecorded,
        Self::HintFaultsOnly,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::NoMigration => "no migration",
            Self::Numab2 => "kernel NUMAB-2",
            Self::DamonMigrateHot => "DAMON migrate_hot",
            Self::HotpagePghot => "hotpage, pghot rule",
            Self::Hotpage => "hotpage",
            Self::HotpageSamples => "hotpage (samples)",
            Self::HotpageDamon => "hotpage (DAMON)",
            Self::HotpageDamon20Samples => "hotpage (DAMON, 20 samples)",
            Self::HotpageDamon200Samples => "hotpage (DAMON, 200 samples)",
            Self::HotpageObserveOnly => "hotpage observe-only",
            Self::HotpageRest => "hotpage, scanner rests",
            Self::HotpageUnrecorded => "hotpage, not recorded",
            Self::HintFaultsOnly => "hint faults only, nothing attached",
        }
    }

    /// The JSON name (`--systems`).
    pub fn name(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
    }

    /// Comparisons that run only when named in `--systems`.
    fn by_name_only(self) -> bool {
        self.damon_samples().is_some()
            || matches!(self, Self::HotpageRest | Self::HotpageUnrecorded | Self::HintFaultsOnly)
    }

    /// Whether its runs are recorded (`--record`) for the replays.
    fn recorded(self) -> bool {
        self != Self::HotpageUnrecorded
    }

    /// DAMON samples per aggregation other than hotpage's default (80).
    fn damon_samples(self) -> Option<u64> {
        match self {
            Self::HotpageDamon20Samples => Some(20),
            Self::HotpageDamon200Samples => Some(200),
            _ => None,
        }
    }

    fn hotpage_args(self) -> Option<&'static [&'static str]> {
        match self {
            Self::HotpagePghot => Some(&["--samples", "off", "--policy", "pghot"]),
            // hotpage at its defaults: hint faults, the latency rule.
            Self::Hotpage | Self::HotpageUnrecorded => Some(&["--samples", "off"]),
            // TCG runs the program and the pagemap lookups 10-20 times slower
            // than hardware, so the box gets a larger CPU budget than the 3% default.
            Self::HotpageSamples => {
                Some(&["--no-hint-faults", "--samples", "software", "--cpu-budget-percent", "25"])
            }
            // DAMON alone, with NUMA balancing off (hotpage sets it). Its
            // budget is scaled for TCG as the sample source's is: at the 3%
            // default the kdamond's emulated page-table checks (10-20× a
            // hardware one) widen its intervals ×16 and the hot set is found
            // 4× later (docs/benchmarks.md).
            Self::HotpageDamon | Self::HotpageDamon20Samples | Self::HotpageDamon200Samples => {
                Some(&["--sources", "damon", "--damon-cpu-budget-percent", "25"])
            }
            Self::HotpageObserveOnly => Some(&["--observe-only", "--samples", "off"]),
            Self::HotpageRest => Some(&["--samples", "off", "--scan-rest-after-s", "20"]),
            _ => None,
        }
    }
}

/// A workload scenario.
#[derive(Clone, Debug, Serialize)]
pub struct Scenario {
    pub name: String,
    pub region_mib: u64,
    pub hot_mib: u64,
    /// Share of the workload's updates that go to its hot set (the rest go
    /// anywhere in the region).
    pub hot_percent: u64,
    pub procs: usize,
    pub seconds: f64,
    /// The hot set moves at this time (seconds after the start).
    pub move_at: Option<f64>,
    /// "Tight": node 0 is first filled by another process's untouched
    /// memory, leaving less free than the hot set, and demotion is on.
    pub tight: bool,
    /// Repeated (`--reps`) and shown as medians; the others run once.
    pub headline: bool,
}

/// One workload process's ground truth.
#[derive(Clone, Debug, Serialize)]
struct Truth {
    pid: u32,
    region: (u64, u64),
    hot: (u64, u64),
    moved_hot: Option<(u64, u64)>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Sample {
    pub t: f64,
    /// Share of the (current) hot set on node 0, all processes.
    pub hot_on_node0: f64,
    /// Pages of the regions on node 0 that are not hot (promoted cold pages).
    pub cold_pages_on_node0: u64,
    pub pages_on_node0: u64,
    /// The kernel's `numa_hint_faults` since the clock started.
    pub hint_faults: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    pub system: System,
    pub label: &'static str,
    pub scenario: String,
    /// The scenario's move of its hot set (seconds after the start), and
    /// whether it was "tight": what a run is scored against.
    pub move_at_s: Option<f64>,
    pub tight: bool,
    /// Which repetition of the cell (0-based).
    pub rep: usize,
    pub hot_pages: u64,
    pub region_pages: u64,
    pub t50_s: Option<f64>,
    pub t90_s: Option<f64>,
    /// After the move: seconds until 90% of the new hot set is on node 0.
    pub follow_s: Option<f64>,
    pub final_hot_on_node0: f64,
    /// Hot bytes on node 0 ÷ all region bytes on node 0 (everything there was promoted).
    pub precision: f64,
    pub recall: f64,
    pub migrated_bytes: u64,
    pub cold_promoted_bytes: u64,
    /// CPU seconds of the hotpage process (user + system), start to end.
    pub hotpage_cpu_s: Option<f64>,
    /// Of which before the clock started: loading the programs, and the
    /// workloads placing their memory.
    pub hotpage_startup_cpu_s: Option<f64>,
    /// hotpage's CPU seconds by thread name at the end (where it goes).
    pub hotpage_threads: Vec<(String, f64)>,
    /// hotpage's rule at the end (`stats --json`): verdicts, thresholds.
    pub hotpage_rule: Option<serde_json::Value>,
    /// CPU seconds of DAMON's kdamond thread.
    pub kdamond_cpu_s: Option<f64>,
    /// CPU seconds of node 0's kswapd (demotion, in "tight").
    pub kswapd_cpu_s: f64,
    /// Whether the kernel called node 0 hopeless for kswapd (`node_unreclaimable`
    /// in /proc/zoneinfo, after repeated failed reclaims: kswapd is then not
    /// woken) when the workload started and at its end. Three "tight" runs
    /// stalled with kswapd idle; this says whether that was why.
    pub node0_unreclaimable: (Option<bool>, Option<bool>),
    /// System CPU seconds of the workloads (their hint faults and the kernel's migrations run there).
    pub workload_sys_cpu_s: f64,
    pub numa_hint_faults: u64,
    /// Of which in the second half of the run: what watching costs once the
    /// hot set is in.
    pub hint_faults_second_half: u64,
    pub kernel_promoted_pages: u64,
    /// The run's recording and its workloads' ground truths, sent out of the
    /// box beside the results (`hotpage replay FILE --truth T…`).
    pub recording: Option<String>,
    pub truths: Vec<String>,
    pub timeline: Vec<Sample>,
}

#[derive(Clone, Debug, Serialize)]
pub struct E2eReport {
    pub bench: &'static str,
    pub kernel: String,
    pub scan: &'static str,
    pub runs: Vec<RunResult>,
    /// Per (scenario, system): the median over its repetitions.
    pub cells: Vec<Cell>,
    /// Runs that failed; their cells hold the other repetitions, or none.
    pub failed: Vec<FailedRun>,
}

/// A run that did not complete, and why.
#[derive(Clone, Debug, Serialize)]
pub struct FailedRun {
    pub scenario: String,
    pub label: &'static str,
    pub rep: usize,
    pub error: String,
}

/// One (scenario, system) cell: medians over its repetitions.
#[derive(Clone, Debug, Serialize)]
pub struct Cell {
    pub scenario: String,
    pub system: System,
    pub label: &'static str,
    pub reps: usize,
    pub t50_s: Option<f64>,
    pub t90_s: Option<f64>,
    pub follow_s: Option<f64>,
    pub final_hot_on_node0: f64,
    pub precision: f64,
    pub migrated_bytes: f64,
    pub cold_promoted_bytes: f64,
    /// The system's own CPU (hotpage or kdamond) plus kswapd, plus the
    /// workloads' system time above the no-migration cell's.
    pub tiering_cost_cpu_s: Option<f64>,
    pub workload_sys_cpu_s: f64,
}

fn bin(var: &str, default: &str) -> PathBuf {
    PathBuf::from(std::env::var(var).unwrap_or_else(|_| default.into()))
}

fn vmstat(k: &str) -> u64 {
    read_vmstat(Path::new("/")).ok().and_then(|m| m.get(k).copied()).unwrap_or(0)
}

/// (utime, stime) in seconds from a `stat` file.
fn stat_cpu_seconds(path: &Path) -> Option<(f64, f64)> {
    let (user, system) = hotpage::sys::thread_time::stat_cpu_times(path)?;
    Some((user.as_secs_f64(), system.as_secs_f64()))
}

/// utime + stime of a process, seconds (or stime alone).
fn cpu_seconds(pid: u32, system_only: bool) -> f64 {
    let Some((user, system)) = stat_cpu_seconds(Path::new(&format!("/proc/{pid}/stat"))) else { return 0.0 };
    if system_only { system } else { user + system }
}

/// The running daemon's rule report (verdicts, thresholds), without
/// its latency histograms.
/// hotpage's `stats --json` snapshot, once at the end of a run.
fn stats_snapshot() -> Option<serde_json::Value> {
    let out = Command::new(bin("HOTPAGE_BIN", "/bin/hotpage")).args(["stats", "--json"]).output().ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// hotpage's rule from a snapshot: verdicts and thresholds, without the histograms.
fn rule_report(snapshot: &serde_json::Value) -> Option<serde_json::Value> {
    let mut rule = snapshot.get("rule")?.clone();
    for n in rule.get_mut("nodes")?.as_array_mut()? {
        n.as_object_mut()?.remove("latency");
    }
    Some(rule)
}

/// CPU seconds of hotpage's own kdamond (DAMON source), from a snapshot.
fn hotpage_kdamond_cpu(snapshot: &serde_json::Value) -> Option<f64> {
    Some(snapshot.get("damon")?.get("kdamond_cpu_ns")?.as_u64()? as f64 / 1e9)
}

/// CPU seconds of a process's threads, summed by thread name, largest first.
fn thread_cpu_seconds(pid: u32) -> Vec<(String, f64)> {
    let mut by_name: Vec<(String, f64)> = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return by_name };
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default().trim().to_owned();
        let Some((user, system)) = stat_cpu_seconds(&t.path().join("stat")) else { continue };
        match by_name.iter_mut().find(|(n, _)| *n == comm) {
            Some(e) => e.1 += user + system,
            None => by_name.push((comm, user + system)),
        }
    }
    by_name.sort_by(|a, b| b.1.total_cmp(&a.1));
    by_name
}

/// Whether the kernel has stopped waking kswapd for node 0 (any of its
/// zones' `node_unreclaimable`); None when zoneinfo cannot be read.
fn node0_unreclaimable_now() -> Option<bool> {
    let zones = hotpage::sys::zoneinfo::read_zoneinfo(Path::new("/")).ok()?;
    Some(hotpage::sys::zoneinfo::node_unreclaimable(&zones, 0))
}

/// The pid of the kernel thread named `comm` (e.g. "kswapd0").
fn kthread_pid(comm: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let name = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (name.trim() == comm).then_some(pid)
    })
}

/// Fills node 0 with untouched anonymous memory of another process until
/// less than `leave_mib` is free; killed when dropped.
struct Filler(Child);

impl Filler {
    fn start(leave_mib: u64) -> Result<Self> {
        use std::io::BufRead;
        let mut child = Command::new(bin("HOTPAGE_WORKLOAD", "/bin/hotpage-workload"))
            .args(["fill", "--node", "0", "--leave-free-pages", &(leave_mib * 256).to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the node 0 filler")?;
        let out = child.stdout.take().context("filler stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(out).read_line(&mut line)?;
        if !line.starts_with("filled") {
            let _ = child.kill();
            bail!("the filler did not fill node 0: {line:?}");
        }
        eprintln!("e2e:   {}", line.trim());
        Ok(Self(child))
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One workload process and where it writes its ground truth. Killed when
/// dropped, so that a run that fails midway leaves nothing running into the
/// next one.
struct Workload {
    child: Child,
    truth: PathBuf,
}

impl Workload {
    /// How it ended, if it has: an OOM kill in the box shows as SIGKILL.
    fn ended(&mut self) -> Option<String> {
        use std::os::unix::process::ExitStatusExt;
        let status = self.child.try_wait().ok()??;
        Some(match status.signal() {
            Some(9) => format!(
                "the workload was killed by SIGKILL (the OOM killer, most likely: node 1 has {} MiB free now)",
                node_free_mib(1)
            ),
            _ => format!("the workload exited early ({status})"),
        })
    }

    /// Waits for its ground truth, written once its memory is placed.
    fn read_truth(&mut self, limit: Duration) -> Result<Truth> {
        let t = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&self.truth) {
                return parse_truth(&text);
            }
            if let Some(how) = self.ended() {
                bail!("{how} before it placed its memory");
            }
            if t.elapsed() > limit {
                bail!("the workload never wrote {}", self.truth.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_workload(sc: &Scenario, i: usize, system: System) -> Result<Workload> {
    let truth = PathBuf::from(format!("/tmp/e2e-truth-{i}.json"));
    let _ = std::fs::remove_file(&truth);
    let region = sc.region_mib / sc.procs as u64;
    let hot = sc.hot_mib / sc.procs as u64;
    let mut cmd = Command::new(bin("HOTPAGE_WORKLOAD", "/bin/hotpage-workload"));
    cmd.args(["hot-set", "--node", "1", "--size-mib", &region.to_string(), "--hot-mib", &hot.to_string()])
        .args(["--hot-percent", &sc.hot_percent.to_string()])
        .args(["--seconds", &(sc.seconds.ceil() as u64 + 30).to_string(), "--truth"])
        .arg(&truth)
        .stdout(Stdio::null());
    if let Some(t) = sc.move_at {
        cmd.args(["--move-at", &t.to_string()]);
    }
    if system == System::NoMigration {
        cmd.arg("--keep-bound");
    }
    Ok(Workload { child: cmd.spawn().context("starting the workload")?, truth })
}

/// A workload's ground truth, as it writes it.
fn parse_truth(text: &str) -> Result<Truth> {
    let v: serde_json::Value = serde_json::from_str(text)?;
    let pair = |a: &serde_json::Value| -> Option<(u64, u64)> { Some((a[0].as_u64()?, a[1].as_u64()?)) };
    Ok(Truth {
        pid: v["pid"].as_u64().context("pid")? as u32,
        region: pair(&v["region"]).context("region")?,
        hot: pair(&v["hot"][0]).context("hot")?,
        moved_hot: pair(&v["moved_hot"][0]),
    })
}

/// Where every page of the workloads' regions is now.
fn sample(truths: &[Truth], t: f64, moved: bool) -> Sample {
    let (mut hot, mut hot_on0, mut cold_on0, mut on0) = (0u64, 0u64, 0u64, 0u64);
    for tr in truths {
        let pages: Vec<u64> = (tr.region.0..tr.region.1).step_by(PAGE as usize).collect();
        let mut status = vec![0i32; pages.len()];
        let hot_range = if moved { tr.moved_hot.unwrap_or(tr.hot) } else { tr.hot };
        for (chunk, st) in pages.chunks(8192).zip(status.chunks_mut(8192)) {
            if move_pages(tr.pid, chunk, None, st, 0).is_err() {
                st.fill(-1);
            }
        }
        for (a, s) in pages.iter().zip(&status) {
            let is_hot = (hot_range.0..hot_range.1).contains(a);
            hot += u64::from(is_hot);
            if *s == 0 {
                on0 += 1;
                if is_hot {
                    hot_on0 += 1;
                } else {
                    cold_on0 += 1;
                }
            }
        }
    }
    Sample {
        t,
        hot_on_node0: if hot == 0 { 0.0 } else { hot_on0 as f64 / hot as f64 },
        cold_pages_on_node0: cold_on0,
        pages_on_node0: on0,
        hint_faults: 0,
    }
}

/// The kernel as each system wants it, restored when dropped.
fn kernel_for(system: System, fast_scan: bool) -> Result<SettingsGuard> {
    let (mut g, _) = SettingsGuard::acquire(Path::new("/"), Path::new(RUN_DIR))?;
    match system {
        // NUMA balancing stays on (turning it off and on again live-patches
        // the scheduler, which multi-threaded TCG does not survive): the
        // workload keeps its memory bound to node 1, which is never scanned.
        System::NoMigration => {
            g.set(NUMA_BALANCING, "2")?;
            g.set(PROMOTE_RATE_LIMIT, "0")?;
        }
        // Mode 2 at the kernel's default promotion rate limit.
        System::Numab2 => {
            g.set(NUMA_BALANCING, "2")?;
            g.set(PROMOTE_RATE_LIMIT, "65536")?;
        }
        // DAMON alone: NUMA balancing stays in mode 2 (see above) but never
        // scans the workload, whose first scan is an hour away.
        System::DamonMigrateHot => {
            g.set(NUMA_BALANCING, "2")?;
            g.set(PROMOTE_RATE_LIMIT, "0")?;
            g.set(SCAN_DELAY_MS, "3600000")?;
        }
        // hotpage sets the tiering bit and the rate limit itself; mode 2 so
        // that scans spend their budget on node 1 (as NUMAB-2 does).
        // (The DAMON source turns it off while it runs, and back.)
        System::HotpagePghot
        | System::Hotpage
        | System::HotpageUnrecorded
        | System::HotpageRest
        | System::HotpageSamples
        | System::HotpageDamon
        | System::HotpageDamon20Samples
        | System::HotpageDamon200Samples => g.set(NUMA_BALANCING, "2")?,
        // Observe-only changes nothing: hint faults without kernel promotion
        // are set up here.
        System::HotpageObserveOnly => {
            g.set(NUMA_BALANCING, "2")?;
            g.set(PROMOTE_RATE_LIMIT, "0")?;
        }
        // The same, at the pace hotpage sets.
        System::HintFaultsOnly => {
            g.set(NUMA_BALANCING, "2")?;
            g.set(PROMOTE_RATE_LIMIT, "0")?;
            set_hotpage_scan(&mut g)?;
        }
    }
    if fast_scan && system != System::DamonMigrateHot {
        set_hotpage_scan(&mut g)?;
    }
    // Demotion goes on after the filler has filled node 0 (see run_one).
    g.set(DEMOTION_ENABLED, "false")?;
    Ok(g)
}

/// NUMA balancing's scan knobs at hotpage's defaults.
fn set_hotpage_scan(g: &mut SettingsGuard) -> Result<()> {
    use hotpage::daemon::config::{
        SCAN_DELAY_MS as DELAY, SCAN_PERIOD_MAX_MS as MAX, SCAN_PERIOD_MIN_MS as MIN,
    };
    g.set(SCAN_DELAY_MS, &DELAY.to_string())?;
    g.set(SCAN_PERIOD_MIN_MS, &MIN.to_string())?;
    g.set(SCAN_PERIOD_MAX_MS, &MAX.to_string())?;
    Ok(())
}

fn first_time(timeline: &[Sample], from: f64, share: f64) -> Option<f64> {
    timeline.iter().find(|s| s.t >= from && s.hot_on_node0 >= share).map(|s| s.t - from)
}

/// Free MiB of a node (node meminfo).
fn node_free_mib(node: u32) -> u64 {
    hotpage::sys::node_meminfo::read_node_meminfo(Path::new("/"), node)
        .ok()
        .and_then(|m| m.get("MemFree").copied())
        .unwrap_or(0)
        >> 10
}

/// Every run starts from the same memory: caches dropped (the previous run's
/// recording was written and read through them), and node 1 with room for the
/// regions, waiting briefly for the previous run's memory to come back.
fn settle_memory(sc: &Scenario) -> Result<()> {
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    let t = Instant::now();
    while node_free_mib(1) < sc.region_mib + 32 && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("e2e:   free memory: node 0 {} MiB, node 1 {} MiB", node_free_mib(0), node_free_mib(1));
    if node_free_mib(1) < sc.region_mib {
        bail!("node 1 has {} MiB free, too little for a {} MiB region", node_free_mib(1), sc.region_mib);
    }
    Ok(())
}

pub fn run_one(system: System, sc: &Scenario, rep: usize, fast_scan: bool) -> Result<RunResult> {
    settle_memory(sc)?;
    let mut kernel = kernel_for(system, fast_scan)?;
    // Filled with demotion off: with it on, kswapd would demote the filler's
    // pages as fast as it allocates them.
    // MemFree counts ZONE_DMA too, which movable allocations may not use
    // (lowmem_reserve): 3/4 of the hot set free leaves about half usable.
    let filler = if sc.tight { Some(Filler::start(sc.hot_mib * 3 / 4)?) } else { None };
    if sc.tight {
        kernel.set(DEMOTION_ENABLED, "true")?;
    }
    let kswapd = kthread_pid("kswapd0");
    let kswapd0 = kswapd.map_or(0.0, |p| cpu_seconds(p, false));
    let recording = Path::new("/tmp/e2e.hprec");
    let damon = match system {
        System::DamonMigrateHot => {
            Some(Kdamond::start(&TierTopology::read(Path::new("/"))?, MigrateHot::default())?)
        }
        _ => None,
    };
    let hotpage = match system.hotpage_args() {
        Some(args) => {
            let mut args: Vec<&str> = args.to_vec();
            if system.recorded() {
                args.extend(["--record", "/tmp/e2e.hprec"]);
            }
            if let Some(n) = system.damon_samples() {
                // sample_us stays at its 5 ms default; the budget widens both alike.
                let config = "/tmp/e2e-hotpage.toml";
                std::fs::write(config, format!("[damon]\naggr_us = {}\n", n * 5000))?;
                args.extend(["--config", config]);
            }
            Some(Daemon::start(&bin("HOTPAGE_BIN", "/bin/hotpage"), &args)?)
        }
        None => None,
    };
    let (migrated0, promoted0, faults0) =
        (vmstat("pgmigrate_success"), vmstat("pgpromote_success"), vmstat("numa_hint_faults"));
    let mut children = Vec::new();
    let mut truths = Vec::new();
    for i in 0..sc.procs {
        children.push(start_workload(sc, i, system)?);
    }
    for w in &mut children {
        truths.push(w.read_truth(Duration::from_secs(120))?);
    }
    // The clock starts when the last workload has placed its memory and begins updating.
    let start = Instant::now();
    let unreclaimable0 = node0_unreclaimable_now();
    let hotpage_startup = hotpage.as_ref().map(|d| cpu_seconds(d.pid(), false));
    let mut timeline = Vec::new();
    let faults_now = || vmstat("numa_hint_faults") - faults0;
    while start.elapsed().as_secs_f64() < sc.seconds {
        let t = start.elapsed().as_secs_f64();
        let moved = sc.move_at.is_some_and(|m| t >= m);
        timeline.push(Sample { hint_faults: faults_now(), ..sample(&truths, t, moved) });
        std::thread::sleep(Duration::from_millis(500));
    }
    let moved = sc.move_at.is_some();
    let last = Sample { hint_faults: faults_now(), ..sample(&truths, start.elapsed().as_secs_f64(), moved) };
    timeline.push(last.clone());
    let workload_sys: f64 = truths.iter().map(|t| cpu_seconds(t.pid, true)).sum();
    let hotpage_cpu = hotpage.as_ref().map(|d| cpu_seconds(d.pid(), false));
    let hotpage_threads = hotpage.as_ref().map(|d| thread_cpu_seconds(d.pid())).unwrap_or_default();
    let snapshot = hotpage.as_ref().and_then(|_| stats_snapshot());
    let hotpage_rule = snapshot.as_ref().and_then(rule_report);
    // DAMON's kdamond: the migrate_hot one here, or hotpage's (from its stats).
    let kdamond_cpu = damon
        .as_ref()
        .and_then(Kdamond::pid)
        .map(|p| cpu_seconds(p, false))
        .or_else(|| snapshot.as_ref().and_then(hotpage_kdamond_cpu));
    let kswapd_cpu = kswapd.map_or(0.0, |p| cpu_seconds(p, false)) - kswapd0;
    let unreclaimable = (unreclaimable0, node0_unreclaimable_now());
    drop(damon);
    let migrated = vmstat("pgmigrate_success") - migrated0;
    let kernel_promoted = vmstat("pgpromote_success") - promoted0;
    let faults = vmstat("numa_hint_faults") - faults0;
    let truth_paths: Vec<PathBuf> = children.iter().map(|w| w.truth.clone()).collect();
    // A workload that died during the run (the OOM killer) leaves figures of
    // a run that did not happen.
    if let Some(how) = children.iter_mut().find_map(Workload::ended) {
        bail!("{how} during the run");
    }
    drop(children);
    let mut sent = (None, Vec::new());
    if let Some(d) = hotpage {
        let out = d.stop()?;
        if !out.status.success() {
            bail!("hotpage run failed: {}", out.status);
        }
        if system.recorded() {
            sent = send_recording(recording, &truth_paths, &sc.name, system, rep);
        }
    }
    drop(filler);
    drop(kernel);

    let hot_pages: u64 = truths.iter().map(|t| (t.hot.1 - t.hot.0) / PAGE).sum();
    let region_pages: u64 = truths.iter().map(|t| (t.region.1 - t.region.0) / PAGE).sum();
    let hot_on0 = last.pages_on_node0 - last.cold_pages_on_node0;
    let follow_from = sc.move_at.unwrap_or(0.0);
    Ok(RunResult {
        system,
        label: system.label(),
        scenario: sc.name.clone(),
        move_at_s: sc.move_at,
        tight: sc.tight,
        rep,
        hot_pages,
        region_pages,
        t50_s: first_time(&timeline, 0.0, 0.5),
        t90_s: first_time(&timeline, 0.0, 0.9),
        follow_s: sc.move_at.and_then(|_| first_time(&timeline, follow_from, 0.9)),
        final_hot_on_node0: last.hot_on_node0,
        precision: if last.pages_on_node0 == 0 { 0.0 } else { hot_on0 as f64 / last.pages_on_node0 as f64 },
        recall: last.hot_on_node0,
        migrated_bytes: migrated * PAGE,
        cold_promoted_bytes: last.cold_pages_on_node0 * PAGE,
        hotpage_cpu_s: hotpage_cpu,
        hotpage_startup_cpu_s: hotpage_startup,
        hotpage_threads,
        hotpage_rule,
        kdamond_cpu_s: kdamond_cpu,
        kswapd_cpu_s: kswapd_cpu,
        node0_unreclaimable: unreclaimable,
        workload_sys_cpu_s: workload_sys,
        numa_hint_faults: faults,
        hint_faults_second_half: second_half(&timeline, sc.seconds / 2.0),
        kernel_promoted_pages: kernel_promoted,
        recording: sent.0,
        truths: sent.1,
        timeline,
    })
}

/// Hint faults from the first sample at or after `mid` to the last sample.
fn second_half(timeline: &[Sample], mid: f64) -> u64 {
    let at_mid = timeline.iter().find(|s| s.t >= mid).map_or(0, |s| s.hint_faults);
    timeline.last().map_or(0, |s| s.hint_faults.saturating_sub(at_mid))
}

/// A file name's safe form of `s`: lower case, words joined by '-'.
fn slug(s: &str) -> String {
    let words: Vec<String> = s
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    words.join("-")
}

/// The file stem of a run's recording and truths. Each repetition keeps its
/// own: the first as `e2e-<scenario>-<system>`, later ones with `-rep<n>`
/// (a stalled repetition could not be replayed when they overwrote each other).
fn recording_stem(scenario: &str, system: System, rep: usize) -> String {
    let stem = format!("e2e-{}-{}", slug(scenario), slug(system.label()));
    if rep == 0 { stem } else { format!("{stem}-rep{}", rep + 1) }
}

/// Sends a hotpage run's recording and its ground truths out of the box (and
/// deletes them here, so they take no memory from the next runs). Returns
/// their names; none when this is not the box.
fn send_recording(
    recording: &Path,
    truths: &[PathBuf],
    scenario: &str,
    system: System,
    rep: usize,
) -> (Option<String>, Vec<String>) {
    let stem = recording_stem(scenario, system, rep);
    let send = |path: &Path, name: String| match crate::box_results::send(path, &name) {
        Ok(()) => Some(name),
        Err(e) => {
            eprintln!("e2e: {} not sent: {e}", path.display());
            None
        }
    };
    let rec = send(recording, format!("{stem}.hprec"));
    let _ = std::fs::remove_file(recording);
    let truths =
        truths.iter().enumerate().filter_map(|(i, t)| send(t, format!("{stem}-truth{i}.json"))).collect();
    (rec, truths)
}

pub fn scenarios(short: bool) -> Vec<Scenario> {
    let sc = |name: &str, region_mib, hot_mib, procs, move_at, tight, headline| Scenario {
        name: name.into(),
        region_mib,
        hot_mib,
        hot_percent: 90,
        procs,
        seconds: if short { 20.0 } else { 40.0 },
        move_at,
        tight,
        headline,
    };
    // Long enough for hotpage's scanner to rest (20 s after the last page
    // qualified): what watching costs once the hot set is in.
    let long = |name: &str| Scenario { seconds: 150.0, ..sc(name, 512, 64, 1, None, false, false) };
    if short {
        return vec![sc("hot set 64 MiB / 8 MiB", 64, 8, 1, None, false, true)];
    }
    vec![
        sc("hot set 512 MiB / 64 MiB", 512, 64, 1, None, false, true),
        sc("hot set 900 MiB / 112 MiB", 900, 112, 1, None, false, false),
        sc("moving hot set 512 MiB / 64 MiB, moves at 20 s", 512, 64, 1, Some(20.0), false, true),
        sc("2 processes, 2 × 256 MiB / 32 MiB", 512, 64, 2, None, false, false),
        sc("tight: node 0 filled to 48 MiB free, 512 MiB / 64 MiB", 512, 64, 1, None, true, true),
        long("steady: hot set 512 MiB / 64 MiB for 150 s"),
        // A hot set only 9× as hot as the rest (73× above): its pages'
        // latencies lie closer to the cold ones'.
        Scenario {
            hot_percent: 50,
            ..sc("warm: 512 MiB / 64 MiB, half the updates in the hot set", 512, 64, 1, None, false, false)
        },
        // A small region: its cold pages are touched 8× as often as at
        // 512 MiB, and the hot set is a quarter of it.
        sc("small: 64 MiB / 16 MiB", 64, 16, 1, None, false, false),
    ]
}

/// Whether the `--scenarios` pattern `p` picks the scenario `name`: a
/// scenario's whole name picks only it ("hot set 512 MiB / 64 MiB" is also
/// part of the moving scenario's name), anything else every name containing it.
fn picks(all: &[Scenario], p: &str, name: &str) -> bool {
    if all.iter().any(|sc| sc.name == p) { name == p } else { name.contains(p) }
}

/// What one `bench e2e` runs.
pub struct Plan {
    pub short: bool,
    pub fast_scan: bool,
    pub systems: Vec<System>,
    pub scenarios: Vec<Scenario>,
    /// Repetitions of each headline cell (others run once).
    pub reps: usize,
}

impl Plan {
    /// `systems` by JSON name and `scenarios` by a part of their name; empty = all.
    pub fn new(
        short: bool,
        fast_scan: bool,
        systems: &[String],
        scenarios: &[String],
        reps: Option<usize>,
    ) -> Result<Self> {
        let mut chosen = Vec::new();
        for name in systems {
            match System::ALL.iter().find(|s| s.name() == *name) {
                Some(s) => chosen.push(*s),
                None => bail!(
                    "unknown system {name:?}; the systems are {}",
                    System::ALL.map(|s| s.name()).join(", ")
                ),
            }
        }
        if chosen.is_empty() {
            // The short form (CI) leaves DAMON out unless asked: under TCG
            // its kdamond's first aggregations take from seconds to most of
            // the 20 s (one CI run reported two accessed regions in 21 s), so
            // 20 s says nothing reliable about it. The box tests cover it
            // (`vm test -- damon`: hot set promoted, kernel promoting nothing).
            chosen = System::ALL
                .iter()
                .copied()
                .filter(|s| !s.by_name_only() && (!short || *s != System::HotpageDamon))
                .collect();
        }
        let all = self::scenarios(short);
        let picked: Vec<Scenario> = all
            .iter()
            .filter(|sc| scenarios.is_empty() || scenarios.iter().any(|p| picks(&all, p, &sc.name)))
            .cloned()
            .collect();
        if picked.is_empty() {
            bail!("no scenario matches {scenarios:?}");
        }
        let reps = reps.unwrap_or(if short { 1 } else { 3 }).max(1);
        Ok(Self { short, fast_scan, systems: chosen, scenarios: picked, reps })
    }
}

/// Runs every system on every scenario, repetitions interleaved (all systems
/// once, then again) so that slow drift of the machine spreads over all of
/// them. In the short form (CI) it checks correctness facts and a lenient
/// precision bound.
pub fn run(plan: &Plan) -> Result<E2eReport> {
    let mut runs = Vec::new();
    let mut failed = Vec::new();
    for sc in &plan.scenarios {
        let reps = if sc.headline { plan.reps } else { 1 };
        for rep in 0..reps {
            for &system in &plan.systems {
                eprintln!("e2e: {} under {} (repetition {}/{reps})", sc.name, system.label(), rep + 1);
                let r = match run_one(system, sc, rep, plan.fast_scan) {
                    Ok(r) => r,
                    // One run's failure (a workload the box's OOM killer
                    // took) costs that run, not the session's others.
                    Err(e) => {
                        eprintln!("e2e:   failed: {e:#}; going on with the next run");
                        failed.push(FailedRun {
                            scenario: sc.name.clone(),
                            label: system.label(),
                            rep,
                            error: format!("{e:#}"),
                        });
                        continue;
                    }
                };
                eprintln!(
                    "e2e:   hot set on node 0 {:.1}%, precision {:.1}%, migrated {} MiB, t90 {:?}",
                    r.final_hot_on_node0 * 100.0,
                    r.precision * 100.0,
                    r.migrated_bytes >> 20,
                    r.t90_s
                );
                if sc.tight {
                    eprintln!(
                        "e2e:   kswapd {:.1} CPU s; node 0 unreclaimable (start, end): {:?}",
                        r.kswapd_cpu_s, r.node0_unreclaimable
                    );
                }
                runs.push(r);
            }
        }
    }
    if runs.is_empty() {
        let first = failed.first().map_or(String::new(), |f: &FailedRun| format!(": {}", f.error));
        bail!("every e2e run failed{first}");
    }
    let cells = cells(&runs);
    let report = E2eReport {
        bench: "e2e",
        kernel: crate::bench::kernel_release(),
        scan: if plan.fast_scan { "fast (scan_delay 0, period 100-1000 ms)" } else { "kernel defaults" },
        runs,
        cells,
        failed,
    };
    if let Some(f) = report.failed.first().filter(|_| plan.short) {
        bail!("{} under {} failed: {}", f.scenario, f.label, f.error);
    }
    if plan.short {
        check_facts(&report)?;
    }
    Ok(report)
}

/// Median of optional values, where None ("never") sorts after every number.
fn median_opt(v: &[Option<f64>]) -> Option<f64> {
    let mut v: Vec<f64> = v.iter().map(|x| x.unwrap_or(f64::INFINITY)).collect();
    v.sort_by(f64::total_cmp);
    let m = v[v.len() / 2];
    m.is_finite().then_some(m)
}

fn cells(runs: &[RunResult]) -> Vec<Cell> {
    use crate::bench::median;
    let mut keys: Vec<(String, System)> = Vec::new();
    for r in runs {
        if !keys.iter().any(|(sc, s)| *sc == r.scenario && *s == r.system) {
            keys.push((r.scenario.clone(), r.system));
        }
    }
    let of = |sc: &str, s: System| -> Vec<&RunResult> {
        runs.iter().filter(|r| r.scenario == sc && r.system == s).collect()
    };
    keys.iter()
        .map(|(sc, system)| {
            let rs = of(sc, *system);
            let m = |f: &dyn Fn(&RunResult) -> f64| median(rs.iter().map(|r| f(r)).collect());
            let base = of(sc, System::NoMigration);
            let base_sys =
                (!base.is_empty()).then(|| median(base.iter().map(|r| r.workload_sys_cpu_s).collect()));
            let cost = base_sys.map(|b| {
                m(&|r| {
                    r.hotpage_cpu_s.unwrap_or(0.0)
                        + r.kdamond_cpu_s.unwrap_or(0.0)
                        + r.kswapd_cpu_s.max(0.0)
                        + (r.workload_sys_cpu_s - b)
                })
            });
            Cell {
                scenario: sc.clone(),
                system: *system,
                label: system.label(),
                reps: rs.len(),
                t50_s: median_opt(&rs.iter().map(|r| r.t50_s).collect::<Vec<_>>()),
                t90_s: median_opt(&rs.iter().map(|r| r.t90_s).collect::<Vec<_>>()),
                follow_s: median_opt(&rs.iter().map(|r| r.follow_s).collect::<Vec<_>>()),
                final_hot_on_node0: m(&|r| r.final_hot_on_node0),
                precision: m(&|r| r.precision),
                migrated_bytes: m(&|r| r.migrated_bytes as f64),
                cold_promoted_bytes: m(&|r| r.cold_promoted_bytes as f64),
                tiering_cost_cpu_s: cost,
                workload_sys_cpu_s: m(&|r| r.workload_sys_cpu_s),
            }
        })
        .collect()
}

/// The short form's precision floor for hotpage at its defaults.
const MIN_SHORT_PRECISION: f64 = 0.6;

fn check_facts(r: &E2eReport) -> Result<()> {
    for run in &r.runs {
        match run.system {
            System::Hotpage | System::HotpagePghot | System::HotpageSamples
                if run.final_hot_on_node0 < 0.9 =>
            {
                bail!(
                    "{}: only {:.1}% of the hot set reached node 0",
                    run.label,
                    run.final_hot_on_node0 * 100.0
                )
            }
            // Lenient: promoting the whole region would give 8/64 = 12.5%.
            System::Hotpage if run.precision < MIN_SHORT_PRECISION => {
                bail!(
                    "{}: precision {:.1}%, below {:.0}%: it promotes cold pages",
                    run.label,
                    run.precision * 100.0,
                    MIN_SHORT_PRECISION * 100.0
                )
            }
            // DAMON's regions adapt over seconds under TCG, longer than the
            // short form's 20 s for the whole hot set: it must have started
            // on it, precisely, with the kernel promoting nothing.
            // (At its defaults: the sample-count variants are comparisons.)
            System::HotpageDamon
                if run.final_hot_on_node0 < 0.25
                    || run.precision < MIN_SHORT_PRECISION
                    || run.kernel_promoted_pages > 0 =>
            {
                bail!(
                    "{}: {:.1}% of the hot set on node 0, precision {:.1}%, {} pages promoted by the kernel",
                    run.label,
                    run.final_hot_on_node0 * 100.0,
                    run.precision * 100.0,
                    run.kernel_promoted_pages
                )
            }
            System::HotpageObserveOnly | System::NoMigration | System::HintFaultsOnly
                if run.migrated_bytes > 0 || run.pages_on_node0() > 0 =>
            {
                bail!("{}: pages moved ({} bytes migrated)", run.label, run.migrated_bytes)
            }
            _ => {}
        }
    }
    let damon = if r.runs.iter().any(|run| run.system == System::HotpageDamon) {
        "; on DAMON it started on it with the kernel promoting nothing"
    } else {
        ""
    };
    eprintln!(
        "e2e: facts hold: hotpage brought the hot set to node 0 (at its defaults with precision ≥ {:.0}%){damon}; \
         observe-only and no migration moved nothing",
        MIN_SHORT_PRECISION * 100.0
    );
    Ok(())
}

impl RunResult {
    fn pages_on_node0(&self) -> u64 {
        self.timeline.last().map_or(0, |s| s.pages_on_node0)
    }
}

pub fn print(r: &E2eReport) {
    println!("bench e2e: {} ({} runs), scans: {}; medians per cell", r.kernel, r.runs.len(), r.scan);
    println!(
        "{:<52} {:<22} {:>4} {:>7} {:>7} {:>8} {:>8} {:>7} {:>9} {:>9} {:>9} {:>8}",
        "scenario",
        "system",
        "reps",
        "t50 s",
        "t90 s",
        "hot→0 %",
        "prec %",
        "follow",
        "migr MiB",
        "cold MiB",
        "cost CPU",
        "wl sys s"
    );
    let opt = |v: Option<f64>| v.map_or("-".to_owned(), |x| format!("{x:.1}"));
    for x in &r.cells {
        println!(
            "{:<52} {:<22} {:>4} {:>7} {:>7} {:>8.1} {:>8.1} {:>7} {:>9.0} {:>9.0} {:>9} {:>8.1}",
            x.scenario,
            x.label,
            x.reps,
            opt(x.t50_s),
            opt(x.t90_s),
            x.final_hot_on_node0 * 100.0,
            x.precision * 100.0,
            opt(x.follow_s),
            x.migrated_bytes / f64::from(1 << 20),
            x.cold_promoted_bytes / f64::from(1 << 20),
            opt(x.tiering_cost_cpu_s),
            x.workload_sys_cpu_s
        );
    }
    for f in &r.failed {
        println!("failed: {} under {} (repetition {}): {}", f.scenario, f.label, f.rep + 1, f.error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_scenario_name_picks_only_that_scenario() {
        let all = scenarios(false);
        let picked = |p: &str| all.iter().filter(|sc| picks(&all, p, &sc.name)).count();
        assert_eq!(picked("hot set 512 MiB / 64 MiB"), 1, "not the moving one too");
        assert_eq!(picked("hot set 512"), 3, "a part picks every name containing it (moving, steady)");
        assert_eq!(picked("steady"), 1);
        assert_eq!(picked("tight"), 1);
        assert_eq!(picked("nothing like it"), 0);
    }

    #[test]
    fn each_repetition_keeps_its_own_recording() {
        let sc = "hot set 512 MiB / 64 MiB";
        let stems: Vec<String> = (0..3).map(|rep| recording_stem(sc, System::Hotpage, rep)).collect();
        assert_eq!(
            stems,
            [
                "e2e-hot-set-512-mib-64-mib-hotpage",
                "e2e-hot-set-512-mib-64-mib-hotpage-rep2",
                "e2e-hot-set-512-mib-64-mib-hotpage-rep3"
            ]
        );
    }

    #[test]
    fn the_short_form_leaves_damon_out_unless_asked() {
        let short = Plan::new(true, true, &[], &[], None).unwrap();
        assert!(!short.systems.contains(&System::HotpageDamon));
        // Nor the comparisons that run only when named (the sample-count
        // variants, the rest, the unrecorded run, the hint faults alone).
        assert_eq!(short.systems.len(), System::ALL.len() - 6);
        assert!(!short.systems.contains(&System::HintFaultsOnly));
        let full = Plan::new(false, false, &[], &[], None).unwrap();
        assert!(full.systems.contains(&System::HotpageDamon));
        assert!(!full.systems.iter().any(|s| s.damon_samples().is_some()));
        let asked = Plan::new(true, true, &["hotpage_damon".into()], &[], None).unwrap();
        assert_eq!(asked.systems, vec![System::HotpageDamon]);
        let samples = Plan::new(
            false,
            false,
            &["hotpage_damon_20_samples".into(), "hotpage_damon_200_samples".into()],
            &[],
            None,
        )
        .unwrap();
        assert_eq!(samples.systems, vec![System::HotpageDamon20Samples, System::HotpageDamon200Samples]);
        assert!(samples.systems.iter().all(|s| s.hotpage_args().is_some()));
    }
}
