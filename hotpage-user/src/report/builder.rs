//! Builds a [`Snapshot`] of the running daemon: it reads the hot map, the
//! feeder's and the BPF programs' counters, the promoter's reports, node
//! meminfo and /proc/vmstat. It changes nothing.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Instant,
};

use super::{
    DamonSnapshot, HotMapRow, KERNEL_COUNTERS, NodeRow, ProcessRow, PromoterRow, Snapshot, SnapshotSource,
    SourceRow,
};
use crate::{
    collector::FeedCounters,
    hotmap::{HotMap, RecordMode},
    kernel::scan_rest::ScanRestReport,
    promoter::{CounterSnapshot, PromoterReporter, RateLimit},
    rule::RuleReport,
    sources::{
        HookReport, ResolveCounters, SourceCounters,
        damon::{DamonConfig, DamonStatus, regions::RegionCounters},
        samples::SamplerStatus,
    },
    sys::node_meminfo::read_node_meminfo,
    sys::topology::TierTopology,
    sys::vmstat::{kernel_promotions, read_vmstat},
};

/// Processes listed in a snapshot at most (by promoted, then ready pages).
pub const MAX_PROCESSES: usize = 50;

/// One attached source: its name, where it is attached, its BPF counters.
#[derive(Clone)]
pub struct AttachedSource {
    pub name: String,
    pub attached_to: String,
    pub counters: Arc<SourceCounters>,
    /// `source::*` id, to pick the hot map's per-source count.
    pub id: u16,
}

pub struct SnapshotBuilder {
    pub root: PathBuf,
    pub topology: TierTopology,
    pub kernel: String,
    pub started: Instant,
    pub rate_limit: RateLimit,
    pub sources: Vec<AttachedSource>,
    pub map: Arc<HotMap>,
    pub feed: Arc<FeedCounters>,
    /// What the hotness rule last published.
    pub rule: Arc<Mutex<RuleReport>>,
    /// The hint-fault hook's last judged window (None: no hook).
    pub hook: Arc<Mutex<Option<HookReport>>>,
    /// The scanner's rest, when hotpage rests it.
    pub scan_rest: Arc<Mutex<Option<ScanRestReport>>>,
    /// pfn lookups of samples without a physical address.
    pub resolve: Arc<ResolveCounters>,
    pub sampler: Option<Arc<SamplerStatus>>,
    pub promoter: PromoterReporter,
    /// Each top-tier node's `pgpromote_success` when hotpage started.
    pub kernel_promotions_at_start: BTreeMap<u32, u64>,
    /// The DAMON source, when it runs.
    pub damon: Option<DamonFeed>,
}

/// What the DAMON source publishes.
pub struct DamonFeed {
    pub status: Arc<DamonStatus>,
    pub config: DamonConfig,
    pub regions: Arc<RegionCounters>,
}

fn rate_bytes(r: RateLimit) -> Option<u64> {
    match r {
        RateLimit::ObserveOnly => Some(0),
        RateLimit::MbPerSec(n) => Some(n.saturating_mul(1_000_000)),
        RateLimit::Unlimited => None,
    }
}

fn failures(c: &CounterSnapshot) -> BTreeMap<String, u64> {
    [
        ("EBUSY", c.err_ebusy),
        ("ENOMEM", c.err_enomem),
        ("EACCES", c.err_eacces),
        ("EFAULT", c.err_efault),
        ("ENOENT", c.err_enoent),
        ("ESRCH", c.err_esrch),
        ("other", c.err_other),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn cpu_list(cpus: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        out.push(if i == j { cpus[i].to_string() } else { format!("{}-{}", cpus[i], cpus[j]) });
        i = j + 1;
    }
    out.join(",")
}

/// A process's command name, or "?" once it has exited.
fn comm(root: &Path, pid: u32) -> String {
    std::fs::read_to_string(root.join(format!("proc/{pid}/comm")))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into())
}

