//! Can this kernel and machine run hotpage? Each requirement with its
//! verdict and, when it fails, the fix (what `hotpage check` prints).

use std::path::Path;

use serde::Serialize;

use crate::{
    daemon::control::{self, Request, Response},
    kernel,
    kernel::movers,
    kernel::settings::{NUMA_BALANCING, NUMA_BALANCING_MEMORY_TIERING, PROMOTE_RATE_LIMIT},
    sources::damon,
    sources::{
        HookVerdict,
        samples::{PmuError, Sampler},
    },
    sys::sysfs::{read_text, read_u64},
    sys::topology::TierTopology,
};

#[derive(Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Ok,
    Fail,
    /// Worth knowing, not required.
    Info,
}

#[derive(Debug, Serialize)]
pub struct Requirement {
    pub name: &'static str,
    pub verdict: Verdict,
    pub detail: String,
    /// What to do when it fails.
    pub fix: Option<String>,
}

fn ok(name: &'static str, detail: String) -> Requirement {
    Requirement { name, verdict: Verdict::Ok, detail, fix: None }
}

fn fail(name: &'static str, detail: String, fix: impl Into<String>) -> Requirement {
    Requirement { name, verdict: Verdict::Fail, detail, fix: Some(fix.into()) }
}

fn info(name: &'static str, detail: String) -> Requirement {
    Requirement { name, verdict: Verdict::Info, detail, fix: None }
}

/// The sampling hardware the sample source would use, or why there is none.
fn pmu_line(root: &Path) -> String {
    match Sampler::detect(root) {
        Ok(s) => format!("{}: the sample source uses it (samples = \"auto\")", s.describe()),
        Err(PmuError::None(dev)) => {
            let core = dev.join("cpu").exists() || dev.join("cpu_core").exists();
            let what = if core {
                "a core PMU without memory sampling events"
            } else {
                "none (no hardware PMU; e.g. a VM)"
            };
            format!("{what}; samples = \"software\" samples page faults instead")
        }
        Err(e) => format!("a memory-sampling PMU that cannot be used: {e}"),
    }
}

