//! `hotpage run` in the box: it promotes a workload's hot set and its stats
//! agree with the kernel; observe-only, a crash, a second daemon, samples alone.

use super::common::*;

// ---- the daemon: `hotpage run` with `hotpage stats` over its socket ----

/// What the daemon's stats say about a workload.
impl Workload {
    /// Pages the daemon's stats say it promoted for `pid`.
    pub fn promoted_in(stats: &serde_json::Value, pid: u32) -> u64 {
        stats["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pid"] == pid)
            .map_or(0, |p| p["promoted_pages"].as_u64().unwrap())
    }

    /// `hotpage stats --json` once this workload has `pages` promoted, or at the limit.
    pub fn stats_when_promoted(&self, pages: u64, limit: Duration) -> serde_json::Value {
        let t = Instant::now();
        let mut report = t;
        loop {
            let s = stats_json().expect("the daemon answers");
            let promoted = Self::promoted_in(&s, self.pid);
            if promoted >= pages || t.elapsed() > limit {
                return s;
            }
            // A trajectory in the log, so a run that falls short shows how.
            if report.elapsed() >= Duration::from_secs(15) {
                report = Instant::now();
                eprintln!(
                    "{:>4} s: {promoted} of {pages} pages promoted; rule: {}; hot map: {}",
                    t.elapsed().as_secs(),
                    s["rule"]["counters"],
                    s["hotmap"]["feed"]
                );
                for n in s["rule"]["nodes"].as_array().into_iter().flatten() {
                    eprintln!("      node {}: {} {}", n["nid"], n["threshold_source"], n["threshold_ms"]);
                }
                for src in s["sources"].as_array().into_iter().flatten() {
                    eprintln!("      source {}: bpf {}", src["name"], src["bpf"]);
                }
                if !s["damon"].is_null() {
                    eprintln!("      damon: {}", s["damon"]);
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn hotpage_cli(args: &[&str]) -> std::process::Output {
    Command::new(hotpage_bin()).args(args).output().expect("run hotpage")
}

fn stats_json() -> Option<serde_json::Value> {
    let o = hotpage_cli(&["stats", "--json"]);
    o.status.success().then(|| serde_json::from_slice(&o.stdout).unwrap())
}

/// Starts `hotpage run` with the box tests' scan speed-up; it answers on its socket.
fn start_daemon(extra: &[&str]) -> Daemon {
    let scan = ["--scan-delay-ms", "0", "--scan-period-min-ms", "100", "--scan-period-max-ms", "1000"];
    let args: Vec<&str> = scan.iter().chain(extra).copied().collect();
    Daemon::start(&hotpage_bin(), &args).unwrap()
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
    // The hook is on the fault path: it saw the hint faults the kernel counted.
    let t = Instant::now();
    let hook = loop {
        let h = stats_json().unwrap()["hint_fault_hook"].clone();
        if h["verdict"] != "idle" || t.elapsed() > Duration::from_secs(90) {
            break h;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert_eq!(hook["verdict"], "sees", "{hook}");
    assert!(hook["coverage"].as_f64().unwrap() >= 0.9, "{hook}");
    let check = String::from_utf8(hotpage_cli(&["check"]).stdout).unwrap();
    assert!(check.contains("hook sees faults") && check.contains("ok"), "{check}");
    let metrics = String::from_utf8(hotpage_cli(&["metrics"]).stdout).unwrap();
    assert!(metrics.contains("hotpage_hint_fault_hook_coverage_ratio"), "{metrics}");

    assert!(loaded_program_names().iter().any(|n| n == "hint_fault"), "{:?}", loaded_program_names());
    let out = daemon.stop().unwrap();
    assert!(out.status.success(), "hotpage run exits cleanly on SIGTERM: {}", out.status);
    assert!(
        !loaded_program_names().iter().any(|n| n == "hint_fault"),
        "our program is gone: {:?}",
        loaded_program_names()
    );
    assert_eq!(settings_now(), before, "settings restored");
    assert!(!Path::new(RUN_DIR).join("hotpage.sock").exists(), "socket removed");
    assert!(!Path::new(RUN_DIR).join("kernel-settings.json").exists());
    let text = std::fs::read_to_string(textfile.join("hotpage.prom")).unwrap();
    assert!(text.contains("hotpage_promoted_bytes_total"), "{text}");
    // `cargo xtask test` checks it with the reference parser on the host.
    std::fs::write("/results/live-metrics.prom", &text).unwrap();
}

/// `hotpage stats --json` once `ok` holds of it, or panics at the limit.
fn stats_when(what: &str, limit: Duration, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let t = Instant::now();
    loop {
        let s = stats_json().expect("the daemon answers");
        if ok(&s) {
            return s;
        }
        assert!(
            t.elapsed() < limit,
            "never {what} in {limit:?}: {}; rule {} {}",
            s["scan_rest"],
            s["rule"]["counters"],
            s["rule"]["nodes"].as_array().map_or(String::new(), |n| n
                .iter()
                .map(|n| format!("node {} {} {}", n["nid"], n["threshold_source"], n["threshold_ms"]))
                .collect::<Vec<_>>()
                .join(", "))
        );
        if t.elapsed().as_secs() % 10 == 0 && t.elapsed().subsec_millis() < 250 {
            eprintln!("{:>4} s: {} rule {}", t.elapsed().as_secs(), s["scan_rest"], s["rule"]["counters"]);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// With the rest asked for: once the hot set is in and nothing more
/// qualifies, the daemon rests NUMA balancing's scanner (`kernel.numa_balancing`
/// 0) and the hint faults stop; a probe switches it back on; the stop puts
/// the operator's value back.
#[test]
fn with_nothing_left_to_find_the_scanner_rests_and_the_hint_faults_stop() {
    in_the_box();
    let _mode = pure_tiering_mode();
    let before = settings_now();
    // 8 s of quiet: short for the test, longer than the 5 s the probe's
    // faults are counted over (a fault that qualifies during the rest turns
    // the scanner on again, and quiet from then on it would rest again).
    let daemon = start_daemon(&["--samples", "off", "--scan-rest-after-s", "8"]);
    let w = Workload::start(64, 16, 300);
    let snap = w.stats_when_promoted(w.hot_pages() * 9 / 10, Duration::from_secs(150));
    assert!(Workload::promoted_in(&snap, w.pid) >= w.hot_pages() * 9 / 10, "{snap}");
    let phase = |p: &'static str| move |s: &serde_json::Value| s["scan_rest"]["phase"] == p;
    // Quiet for 8 s: a rest (10 s at first).
    let resting = stats_when("resting", Duration::from_secs(120), phase("resting"));
    assert_eq!(settings_now().0, "0", "the scanner rests: {}", resting["scan_rest"]);
    // Pages already made PROT_NONE fault once more; then nothing.
    std::thread::sleep(Duration::from_secs(1));
    let f0 = vmstat("numa_hint_faults");
    std::thread::sleep(Duration::from_secs(4));
    let at_rest = vmstat("numa_hint_faults") - f0;
    let table = String::from_utf8(hotpage_cli(&["stats"]).stdout).unwrap();
    assert!(table.contains("NUMA scan: resting"), "{table}");
    let metrics = String::from_utf8(hotpage_cli(&["metrics"]).stdout).unwrap();
    assert!(metrics.contains("hotpage_numa_scan_resting 1"), "{metrics}");
    // The probe (or a fault that qualified meanwhile): the scanner is switched back on.
    stats_when("scanning again", Duration::from_secs(15), |s| s["scan_rest"]["phase"] != "resting");
    assert_eq!(settings_now().0, "2", "scanning again in the operator's mode");
    assert!(at_rest < 100, "at rest: {at_rest} hint faults in 4 s");
    // The kernel takes the task's scan up again: its pages still on node 1
    // (the cold ones) fault again. A workload with nothing left there takes
    // no hint fault at all, rest or not, and proves nothing either way.
    let left = w.region_nodes().get(&1).copied().unwrap_or(0);
    let f0 = vmstat("numa_hint_faults");
    let t = Instant::now();
    while vmstat("numa_hint_faults") < f0 + 100 && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = vmstat("numa_hint_faults") - f0;
    eprintln!(
        "after the rest: {after} hint faults in {:?}, {left} of the workload's pages on node 1",
        t.elapsed()
    );
    if left >= 256 {
        assert!(
            after >= 100,
            "the scan did not come back: {after} hint faults in 20 s, {left} pages on node 1"
        );
    }
    assert!(daemon.stop().unwrap().status.success());
    assert_eq!(settings_now(), before, "settings restored");
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
    let mut daemon = Daemon::start(&hotpage_bin(), &["--observe-only"]).unwrap();
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
    assert!(daemon.stop().unwrap().status.success());
}

#[test]
fn the_daemon_killed_with_9_is_cleaned_up_by_the_next_start() {
    in_the_box();
    let _originals = distinct_originals();
    let before = settings_now();
    start_daemon(&[]).kill().unwrap();
    assert_eq!(settings_now(), ("3".to_owned(), "0".to_owned()), "a crash leaves the settings changed");
    assert!(Path::new(RUN_DIR).join("kernel-settings.json").exists());
    assert!(Path::new(RUN_DIR).join("hotpage.sock").exists(), "a dead daemon's socket stays behind");
    // The next start restores them, replaces the stale socket and runs.
    let out = Command::new(hotpage_bin()).args(["run", "--duration", "1"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("restored proc/sys/kernel/numa_balancing to 1"), "{stderr}");
    assert_eq!(settings_now(), before);
    assert!(!Path::new(RUN_DIR).join("hotpage.sock").exists());
    assert!(!loaded_program_names().iter().any(|n| n == "hint_fault"));
}

/// A DAMON-source daemon killed with -9 leaves its kdamond running; the next
/// start stops and removes it (and puts NUMA balancing back) before anything else.
#[test]
fn a_killed_damon_daemons_kdamond_is_stopped_by_the_next_start() {
    in_the_box();
    let _mode = pure_tiering_mode();
    let before = settings_now();
    let kdamonds = Path::new("/sys/kernel/mm/damon/admin/kdamonds");
    let read = |p: &str| std::fs::read_to_string(kdamonds.join(p)).unwrap_or_default().trim().to_owned();
    let daemon = start_daemon(&["--sources", "damon"]);
    let w = Workload::start(32, 8, 60);
    let t = Instant::now();
    while read("0/state") != "on" {
        assert!(t.elapsed() < Duration::from_secs(30), "the kdamond never started");
        std::thread::sleep(Duration::from_millis(200));
    }
    daemon.kill().unwrap();
    assert_eq!(
        (read("nr_kdamonds"), read("0/state")),
        ("1".to_owned(), "on".to_owned()),
        "a crash leaves it running"
    );
    assert_eq!(settings_now().0, "0");
    drop(w);
    let out =
        Command::new(hotpage_bin()).args(["run", "--sources", "damon", "--duration", "1"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("restored sys/kernel/mm/damon/admin/kdamonds/nr_kdamonds to 0"), "{stderr}");
    assert_eq!(read("nr_kdamonds"), "0");
    assert_eq!(settings_now(), before);
}

#[test]
fn a_second_daemon_is_refused_while_one_runs() {
    in_the_box();
    let _originals = distinct_originals();
    let daemon = start_daemon(&[]);
    // Whatever its flags or run directory: two daemons would move the same pages.
    for extra in [&[][..], &["--observe-only"], &["--run-dir", "/run/hotpage-elsewhere"]] {
        let args: Vec<&str> = ["run", "--duration", "1"].into_iter().chain(extra.iter().copied()).collect();
        let out = hotpage_cli(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {stderr}");
        assert!(stderr.contains("already running"), "{extra:?}: {stderr}");
        assert!(stderr.contains(&format!("pid {}", daemon.pid())), "{extra:?} names the daemon: {stderr}");
    }
    assert!(stats_json().is_some(), "the first daemon is unharmed");
    assert!(daemon.stop().unwrap().status.success());
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
    assert!(daemon.stop().unwrap().status.success());
    assert!(!loaded_program_names().iter().any(|n| n == "hw_sample"), "the sample program is gone");
}

/// DAMON as the only source, with NUMA balancing off: hotpage starts its own
/// kdamond on the workload, the hot set reaches node 0 through hotpage alone
/// and the kernel promotes nothing; at the stop the kdamond is gone and the
/// settings are back.
#[test]
fn the_damon_source_alone_promotes_the_hot_set_with_numa_balancing_off() {
    in_the_box();
    // Mode 2 with a rate limit beforehand: what hotpage must turn off and put back.
    let _mode = pure_tiering_mode();
    let before = settings_now();
    let kdamonds = "/sys/kernel/mm/damon/admin/kdamonds/nr_kdamonds";
    assert_eq!(std::fs::read_to_string(kdamonds).unwrap().trim(), "0");
    let promoted_by_kernel = vmstat("pgpromote_success");
    // The budget scaled for TCG, as in the e2e bench: at the 3% default the
    // emulated kdamond samples ~10× less often (the budget has its own test).
    let daemon = start_daemon(&["--sources", "damon", "--damon-cpu-budget-percent", "25"]);
    assert_eq!(settings_now().0, "0", "NUMA balancing is off while the DAMON source runs");
    let w = Workload::start(64, 16, 300);
    let hot = w.hot_pages();
    let snap = w.stats_when_promoted(hot * 9 / 10, Duration::from_secs(180));
    let promoted = Workload::promoted_in(&snap, w.pid);
    eprintln!("DAMON source: {promoted} pages promoted for {hot} hot pages; damon: {}", snap["damon"]);
    assert!(promoted >= hot * 9 / 10, "only {promoted} of {hot} hot pages promoted: {snap}");
    let sources: Vec<&str> =
        snap["sources"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(sources, ["damon"], "{snap}");
    let d = &snap["damon"];
    assert!(d["targets"].as_u64().unwrap() >= 1 && d["kdamond_pid"].as_u64().unwrap() > 0, "{snap}");
    assert!(d["regions"]["regions"].as_u64().unwrap() > 0 && d["regions"]["pages"].as_u64().unwrap() > 0);
    // The rule ranks regions by their access rate: not the whole region moves.
    let region_pages = (w.region.1 - w.region.0) / 4096;
    assert!(promoted < region_pages * 3 / 4, "{promoted} of the region's {region_pages} pages promoted");
    // Program names are cut to 15 characters.
    let damon_program = |n: &String| n.starts_with("damon_aggregat");
    assert!(loaded_program_names().iter().any(damon_program));
    let on0 = w.region_nodes().get(&0).copied().unwrap_or(0);
    assert!(on0 >= hot * 9 / 10, "numa_maps: {on0} pages of the region on node 0");
    // Every page of the workload on node 0 is one hotpage moved: the kernel
    // promoted none of them (it marks no page with NUMA balancing off; pages
    // of other processes marked before the switch may still fault once, so
    // the system-wide pgpromote_success is not the measure).
    let after = stats_json().expect("the daemon answers");
    let promoted_after = Workload::promoted_in(&after, w.pid);
    assert!(on0 <= promoted_after, "{on0} pages on node 0, hotpage promoted {promoted_after}");
    eprintln!("kernel promotions during the run: {}", vmstat("pgpromote_success") - promoted_by_kernel);
    assert!(daemon.stop().unwrap().status.success());
    assert_eq!(std::fs::read_to_string(kdamonds).unwrap().trim(), "0", "hotpage's kdamond is gone");
    assert_eq!(settings_now(), before);
    // The kernel frees a program once its last reference goes, which under
    // TCG can come a moment after the daemon's exit (a CI run saw it still listed).
    let unloaded = (0..50).any(|_| {
        let gone = !loaded_program_names().iter().any(damon_program);
        if !gone {
            std::thread::sleep(Duration::from_millis(100));
        }
        gone
    });
    assert!(unloaded, "hotpage's DAMON program is still loaded 5 s after the stop");
}

/// A kdamond over its CPU budget (here 0.01% of a core, which any kdamond
/// exceeds) gets wider sampling and aggregation intervals, committed to the
/// running kdamond: the same thread goes on reporting regions.
#[test]
fn an_over_budget_kdamond_samples_less_often_without_a_restart() {
    in_the_box();
    // Observe-only, and no NUMA balancing either: nothing moves, so the
    // workload stays a target for the budget's two looks (a promoting run
    // once moved most of its pages to node 0 and the kdamond stopped with no
    // target left). Through the test's guard, which puts the original back
    // at the end.
    let mut mode = pure_tiering_mode();
    mode.set(NUMA_BALANCING, "0").unwrap();
    let config = std::env::temp_dir().join("hotpage-damon-budget.toml");
    std::fs::write(&config, "[damon]\ncpu_budget_percent = 0.01\n").unwrap();
    let daemon =
        start_daemon(&["--sources", "damon", "--observe-only", "--config", config.to_str().unwrap()]);
    let w = Workload::start(32, 8, 300);
    let damon = || stats_json().expect("the daemon answers")["damon"].clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    let widened = loop {
        let d = damon();
        if d["interval_changes"].as_u64().unwrap() >= 1 && d["kdamond_pid"].as_u64().unwrap() > 0 {
            break d;
        }
        assert!(Instant::now() < deadline, "the budget never moved the intervals: {d}");
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("over budget: {widened}");
    // The source's loop runs on its own thread, not the collector's.
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", daemon.pid()))
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|c| c.trim().to_owned())
        .collect();
    assert!(threads.iter().any(|c| c == "damon"), "threads: {threads:?}");
    let (sample_us, aggr_us) = (widened["sample_us"].as_u64().unwrap(), widened["aggr_us"].as_u64().unwrap());
    assert!(sample_us > 5_000 && sample_us <= 100_000, "{widened}");
    assert_eq!(aggr_us, sample_us * 80, "the same samples per aggregation");
    let attrs = "/sys/kernel/mm/damon/admin/kdamonds/0/contexts/0/monitoring_attrs";
    let sysfs =
        |f: &str| std::fs::read_to_string(format!("{attrs}/{f}")).unwrap().trim().parse::<u64>().unwrap();
    assert_eq!(sysfs("intervals/sample_us"), sample_us);
    // The same kdamond reports on at the new pace.
    let regions = |d: &serde_json::Value| d["regions"]["regions"].as_u64().unwrap();
    let at_change = regions(&widened);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = damon();
        assert_eq!(d["kdamond_pid"], widened["kdamond_pid"], "the kdamond was restarted: {d}");
        assert_eq!(d["starts"], widened["starts"], "{d}");
        if regions(&d) > at_change {
            break;
        }
        assert!(Instant::now() < deadline, "no region reported after the change: {d}");
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(w);
    assert!(daemon.stop().unwrap().status.success());
    let kdamonds = "/sys/kernel/mm/damon/admin/kdamonds/nr_kdamonds";
    assert_eq!(std::fs::read_to_string(kdamonds).unwrap().trim(), "0", "hotpage's kdamond is gone");
}

#[test]
fn the_daemon_records_what_its_hot_map_received_and_a_replay_decides_the_same() {
    in_the_box();
    let _mode = pure_tiering_mode();
    let path = Path::new("/results/daemon.hprec");
    let daemon = start_daemon(&["--samples", "off", "--record", path.to_str().unwrap()]);
    let w = Workload::start(32, 8, 300);
    let snap = w.stats_when_promoted(w.hot_pages() / 2, Duration::from_secs(120));
    let live_ready = snap["hotmap"]["feed"]["newly_ready"].as_u64().unwrap();
    assert!(live_ready > 0, "{snap}");
    assert!(daemon.stop().unwrap().status.success());
    // Replayed here as well; `cargo xtask test` replays the same file on the host.
    let out = hotpage_cli(&["replay", path.to_str().unwrap(), "--as-recorded", "--expect-live", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["matches_live"], true);
    assert!(r["feed"]["newly_ready"].as_u64().unwrap() >= live_ready, "{r}");
    assert!(r["events"].as_u64().unwrap() > 0 && r["trailer"]["events"] == r["events"]);
    assert!(r["processes"].as_array().unwrap().iter().any(|p| p["pid"] == w.pid), "{r}");
}

#[test]
fn check_places_the_scan_stamp_of_the_box_kernel_from_its_btf() {
    in_the_box();
    let out = hotpage_cli(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    // Debian 6.12 cloud: NR_CPUS 8192, NODES_SHIFT 10, vmemmap, LRU_GEN; HZ from /proc/timer_list.
    assert!(
        text.contains(
            "the scan stamp is in folio->flags bits 30..50 (1 ms buckets), node bits 54..63, HZ 250"
        ),
        "{text}"
    );
}

/// Memory blocks of node 1 now (numbers).
fn node1_blocks() -> Vec<u64> {
    let mut b: Vec<u64> = std::fs::read_dir("/sys/devices/system/node/node1")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("memory")?.parse().ok())
        .collect();
    b.sort_unstable();
    b
}

/// New CXL memory: a DIMM hot-added to node 1 while the daemon runs (QEMU
/// adds it through QMP when the test asks on the console) comes online; the
/// daemon tracks it within seconds, and the hot set of a workload whose
/// memory lands there is promoted.
#[test]
fn memory_hot_added_to_node_1_is_tracked_and_its_hot_pages_promoted() {
    use std::io::Write;
    in_the_box();
    let _mode = pure_tiering_mode();
    let daemon = start_daemon(&[]);
    let tracked = |s: &serde_json::Value| s["nodes"][1]["tracked_pages"].as_u64().unwrap();
    let before = tracked(&stats_json().unwrap());
    let blocks0 = node1_blocks();
    let block_pages = u64::from_str_radix(
        std::fs::read_to_string("/sys/devices/system/memory/block_size_bytes").unwrap().trim(),
        16,
    )
    .unwrap()
        / 4096;
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/console")
        .unwrap()
        .write_all(b"\nHOTPAGE_HOTPLUG node=1 mib=256\n")
        .unwrap();
    // The kernel onlines hot-added memory itself (MHP default online "auto");
    // a block it left offline is onlined here, as udev rules do.
    let t = Instant::now();
    let new = loop {
        let new: Vec<u64> = node1_blocks().into_iter().filter(|b| !blocks0.contains(b)).collect();
        for b in &new {
            let state = format!("/sys/devices/system/memory/memory{b}/state");
            if std::fs::read_to_string(&state).unwrap_or_default().trim() == "offline" {
                let _ = std::fs::write(&state, "online_movable");
            }
        }
        let online = new.iter().all(|b| {
            std::fs::read_to_string(format!("/sys/devices/system/memory/memory{b}/state"))
                .unwrap_or_default()
                .trim()
                == "online"
        });
        if new.len() as u64 * block_pages >= 65536 && online {
            break new;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "no DIMM came online on node 1: blocks {:?}",
            node1_blocks()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    // The daemon re-reads the layout every few seconds.
    let t = Instant::now();
    while tracked(&stats_json().unwrap()) < before + new.len() as u64 * block_pages {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the daemon never tracked the new memory: {}",
            stats_json().unwrap()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // A workload started now gets node 1's highest zone first: the new memory.
    let w = Workload::start(64, 16, 300);
    let new_pfns = (new[0] * block_pages, (new[new.len() - 1] + 1) * block_pages);
    let pagemap = Pagemap::open(root(), w.pid).unwrap();
    let pages = (w.region.1 - w.region.0) / 4096;
    let on_new = (0..pages)
        .filter_map(|i| pagemap.entry(w.region.0 + i * 4096).ok()?.pfn())
        .filter(|pfn| (new_pfns.0..new_pfns.1).contains(pfn))
        .count() as u64;
    assert!(on_new >= pages / 2, "only {on_new} of {pages} pages in the new memory {new_pfns:?}");
    let hot = w.hot_pages();
    let snap = w.stats_when_promoted(hot * 9 / 10, Duration::from_secs(150));
    let promoted = Workload::promoted_in(&snap, w.pid);
    assert!(promoted >= hot * 9 / 10, "only {promoted} of {hot} hot pages promoted: {snap}");
    assert!(daemon.stop().unwrap().status.success());
}
