//! What hotpage reports: one snapshot of everything (nodes, sources, hot map,
//! promoter, kernel counters, processes), built by the daemon and rendered as
//! a table, JSON or Prometheus text. Reading only: nothing here changes state.

mod builder;
#[cfg(test)]
pub(crate) mod fixture;
mod prometheus;
pub(crate) mod table;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use builder::{AttachedSource, DamonFeed, MAX_PROCESSES, SnapshotBuilder, node_memory};
pub use prometheus::{CONTENT_TYPE, render as render_prometheus};
pub use table::{render_stats, render_top};

use crate::{
    collector::FeedStats,
    promoter::NodeReport,
    rule::RuleReport,
    sources::{
        CounterSnapshot as BpfCounters, HookReport, ResolveStats,
        damon::{RegionStats, source::DamonReport},
        samples::SamplerSnapshot,
    },
};

/// The DAMON source: its kdamond, targets and cost, and its regions' fate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DamonSnapshot {
    #[serde(flatten)]
    pub status: DamonReport,
    pub regions: RegionStats,
    /// Seconds the source has run (for the kdamond's share of a core).
    pub running_s: f64,
}

/// Kernel counters shown beside hotpage's own (from /proc/vmstat).
pub const KERNEL_COUNTERS: &[&str] = &[
    "pgpromote_success",
    "pgpromote_candidate",
    "numa_hint_faults",
    "numa_hint_faults_local",
    "numa_pages_migrated",
    "pgmigrate_success",
    "pgmigrate_fail",
    "pgdemote_kswapd",
    "pgdemote_direct",
];

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: String,
    pub kernel: String,
    pub uptime_s: f64,
    /// Record mode of the hot map.
    pub mode: String,
    pub observe_only: bool,
    /// The promoter's rate limit, as configured ("1024 MB/s", "unlimited", ...).
    pub rate_limit: String,
    /// Bytes per second, None when unlimited.
    pub rate_limit_bytes_per_s: Option<u64>,
    pub nodes: Vec<NodeRow>,
    pub sources: Vec<SourceRow>,
    pub hotmap: HotMapRow,
    pub promoter: Vec<PromoterRow>,
    pub kernel_counters: BTreeMap<String, u64>,
    pub processes: Vec<ProcessRow>,
    /// The sample source: which PMU, its period, its CPU cost (None: off).
    #[serde(default)]
    pub sampler: Option<SamplerSnapshot>,
    /// pfn lookups in pagemap for samples without a physical address.
    #[serde(default)]
    pub sample_pfn_lookups: ResolveStats,
    /// The hotness rule: policy, thresholds, latency distributions.
    #[serde(default)]
    pub rule: RuleReport,
    /// Whether the hint-fault hook sees the kernel's hint faults (None: no hook).
    #[serde(default)]
    pub hint_fault_hook: Option<HookReport>,
    /// NUMA balancing's scanner at rest or not (None: hotpage does not rest it).
    #[serde(default)]
    pub scan_rest: Option<crate::kernel::scan_rest::ScanRestReport>,
    /// The DAMON source (None: off).
    #[serde(default)]
    pub damon: Option<DamonSnapshot>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeRow {
    pub node: u32,
    pub tier: Option<u32>,
    pub top_tier: bool,
    pub cpus: String,
    pub total_bytes: u64,
    pub free_bytes: u64,
    /// Pages with a hot-map record (lower tier only).
    pub tracked_pages: u64,
    /// READY records waiting for the promoter.
    pub ready_pages: u64,
    /// Base pages promoted out of this node (lower tier).
    pub promoted_out_pages: u64,
    /// Base pages promoted into this node (top tier).
    pub promoted_in_pages: u64,
    /// Base pages the kernel's NUMA balancing promoted into this node (top
    /// tier) since hotpage started: its `pgpromote_success`. Not zero when a
    /// node is "free enough" and the kernel promotes beside hotpage.
    #[serde(default)]
    pub kernel_promoted_in_pages: u64,
    /// Pages move_pages refused, by errno (lower tier).
    pub failures: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceRow {
    pub name: String,
    /// Where it is attached (`fentry/numa_migrate_check`, `perf_event/...`).
    pub attached_to: String,
    pub bpf: BpfCounters,
    /// Accesses the hot map recorded from this source (`pghot_recorded_<source>`).
    pub recorded: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HotMapRow {
    pub recorded_accesses: u64,
    pub feed: FeedStats,
    pub hints: u64,
    pub hint_capacity: u64,
    pub hint_evictions: u64,
    pub record_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromoterRow {
    pub node: u32,
    pub target: Option<u32>,
    pub counters: crate::promoter::CounterSnapshot,
    pub latency: crate::promoter::LatencySnapshot,
}

impl From<NodeReport> for PromoterRow {
    fn from(r: NodeReport) -> Self {
        Self { node: r.node, target: r.target, counters: r.counters, latency: r.latency }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessRow {
    pub pid: u32,
    pub comm: String,
    pub promoted_pages: u64,
    /// Ready pages of the process waiting for the promoter.
    pub hot_pages: u64,
}

/// Whatever can build a snapshot on demand (the running daemon's
/// [`SnapshotBuilder`]); the control socket and the metrics export ask it.
pub trait SnapshotSource: Send + Sync + 'static {
    fn snapshot(&self) -> Snapshot;
}

impl Snapshot {
    /// Total base pages promoted, all nodes.
    pub fn promoted_pages(&self) -> u64 {
        self.promoter.iter().map(|p| p.counters.moved).sum()
    }
}
