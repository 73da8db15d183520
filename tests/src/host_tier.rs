//! The host has one NUMA node; tests and benchmarks that follow samples into
//! a hot map here pretend its memory is a lower-tier node 1.

use std::path::Path;

use hotpage::{
    hotmap::{LayoutNode, MemoryLayout},
    sys::topology::{TierTopology, TopologyError},
};
use hotpage_common::PfnRange;

/// A layout with an empty top-tier node 0 and the host's memory as node 1,
/// and the same memory as lower-tier pfn ranges for the BPF filter.
pub fn host_memory_as_lower_tier() -> Result<(MemoryLayout, Vec<PfnRange>), TopologyError> {
    let topo = TierTopology::read(Path::new("/"))?;
    let ranges: Vec<(u64, u64)> = topo.nodes.iter().flat_map(|n| n.pfn_ranges.clone()).collect();
    let layout = MemoryLayout {
        nodes: vec![
            LayoutNode { id: 0, top_tier: true, ranges: Vec::new() },
            LayoutNode { id: 1, top_tier: false, ranges: ranges.clone() },
        ],
    };
    let pfn =
        ranges.iter().map(|&(s, e)| PfnRange { start_pfn: s, end_pfn: e, nid: 1, reserved: 0 }).collect();
    Ok((layout, pfn))
}
