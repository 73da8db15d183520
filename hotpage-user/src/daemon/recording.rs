//! What a recording's header and trailer say about this machine and this
//! run: the topology, each node's memory, the knobs, the sources' counters.

use std::path::Path;

use crate::{
    hotmap::HotMapConfig,
    promoter::{LiveSystem, PromoterConfig, PromoterSystem, RateLimit},
    recording::{Header, NodeMemoryAtStart, PromoterKnobs, SourceCounts},
    report::AttachedSource,
    sys::{clock::monotonic_ns, topology::TierTopology},
};

/// Each attached source's counters now.
pub fn source_counts(sources: &[AttachedSource]) -> Vec<SourceCounts> {
    sources
        .iter()
        .map(|s| SourceCounts { name: s.name.clone(), counters: s.counters.read().unwrap_or_default() })
        .collect()
}

/// Each node's memory and low watermark now, pages, as the promoter reads them.
fn node_memory(root: &Path, topo: &TierTopology) -> Vec<NodeMemoryAtStart> {
    let mut system = LiveSystem::new(root);
    topo.nodes
        .iter()
        .filter_map(|n| {
            let m = system.node_memory(n.id)?;
            Some(NodeMemoryAtStart { node: n.id, total: m.total, free: m.free, low: m.low })
        })
        .collect()
}

/// The settings a run records and a replay reuses.
pub struct RunKnobs<'a> {
    pub hotmap: HotMapConfig,
    pub hint_capacity: usize,
    pub promoter: &'a PromoterConfig,
    pub target_nid: Option<u32>,
    /// The hotness rule's policy; None for a recording of raw events.
    pub policy: Option<crate::rule::Policy>,
}

/// A recording's header for a run on the machine under `root`, starting now.
pub fn header(
    root: &Path,
    topo: &TierTopology,
    kernel: &str,
    knobs: RunKnobs<'_>,
    pid: Option<u32>,
    changes: bool,
    sources: &[AttachedSource],
) -> Header {
    let p = knobs.promoter;
    Header {
        hotpage: env!("CARGO_PKG_VERSION").into(),
        kernel: kernel.into(),
        topology: topo.clone(),
        memory: node_memory(root, topo),
        hotmap: knobs.hotmap,
        hint_capacity: knobs.hint_capacity,
        promoter: PromoterKnobs {
            rate_limit_mbps: match p.rate_limit {
                RateLimit::ObserveOnly => Some(0),
                RateLimit::MbPerSec(n) => Some(n),
                RateLimit::Unlimited => None,
            },
            sleep_ms: p.sleep_ms,
            batch_pages: p.batch_pages,
            max_round_pages: p.max_round_pages,
            headroom_mib: p.headroom_mib,
            target_nid: knobs.target_nid,
        },
        pid,
        changes,
        start_ns: monotonic_ns(),
        sources_at_start: source_counts(sources),
        policy: knobs.policy,
    }
}
