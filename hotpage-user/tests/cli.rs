//! CLI tests: usage errors exit 2, environment errors exit 1 with one line
//! that names the problem and the fix. None of them needs root or tiers.

// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::{
    fs,
    path::{Path, PathBuf},
    process::Output,
};

use assert_cmd::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

fn hotpage(args: &[&str]) -> Output {
    Command::cargo_bin("hotpage").unwrap().args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// One line on stderr, prefixed like every hotpage error.
fn assert_one_line_error(o: &Output, needle: &str) {
    assert_eq!(o.status.code(), Some(1), "{}", stderr(o));
    let err = stderr(o);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("hotpage: error: "), "{err}");
    assert!(err.contains(needle), "{needle:?} in {err}");
}

#[test]
fn help_lists_the_commands() {
    let o = hotpage(&["--help"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("trace"), "{out}");
    let o = hotpage(&["trace", "--help"]);
    let out = String::from_utf8_lossy(&o.stdout);
    for flag in ["--json", "--pid", "--set-tiering", "--wakeup-every", "--duration"] {
        assert!(out.contains(flag), "{flag} in {out}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let o = hotpage(&["trace", "--bogus"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unexpected argument '--bogus'"));
    let o = hotpage(&["trace", "--wakeup-every", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = hotpage(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn a_machine_without_lower_tier_is_told_what_it_needs() {
    let root = fixture("single-node-6.18");
    let o = hotpage(&["trace", "--root", root.to_str().unwrap()]);
    assert_one_line_error(&o, "no lower memory tier");
    assert!(stderr(&o).contains("cargo xtask vm demo"));
}

#[test]
fn a_kernel_without_memory_tiers_is_named() {
    let root = fixture("no-tiering-5.15");
    let o = hotpage(&["trace", "--root", root.to_str().unwrap()]);
    assert_one_line_error(&o, "needs Linux 6.1 or later");
}

#[test]
fn a_kernel_without_btf_is_named() {
    let root = fixture("cxl-box-6.12");
    let o = hotpage(&["trace", "--root", root.to_str().unwrap()]);
    assert_one_line_error(&o, "CONFIG_DEBUG_INFO_BTF=y");
}

#[test]
fn a_broken_sysfs_names_the_file() {
    let dir = std::env::temp_dir().join(format!("hotpage-cli-{}", std::process::id()));
    let node = dir.join("sys/devices/system/node");
    fs::create_dir_all(&node).unwrap();
    fs::write(node.join("online"), "0-x\n").unwrap();
    let o = hotpage(&["trace", "--root", dir.to_str().unwrap()]);
    let _ = fs::remove_dir_all(&dir);
    assert_one_line_error(&o, "sys/devices/system/node/online");
}

/// A fixture root with tiers and the host's real kernel BTF, so that only
/// privileges stand between `hotpage trace` and the kernel.
fn tiered_root_with_host_btf() -> Option<PathBuf> {
    let btf = Path::new("/sys/kernel/btf/vmlinux");
    if !btf.exists() {
        return None;
    }
    let dir = std::env::temp_dir().join(format!("hotpage-cli-btf-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    copy_dir(&fixture("cxl-box-6.12"), &dir);
    fs::create_dir_all(dir.join("sys/kernel/btf")).unwrap();
    std::os::unix::fs::symlink(btf, dir.join("sys/kernel/btf/vmlinux")).unwrap();
    Some(dir)
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn an_unprivileged_user_is_told_to_use_root() {
    let Some(root) = tiered_root_with_host_btf() else {
        panic!("this test needs /sys/kernel/btf/vmlinux on the test machine");
    };
    // Run as nobody: directly when we are not root, else through setpriv.
    // SAFETY: geteuid has no preconditions.
    let is_root = unsafe { libc::geteuid() } == 0;
    let bin = assert_cmd::cargo::cargo_bin("hotpage");
    let mut cmd = if is_root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(&bin);
        c
    } else {
        Command::new(&bin)
    };
    let o = cmd.args(["trace", "--root", root.to_str().unwrap()]).output().unwrap();
    let _ = fs::remove_dir_all(&root);
    assert_one_line_error(&o, "needs root");
    assert!(stderr(&o).contains("sudo"));
}

#[test]
fn run_refuses_bad_configuration_as_a_usage_error() {
    let dir = std::env::temp_dir().join(format!("hotpage-cli-cfg-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    fs::write(&bad, "[promoter]\nrate = 5\n").unwrap();
    let o = hotpage(&["run", "--config", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("unknown field `rate`"), "{}", stderr(&o));
    assert_eq!(stderr(&o).trim_end().lines().count(), 1);
    let o = hotpage(&["run", "--config", dir.join("missing.toml").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read the configuration file"), "{}", stderr(&o));
    let o = hotpage(&["run", "--freq-window-ms", "9000"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("frequency window 9000 ms"), "{}", stderr(&o));
    let o = hotpage(&["run", "--rate-limit", "fast"]);
    assert_eq!(o.status.code(), Some(2));
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn run_on_a_machine_without_tiers_says_what_it_needs() {
    let root = fixture("single-node-6.18");
    let o = hotpage(&["run", "--root", root.to_str().unwrap()]);
    assert_one_line_error(&o, "no lower memory tier");
}

#[test]
fn stats_without_a_daemon_is_one_clear_error() {
    let o = hotpage(&["--run-dir", "/nonexistent-hotpage", "stats"]);
    assert_one_line_error(&o, "no hotpage daemon is running");
    assert!(stderr(&o).contains("hotpage run"));
    for cmd in ["top", "metrics"] {
        let o = hotpage(&["--run-dir", "/nonexistent-hotpage", cmd]);
        assert_one_line_error(&o, "no hotpage daemon is running");
    }
    let o = hotpage(&["stats", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn nodes_shows_tiers_as_a_table_and_json() {
    let root = fixture("cxl-box-6.12");
    let o = hotpage(&["nodes", "--root", root.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("SIZE MiB") && out.contains("memory_tier56") && out.contains("node 0"), "{out}");
    let o = hotpage(&["nodes", "--json", "--root", root.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["nodes"][1]["top_tier"], false);
    assert_eq!(v["nodes"][1]["promotes_to"], 0);
    assert_eq!(v["nodes"][1]["tier"], 56);
}

#[test]
fn check_lists_each_requirement_with_its_fix() {
    let root = fixture("cxl-box-6.12");
    let o = hotpage(&["check", "--root", root.to_str().unwrap()]);
    // The capture has no BTF: check fails, and says how to fix it.
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("✔ memory tiers"), "{out}");
    assert!(out.contains("✘ kernel BTF"), "{out}");
    assert!(out.contains("fix: use a kernel built with CONFIG_DEBUG_INFO_BTF=y"), "{out}");
    assert!(stderr(&o).contains("requirement(s) not met"));
    let o = hotpage(&["check", "--json", "--root", root.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(v["checks"].as_array().unwrap().iter().any(|c| c["name"] == "PMU"));
}

/// A control server in this process with a fixed snapshot, so the CLI's
/// side of stats/top/metrics is tested without tiers or root.
mod with_a_daemon {
    use std::{collections::BTreeMap, sync::Arc};

    use hotpage::{
        daemon::control::ControlServer,
        report::SnapshotSource,
        report::{NodeRow, ProcessRow, PromoterRow, Snapshot},
    };

    use super::*;

    struct Fixed;

    impl SnapshotSource for Fixed {
        fn snapshot(&self) -> Snapshot {
            let counters = hotpage::promoter::CounterSnapshot {
                moved: 4096,
                moved_bytes: 4096 * 4096,
                move_calls: 8,
                err_ebusy: 2,
                ..Default::default()
            };
            Snapshot {
                version: "0.1.0".into(),
                kernel: "6.12.117+deb12-cloud-amd64".into(),
                uptime_s: 10.0,
                mode: "default".into(),
                rate_limit: "1024 MB/s".into(),
                rate_limit_bytes_per_s: Some(1_024_000_000),
                nodes: vec![
                    NodeRow {
                        node: 0,
                        tier: Some(4),
                        top_tier: true,
                        promoted_in_pages: 4096,
                        ..NodeRow::default()
                    },
                    NodeRow {
                        node: 1,
                        tier: Some(56),
                        promoted_out_pages: 4096,
                        failures: BTreeMap::from([("EBUSY".into(), 2)]),
                        ..NodeRow::default()
                    },
                ],
                promoter: vec![PromoterRow {
                    node: 1,
                    target: Some(0),
                    counters,
                    latency: hotpage::promoter::LatencySnapshot {
                        buckets: vec![0; hotpage::promoter::stats::LATENCY_BUCKETS_MS.len() + 1],
                        count: 0,
                        sum_ms: 0,
                    },
                }],
                processes: vec![ProcessRow {
                    pid: 4242,
                    comm: "gups".into(),
                    promoted_pages: 4096,
                    hot_pages: 3,
                }],
                ..Snapshot::default()
            }
        }
    }

    fn serve() -> (tokio::runtime::Runtime, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "hotpage-cli-daemon-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let server = Arc::new(rt.block_on(async { ControlServer::bind(&dir) }).unwrap());
        rt.spawn(async move { server.serve(Arc::new(Fixed)).await });
        (rt, dir)
    }

    fn cli(dir: &Path, args: &[&str]) -> (String, Output) {
        let o = Command::cargo_bin("hotpage").unwrap().arg("--run-dir").arg(dir).args(args).output().unwrap();
        (String::from_utf8_lossy(&o.stdout).into_owned(), o)
    }

    #[test]
    fn stats_table_json_prometheus_and_watch_mode() {
        let (_rt, dir) = serve();
        let (out, o) = cli(&dir, &["stats"]);
        assert!(o.status.success(), "{}", stderr(&o));
        for want in ["NODE", "PROMOTED OUT pages", "EBUSY 2", "4096", "rate limit 1024 MB/s"] {
            assert!(out.contains(want), "{want:?} in\n{out}");
        }
        let (out, _) = cli(&dir, &["stats", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["promoter"][0]["counters"]["moved"], 4096);
        assert_eq!(v["nodes"][1]["failures"]["EBUSY"], 2);
        let (out, _) = cli(&dir, &["stats", "--prometheus"]);
        assert!(out.contains("hotpage_promoted_bytes_total{node=\"1\",target=\"0\"} 16777216"), "{out}");
        // Watch mode: COUNT reports, INTERVAL apart; JSON is one object per line.
        let (out, o) = cli(&dir, &["stats", "--json", "0.1", "3"]);
        assert!(o.status.success());
        assert_eq!(out.lines().count(), 3);
        // --watch into a pipe: plain reports one after another, no screen escapes.
        let (out, o) = cli(&dir, &["stats", "--watch", "0.1", "2"]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(out.matches("PROMOTER").count(), 2, "{out}");
        assert!(!out.contains('\x1b'), "{out:?}");
        let (_, o) = cli(&dir, &["stats", "--watch", "--json"]);
        assert_eq!(o.status.code(), Some(2), "--watch is for the table");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn top_and_metrics() {
        let (_rt, dir) = serve();
        let (out, o) = cli(&dir, &["top"]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(out.contains("4242") && out.contains("gups") && out.contains("PROMOTED MiB"), "{out}");
        let (out, _) = cli(&dir, &["top", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v[0]["pid"], 4242);
        let (out, o) = cli(&dir, &["metrics"]);
        assert!(o.status.success());
        assert!(out.starts_with("# HELP hotpage_build_info"), "{out}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_non_root_client_gets_a_permission_error() {
        // SAFETY: geteuid has no preconditions.
        let is_root = unsafe { libc::geteuid() } == 0;
        // Unprivileged, the socket would be our own: `cargo xtask test` runs
        // this as root (and sets HOTPAGE_ROOT_TESTS so it cannot skip there).
        if !is_root {
            assert!(
                std::env::var_os("HOTPAGE_ROOT_TESTS").is_none(),
                "this test needs root to own the socket: run `sudo cargo xtask test`"
            );
            eprintln!("skipped a_non_root_client_gets_a_permission_error: it needs root to own the socket");
            return;
        }
        let (_rt, dir) = serve();
        let bin = assert_cmd::cargo::cargo_bin("hotpage");
        let o = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin)
            .arg("--run-dir")
            .arg(&dir)
            .arg("stats")
            .output()
            .unwrap();
        assert_one_line_error(&o, "root-only: run this command with sudo");
        let _ = fs::remove_dir_all(&dir);
    }
}

/// A short recording of hint faults on the box's node 1, made with the library.
mod replay {
    use hotpage::{
        hotmap::HotMapConfig,
        recording::{Header, NodeMemoryAtStart, PromoterKnobs, Trailer, Writer},
        sys::topology::TierTopology,
    };
    use hotpage_common::{HotpageEvent, source};

    use super::*;

    fn recording(dir: &Path, events: u64) -> (PathBuf, Vec<u8>) {
        let topology = TierTopology::read(&fixture("cxl-box-6.12")).unwrap();
        let first = topology.lower_tier_ranges().unwrap()[0].start_pfn;
        let header = Header {
            hotpage: "test".into(),
            kernel: "6.12.117+deb12-cloud-amd64".into(),
            topology,
            memory: vec![NodeMemoryAtStart { node: 0, total: 262_144, free: 200_000, low: 3000 }],
            hotmap: HotMapConfig::default(),
            hint_capacity: 1 << 16,
            promoter: PromoterKnobs { rate_limit_mbps: Some(1024), ..PromoterKnobs::default() },
            pid: None,
            changes: false,
            start_ns: 5_000_000_000,
            sources_at_start: Vec::new(),
            policy: None,
        };
        let mut w = Writer::new(Vec::new(), &header).unwrap();
        for i in 0..events {
            let page = i % 64;
            w.event(&HotpageEvent {
                pfn: first + page,
                vaddr: 0x7f00_0000_0000 + page * 4096,
                time_ns: 5_000_000_000 + i * 10_000_000,
                pid: 77,
                page_nid: 1,
                source: source::HINT_FAULT,
                ..HotpageEvent::default()
            })
            .unwrap();
        }
        let data = w.finish(Trailer::default()).unwrap();
        let path = dir.join("r.hprec");
        fs::write(&path, &data).unwrap();
        (path, data)
    }

    #[test]
    fn a_recording_replays_to_a_table_and_to_json() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = recording(dir.path(), 1000);
        let o = hotpage(&["replay", path.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("1000 events") && out.contains("simulated"), "{out}");
        let o = hotpage(&["replay", path.to_str().unwrap(), "--json", "--freq-threshold", "3"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["events"], 1000);
        assert_eq!(v["feed"]["newly_ready"], 64, "every page turns READY once (64 pages, 3 accesses)");
        assert_eq!(v["promoter"]["moved"], 64);
    }

    /// Malformed, truncated, future: one line naming the problem, exit 2.
    #[test]
    fn a_bad_recording_is_one_line_and_exit_2() {
        let dir = tempfile::tempdir().unwrap();
        let (path, data) = recording(dir.path(), 100);
        let bad = dir.path().join("bad");
        let cases: [(Vec<u8>, &str); 3] = [
            (b"PK\x03\x04 a zip file".to_vec(), "not a hotpage recording"),
            (data[..data.len() - 7].to_vec(), "truncated"),
            ([&data[..8], &[7u8, 0][..], &data[10..]].concat(), "version 7"),
        ];
        for (bytes, needle) in cases {
            fs::write(&bad, bytes).unwrap();
            let o = hotpage(&["replay", bad.to_str().unwrap()]);
            assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
            let err = stderr(&o);
            assert_eq!(err.trim_end().lines().count(), 1, "{err}");
            assert!(err.contains(needle), "{needle:?} in {err}");
        }
        // A recording without the hot map's takes cannot replay as recorded.
        let o = hotpage(&["replay", path.to_str().unwrap(), "--as-recorded"]);
        assert_one_line_error(&o, "without the hot map's takes");
        let o = hotpage(&["replay", dir.path().join("missing").to_str().unwrap()]);
        assert_one_line_error(&o, "missing");
    }
}