/// Each requirement of a run on the machine under `root`, for a user of id `euid`.
pub fn requirements(root: &Path, run_dir: &Path, euid: u32) -> Vec<Requirement> {
    let mut v = Vec::new();
    let release = kernel::release(root);
    v.push(if euid == 0 {
        ok("root", "running as root".into())
    } else {
        fail("root", format!("running as uid {euid}"), "run hotpage as root (sudo hotpage run)")
    });
    let mut damon_tracepoint = Err("no BTF".to_owned());
    match kernel::kernel_btf(root) {
        Err(e) => {
            v.push(fail("kernel BTF", e.to_string(), "use a kernel built with CONFIG_DEBUG_INFO_BTF=y"));
            v.push(fail(
                "hint-fault hook",
                format!("Linux {release}: cannot look for it without BTF"),
                "use a kernel with BTF, Linux 6.9 or later",
            ));
        }
        Ok(btf) => {
            damon_tracepoint = damon::tracepoint::aggregated_args(&btf)
                .map(|a| match a.target {
                    Some(t) => format!("region is argument {}, target {t}", a.region),
                    None => {
                        format!("region is argument {}, target index {}", a.region, a.target_id.unwrap_or(0))
                    }
                })
                .map_err(|e| e.to_string());
            v.push(ok("kernel BTF", "/sys/kernel/btf/vmlinux".into()));
            v.push(match kernel::hint_fault_hook(&btf, &release) {
                Ok(hook) => ok("hint-fault hook", format!("Linux {release}: fentry/{hook}")),
                Err(e) => fail("hint-fault hook", e.to_string(), "upgrade to Linux 6.9 or later"),
            });
            v.push(match kernel::stamp::stamp_layout(&btf, root, &release) {
                Ok(layout) => ok(
                    "scan-to-fault latency",
                    format!("the scan stamp is in {}", kernel::stamp::describe(&layout)),
                ),
                Err(e) => info(
                    "scan-to-fault latency",
                    format!("unavailable: {e}; the latency rule falls back to pghot's (policy = \"pghot\")"),
                ),
            });
        }
    }
    match TierTopology::read(root) {
        Err(e) => v.push(fail("memory tiers", e.to_string(), "check that /sys is mounted")),
        Ok(topo) => v.push(match topo.require_lower_tier(root) {
            Ok(()) => {
                let lower: Vec<String> = topo
                    .lower_tier_nodes()
                    .map(|n| format!("node {} (memory_tier{})", n.id, n.tier.unwrap_or(0)))
                    .collect();
                ok("memory tiers", format!("lower tier: {}", lower.join(", ")))
            }
            Err(e) => fail(
                "memory tiers",
                e.to_string(),
                "hotpage needs a CPU-less node the kernel puts in a lower tier (CXL memory with HMAT/CDAT)",
            ),
        }),
    }
    match read_u64(&root.join(NUMA_BALANCING)) {
        Err(_) => v.push(fail(
            "NUMA balancing",
            "kernel.numa_balancing is missing".into(),
            "use a kernel built with CONFIG_NUMA_BALANCING=y",
        )),
        Ok(mode) => {
            let rate = read_u64(&root.join(PROMOTE_RATE_LIMIT)).ok();
            let tiering = mode & NUMA_BALANCING_MEMORY_TIERING != 0;
            v.push(ok(
                "NUMA balancing",
                format!(
                    "mode {mode}{}, promote rate limit {} MB/s; `hotpage run` sets memory tiering and a limit of 0 \
                     while it runs",
                    if tiering { " (memory tiering)" } else { "" },
                    rate.map_or("?".into(), |r| r.to_string())
                ),
            ));
        }
    }
    if let Ok(topo) = TierTopology::read(root) {
        let top: Vec<u32> = topo.top_tier_nodes().map(|n| n.id).collect();
        let free = movers::kernel_promotes_freely(root, &top);
        v.push(info(
            "kernel promotion held",
            if free.is_empty() {
                "no top-tier node has enough free memory to make NUMA balancing skip its rate limit".into()
            } else {
                free.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
            },
        ));
    }
    let damon = movers::damon_migrations(root);
    v.push(if damon.is_empty() {
        ok("no competing tiering", "no DAMON migrate_hot/migrate_cold scheme runs".into())
    } else {
        fail(
            "no competing tiering",
            damon.join("; "),
            "turn the DAMON scheme off, or run hotpage --observe-only",
        )
    });
    // The DAMON source is optional (`--sources damon`): information only.
    v.push(info(
        "DAMON source",
        match (damon::damon_status(root), damon_tracepoint) {
            (Ok(()), Ok(args)) => {
                format!("available and free: `--sources damon` can run (damon:damon_aggregated: {args})")
            }
            (Ok(()), Err(e)) => format!("DAMON is free, but its tracepoint cannot be used: {e}"),
            (Err(e), _) => format!("unavailable: {e}"),
        },
    ));
    v.push(match control::request(run_dir, &Request::Ping) {
        Ok(Response::Pong { pid, version }) => info("daemon", format!("hotpage {version} runs as pid {pid}")),
        _ => info("daemon", "no hotpage daemon is running".into()),
    });
    // Whether the hook is on the fault path shows only while faults happen:
    // the running daemon compares it with the kernel's count.
    let hook = match control::request(run_dir, &Request::Snapshot) {
        Ok(Response::Snapshot(s)) => s.hint_fault_hook,
        _ => None,
    };
    v.push(match hook {
        Some(h) if h.verdict == HookVerdict::Misses => fail(
            "hook sees faults",
            h.summary(),
            "run with --no-hint-faults --samples hardware (or software), and report this kernel build",
        ),
        Some(h) => info("hook sees faults", h.summary()),
        None => info(
            "hook sees faults",
            "checked while `hotpage run` runs (stats, hotpage_hint_fault_hook_coverage_ratio)".into(),
        ),
    });
    let debugfs = root.join("sys/kernel/debug/sched/numa_balancing");
    v.push(info(
        "scan knobs",
        if debugfs.exists() {
            format!("{} (debugfs) present", debugfs.display())
        } else {
            "debugfs sched/numa_balancing not mounted: scan knobs cannot be tuned".into()
        },
    ));
    v.push(info("PMU", pmu_line(root)));
    if let Ok(mode) = read_text(&root.join("sys/kernel/mm/transparent_hugepage/enabled")) {
        v.push(info("THP", format!("transparent_hugepage: {}", mode.trim())));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::{cxl_box, no_tiering, single_node};

    fn verdict(items: &[Requirement], name: &str) -> (Verdict, String) {
        let i = items.iter().find(|i| i.name == name).unwrap();
        (if i.verdict == Verdict::Ok { Verdict::Ok } else { Verdict::Fail }, i.detail.clone())
    }

    #[test]
    fn the_box_capture_has_tiers_but_no_btf_in_the_fixture() {
        let items = requirements(&cxl_box(), Path::new("/nonexistent"), 0);
        assert_eq!(verdict(&items, "root").0, Verdict::Ok);
        let (v, d) = verdict(&items, "memory tiers");
        assert_eq!(v, Verdict::Ok);
        assert!(d.contains("node 1 (memory_tier56)"), "{d}");
        assert_eq!(verdict(&items, "NUMA balancing").0, Verdict::Ok);
        // The capture holds no BTF: both BTF items fail with the fix.
        let btf = items.iter().find(|i| i.name == "kernel BTF").unwrap();
        assert_eq!(btf.verdict, Verdict::Fail);
        assert!(btf.fix.as_deref().unwrap().contains("CONFIG_DEBUG_INFO_BTF"));
    }

    #[test]
    fn missing_tiers_and_root_fail_with_a_fix() {
        let items = requirements(&single_node(), Path::new("/nonexistent"), 1000);
        let root = items.iter().find(|i| i.name == "root").unwrap();
        assert_eq!(root.verdict, Verdict::Fail);
        assert!(root.fix.as_deref().unwrap().contains("sudo"));
        assert_eq!(verdict(&items, "memory tiers").0, Verdict::Fail);
        let items = items_for_no_tiering();
        let (v, d) = verdict(&items, "memory tiers");
        assert_eq!(v, Verdict::Fail);
        assert!(d.contains("memory_tiering"), "{d}");
    }

    fn items_for_no_tiering() -> Vec<Requirement> {
        requirements(&no_tiering(), Path::new("/nonexistent"), 0)
    }

    #[test]
    fn pmu_types_by_sysfs() {
        use crate::test_fixtures::fixture;
        let root = std::env::temp_dir().join(format!("hotpage-pmu-{}", std::process::id()));
        let dev = root.join("sys/bus/event_source/devices");
        std::fs::create_dir_all(dev.join("cpu/events")).unwrap();
        assert!(pmu_line(&root).starts_with("a core PMU"));
        let _ = std::fs::remove_dir_all(&root);
        assert!(pmu_line(&fixture("pmu-intel-icx")).starts_with("Intel PEBS"));
        assert!(pmu_line(&fixture("pmu-amd-zen4")).starts_with("AMD IBS"));
        assert!(pmu_line(Path::new("/nonexistent")).starts_with("none"));
    }
}