/// `(total, free)` bytes of a node, from its meminfo (kB).
pub fn node_memory(root: &Path, nid: u32) -> (u64, u64) {
    match read_node_meminfo(root, nid) {
        Ok(m) => {
            (m.get("MemTotal").copied().unwrap_or(0) * 1024, m.get("MemFree").copied().unwrap_or(0) * 1024)
        }
        Err(_) => (0, 0),
    }
}

impl SnapshotBuilder {
    pub fn build(&self) -> Snapshot {
        let reports = self.promoter.reports();
        let mode = self.map.config().mode;
        let kernel_now = kernel_promotions(&self.root, self.kernel_promotions_at_start.keys().copied());
        let mut nodes = Vec::new();
        for n in &self.topology.nodes {
            let (total, free) = node_memory(&self.root, n.id);
            let mine = reports.iter().find(|r| r.node == n.id);
            let promoted_in =
                reports.iter().filter(|r| r.target == Some(n.id)).map(|r| r.counters.moved).sum();
            nodes.push(NodeRow {
                node: n.id,
                tier: n.tier,
                top_tier: n.top_tier,
                cpus: cpu_list(&n.cpus),
                total_bytes: total,
                free_bytes: free,
                tracked_pages: if n.top_tier { 0 } else { self.map.tracked_pages(n.id) },
                ready_pages: if n.top_tier { 0 } else { self.map.ready_pages(n.id) },
                promoted_out_pages: mine.map(|r| r.counters.moved).unwrap_or(0),
                promoted_in_pages: if n.top_tier { promoted_in } else { 0 },
                kernel_promoted_in_pages: match (
                    kernel_now.get(&n.id),
                    self.kernel_promotions_at_start.get(&n.id),
                ) {
                    (Some(now), Some(start)) => now.saturating_sub(*start),
                    _ => 0,
                },
                failures: mine.map(|r| failures(&r.counters)).unwrap_or_default(),
            });
        }
        let counters = self.map.counters();
        let sources = self
            .sources
            .iter()
            .map(|s| SourceRow {
                name: s.name.clone(),
                attached_to: s.attached_to.clone(),
                bpf: s.counters.read().unwrap_or_default(),
                recorded: match s.id {
                    hotpage_common::source::HINT_FAULT => counters.recorded_hintfaults,
                    hotpage_common::source::HW_SAMPLE => counters.recorded_hwhints,
                    hotpage_common::source::PGTABLE_SCAN => counters.recorded_pgtscans,
                    _ => 0,
                },
            })
            .collect();
        let hints = self.map.hints();
        let hotmap = HotMapRow {
            recorded_accesses: counters.recorded_accesses,
            feed: self.feed.snapshot(),
            hints: hints.len() as u64,
            hint_capacity: hints.capacity() as u64,
            hint_evictions: hints.evictions(),
            record_bytes: self.map.memory().record_bytes,
        };
        let vmstat = read_vmstat(&self.root).unwrap_or_default();
        let kernel_counters =
            KERNEL_COUNTERS.iter().filter_map(|k| vmstat.get(*k).map(|v| ((*k).to_owned(), *v))).collect();
        Snapshot {
            version: env!("CARGO_PKG_VERSION").into(),
            kernel: self.kernel.clone(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            mode: match mode {
                RecordMode::Default => "default".into(),
                RecordMode::Precise => "precise".into(),
            },
            observe_only: self.rate_limit == RateLimit::ObserveOnly,
            rate_limit: self.rate_limit.to_string(),
            rate_limit_bytes_per_s: rate_bytes(self.rate_limit),
            nodes,
            sources,
            hotmap,
            promoter: reports.into_iter().map(PromoterRow::from).collect(),
            kernel_counters,
            processes: self.processes(),
            sampler: self.sampler.as_ref().map(|s| s.snapshot()),
            sample_pfn_lookups: self.resolve.snapshot(),
            rule: self.rule.lock().map(|r| r.clone()).unwrap_or_default(),
            hint_fault_hook: self.hook.lock().ok().and_then(|h| h.clone()),
            scan_rest: self.scan_rest.lock().ok().and_then(|r| r.clone()),
            damon: self.damon.as_ref().map(|d| DamonSnapshot {
                status: d.status.report(&d.config),
                regions: d.regions.snapshot(),
                running_s: self.started.elapsed().as_secs_f64(),
            }),
        }
    }

    fn processes(&self) -> Vec<ProcessRow> {
        let promoted = self.promoter.processes();
        let hot = self.map.hints().count_by_pid();
        let mut pids: HashMap<u32, (u64, u64)> = HashMap::new();
        for (pid, n) in promoted {
            pids.entry(pid).or_default().0 += n;
        }
        for (pid, n) in hot {
            pids.entry(pid).or_default().1 += n;
        }
        let mut rows: Vec<ProcessRow> = pids
            .into_iter()
            .map(|(pid, (promoted_pages, hot_pages))| ProcessRow {
                pid,
                comm: String::new(),
                promoted_pages,
                hot_pages,
            })
            .collect();
        rows.sort_by(|a, b| {
            (b.promoted_pages, b.hot_pages, a.pid).cmp(&(a.promoted_pages, a.hot_pages, b.pid))
        });
        rows.truncate(MAX_PROCESSES);
        for r in &mut rows {
            r.comm = comm(&self.root, r.pid);
        }
        rows
    }
}

impl SnapshotSource for SnapshotBuilder {
    fn snapshot(&self) -> Snapshot {
        self.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_are_compressed_like_sysfs() {
        assert_eq!(cpu_list(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(cpu_list(&[]), "");
        assert_eq!(cpu_list(&[5]), "5");
    }

    /// With a node "free enough", the kernel promotes beside hotpage; the
    /// snapshot shows its promotions into each top-tier node since start.
    #[test]
    fn the_kernels_promotions_per_node_since_start_are_shown() {
        use crate::{
            hotmap::{HotMapConfig, MemoryLayout},
            test_fixtures::cxl_box,
        };

        let root = tempfile::tempdir().unwrap();
        let vmstat = root.path().join("sys/devices/system/node/node0/vmstat");
        std::fs::create_dir_all(vmstat.parent().unwrap()).unwrap();
        std::fs::write(&vmstat, "nr_free_pages 1\npgpromote_success 100\n").unwrap();
        let topology = TierTopology::read(&cxl_box()).unwrap();
        let map = Arc::new(HotMap::new(&MemoryLayout::from(&topology), HotMapConfig::default(), 64).unwrap());
        let builder = SnapshotBuilder {
            root: root.path().to_owned(),
            kernel_promotions_at_start: kernel_promotions(root.path(), [0]),
            topology,
            kernel: "6.12".into(),
            started: Instant::now(),
            rate_limit: RateLimit::MbPerSec(1024),
            sources: Vec::new(),
            map,
            feed: Arc::default(),
            rule: Arc::default(),
            hook: Arc::default(),
            scan_rest: Arc::default(),
            resolve: Arc::default(),
            sampler: None,
            promoter: PromoterReporter::default(),
            damon: None,
        };
        assert_eq!(builder.build().nodes[0].kernel_promoted_in_pages, 0);
        std::fs::write(&vmstat, "nr_free_pages 1\npgpromote_success 612\n").unwrap();
        let s = builder.build();
        assert_eq!((s.nodes[0].node, s.nodes[0].kernel_promoted_in_pages), (0, 512));
        assert_eq!(s.nodes[1].kernel_promoted_in_pages, 0, "a lower-tier node takes none");
        assert!(super::super::render_stats(&s, None).contains("512"));
        assert!(
            super::super::render_prometheus(&s)
                .contains("hotpage_kernel_promoted_bytes_total{target=\"0\"} 2097152")
        );
    }

    #[test]
    fn node_memory_comes_from_the_capture_in_bytes() {
        let (total, free) = node_memory(&crate::test_fixtures::cxl_box(), 1);
        assert!(total > 1 << 29 && free > 0 && free <= total, "{total} {free}");
        assert_eq!(node_memory(Path::new("/nonexistent"), 0), (0, 0));
    }
}
