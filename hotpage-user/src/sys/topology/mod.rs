//! NUMA nodes, memory tiers and the pfn ranges of each node, read from sysfs
//! (and `/proc/zoneinfo`) under a root path.
//!
//! "Top tier" follows the kernel's `node_is_toptier()`: tiers are ordered by
//! abstract distance (their sysfs number), the fastest tier that holds a node
//! with CPUs and every faster tier are top tier, and a node without a tier is
//! top tier.

mod node_list;
mod node_ranges;

use std::path::{Path, PathBuf};

use hotpage_common::{MAX_RANGES, PAGE_SHIFT, PfnRange};
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use node_list::{ListError, parse_list};
pub use node_ranges::{NodeRange, NodeRanges};

use crate::{
    sys::sysfs::{SysfsError, numbered_entries, read_hex, read_text},
    sys::zoneinfo::read_zoneinfo,
};

const NODE_DIR: &str = "sys/devices/system/node";
const MEMORY_DIR: &str = "sys/devices/system/memory";
const TIERING_DIR: &str = "sys/devices/virtual/memory_tiering";

#[derive(Debug, Error)]
pub enum TopologyError {
    #[error(transparent)]
    Sysfs(#[from] SysfsError),
    #[error("{path}: {source}")]
    List { path: PathBuf, source: ListError },
    #[error("no NUMA nodes under {0}: the kernel needs CONFIG_NUMA")]
    NoNodes(PathBuf),
    #[error(
        "this kernel has no memory tiers ({0} is missing): hotpage needs Linux 6.1 or later with CONFIG_NUMA"
    )]
    NoTiering(PathBuf),
    #[error(
        "no lower memory tier: every node ({nodes}) is top tier; hotpage needs a slower, CPU-less node \
         (CXL, or memory that HMAT places in a lower tier). Without one, try `cargo xtask vm demo` (emulated CXL box)"
    )]
    NoLowerTier { nodes: String },
    #[error(
        "lower-tier memory is split into {0} pfn ranges, more than the {MAX_RANGES} the BPF filter holds"
    )]
    TooManyRanges(usize),
}

/// A memory tier (`/sys/devices/virtual/memory_tiering/memory_tierN`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryTier {
    /// The sysfs number: abstract distance >> 7, so a lower number is faster.
    pub id: u32,
    pub nodes: Vec<u32>,
}

/// One online NUMA node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumaNode {
    pub id: u32,
    pub cpus: Vec<u32>,
    /// Memory tier id, if the node has one.
    pub tier: Option<u32>,
    /// `node_is_toptier()`.
    pub top_tier: bool,
    /// `(node, distance)` for every online node, from the ACPI SLIT.
    pub distances: Vec<(u32, u32)>,
    /// Online memory as merged `[start, end)` pfn ranges, sorted.
    pub pfn_ranges: Vec<(u64, u64)>,
}

impl NumaNode {
    pub fn pages(&self) -> u64 {
        self.pfn_ranges.iter().map(|(s, e)| e - s).sum()
    }

    pub fn distance_to(&self, node: u32) -> Option<u32> {
        self.distances.iter().find(|(n, _)| *n == node).map(|(_, d)| *d)
    }
}

/// The machine's nodes and tiers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierTopology {
    /// Online nodes, sorted by id.
    pub nodes: Vec<NumaNode>,
    /// Memory tiers, fastest first; empty without `memory_tiering`.
    pub tiers: Vec<MemoryTier>,
    /// Whether the kernel has memory tiers at all.
    pub tiering: bool,
    /// Memory block size in bytes.
    pub block_size: u64,
}

impl TierTopology {
    /// Reads the topology under `root` (`/` on a live system).
    pub fn read(root: &Path) -> Result<Self, TopologyError> {
        let node_dir = root.join(NODE_DIR);
        let online = read_list(&node_dir.join("online"))?;
        if online.is_empty() {
            return Err(TopologyError::NoNodes(node_dir));
        }
        let has_cpu = read_list(&node_dir.join("has_cpu")).or_else(|e| match e {
            TopologyError::Sysfs(ref s) if s.is_not_found() => Ok(Vec::new()),
            e => Err(e),
        })?;

        let tiering_dir = root.join(TIERING_DIR);
        let tiering = tiering_dir.is_dir();
        let mut tiers = Vec::new();
        if tiering {
            for id in numbered_entries(&tiering_dir, "memory_tier")? {
                let nodes = read_list(&tiering_dir.join(format!("memory_tier{id}/nodelist")))?;
                tiers.push(MemoryTier { id, nodes });
            }
        }

        let block_size = read_hex(&root.join(MEMORY_DIR).join("block_size_bytes"))?;
        if block_size == 0 || block_size % (1 << PAGE_SHIFT) != 0 {
            return Err(SysfsError::parse(
                &root.join(MEMORY_DIR).join("block_size_bytes"),
                format!("block size {block_size:#x} is not a page multiple"),
            )
            .into());
        }
        let pages_per_block = block_size >> PAGE_SHIFT;

        // Zone spans clip memory blocks that nodes share, or that run past a node's end.
        let zones = match read_zoneinfo(root) {
            Ok(z) => z,
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => return Err(e.into()),
        };

        // The fastest tier holding a node with CPUs bounds the top tier.
        let top_tier_max = tiers.iter().find(|t| t.nodes.iter().any(|n| has_cpu.contains(n))).map(|t| t.id);

        let mut nodes = Vec::with_capacity(online.len());
        for &id in &online {
            let dir = node_dir.join(format!("node{id}"));
            let cpus = read_list(&dir.join("cpulist"))?;
            let distances = match read_text(&dir.join("distance")) {
                Ok(text) => parse_distances(&dir.join("distance"), &text, &online)?,
                Err(e) if e.is_not_found() => Vec::new(),
                Err(e) => return Err(e.into()),
            };
            let tier = tiers.iter().find(|t| t.nodes.contains(&id)).map(|t| t.id);
            let top_tier = match (tier, top_tier_max) {
                (Some(t), Some(max)) => t <= max,
                _ => true,
            };

            let mut ranges = Vec::new();
            for block in numbered_entries(&dir, "memory")? {
                let state = root.join(MEMORY_DIR).join(format!("memory{block}/state"));
                match read_text(&state) {
                    Ok(s) if s.trim() == "online" => {}
                    Ok(_) => continue,
                    // Some kernels hide state for boot memory; the link alone says online.
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
                let start = u64::from(block) * pages_per_block;
                ranges.push((start, start + pages_per_block));
            }
            let spans: Vec<(u64, u64)> =
                zones.iter().filter(|z| z.node == id).filter_map(|z| z.span()).collect();
            let pfn_ranges = clip(merge(ranges), &merge(spans));
            nodes.push(NumaNode { id, cpus, tier, top_tier, distances, pfn_ranges });
        }

        Ok(Self { nodes, tiers, tiering, block_size })
    }

    pub fn node(&self, id: u32) -> Option<&NumaNode> {
        self.nodes.iter().find(|n| n.id == id)
    }

    pub fn lower_tier_nodes(&self) -> impl Iterator<Item = &NumaNode> {
        self.nodes.iter().filter(|n| !n.top_tier && !n.pfn_ranges.is_empty())
    }

    pub fn top_tier_nodes(&self) -> impl Iterator<Item = &NumaNode> {
        self.nodes.iter().filter(|n| n.top_tier)
    }

    /// The node holding `pfn`, if any online node does.
    pub fn node_of_pfn(&self, pfn: u64) -> Option<u32> {
        self.node_ranges().node_of(pfn)
    }

    /// Every online node's pfn ranges, with its tier.
    pub fn node_ranges(&self) -> NodeRanges {
        NodeRanges::new(self.nodes.iter().flat_map(|n| {
            n.pfn_ranges.iter().map(move |&(start, end)| NodeRange {
                start,
                end,
                nid: n.id,
                top_tier: n.top_tier,
            })
        }))
    }

    /// The top-tier node with memory nearest to `from` (SLIT distance, then
    /// lowest id), where a lower-tier node's pages should be promoted.
    pub fn nearest_top_tier(&self, from: u32) -> Option<u32> {
        let src = self.node(from)?;
        self.top_tier_nodes()
            .filter(|n| !n.pfn_ranges.is_empty())
            .min_by_key(|n| (src.distance_to(n.id).unwrap_or(u32::MAX), n.id))
            .map(|n| n.id)
    }

    /// Fails with an operator-facing error unless there is lower-tier memory.
    pub fn require_lower_tier(&self, root: &Path) -> Result<(), TopologyError> {
        if !self.tiering {
            return Err(TopologyError::NoTiering(root.join(TIERING_DIR)));
        }
        if self.lower_tier_nodes().next().is_none() {
            let nodes = self
                .nodes
                .iter()
                .map(|n| match n.tier {
                    Some(t) => format!("node{} in memory_tier{t}", n.id),
                    None => format!("node{} without tier", n.id),
                })
                .collect::<Vec<_>>()
                .join(", ");
            return Err(TopologyError::NoLowerTier { nodes });
        }
        Ok(())
    }

    /// Lower-tier memory as the BPF filter wants it: sorted, merged per node.
    pub fn lower_tier_ranges(&self) -> Result<Vec<PfnRange>, TopologyError> {
        let mut out: Vec<PfnRange> = self
            .lower_tier_nodes()
            .flat_map(|n| {
                n.pfn_ranges.iter().map(move |&(start_pfn, end_pfn)| PfnRange {
                    start_pfn,
                    end_pfn,
                    nid: n.id as i32,
                    reserved: 0,
                })
            })
            .collect();
        out.sort_by_key(|r| r.start_pfn);
        if out.len() > MAX_RANGES {
            return Err(TopologyError::TooManyRanges(out.len()));
        }
        Ok(out)
    }
}

fn read_list(path: &Path) -> Result<Vec<u32>, TopologyError> {
    let text = read_text(path)?;
    parse_list(&text).map_err(|source| TopologyError::List { path: path.to_owned(), source })
}

/// The `distance` file lists distances to the online nodes in id order.
fn parse_distances(path: &Path, text: &str, online: &[u32]) -> Result<Vec<(u32, u32)>, TopologyError> {
    let values: Vec<u32> = text
        .split_whitespace()
        .map(|w| w.parse().map_err(|_| SysfsError::parse(path, format!("bad distance {w:?}"))))
        .collect::<Result<_, _>>()?;
    if values.len() != online.len() {
        return Err(SysfsError::parse(
            path,
            format!("{} distances for {} online nodes", values.len(), online.len()),
        )
        .into());
    }
    Ok(online.iter().copied().zip(values).collect())
}

/// Sorts and merges touching or overlapping `[start, end)` ranges.
fn merge(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Intersects `ranges` with `spans` (both merged). No spans means no clipping.
fn clip(ranges: Vec<(u64, u64)>, spans: &[(u64, u64)]) -> Vec<(u64, u64)> {
    if spans.is_empty() {
        return ranges;
    }
    let mut out = Vec::new();
    for (s, e) in ranges {
        for &(zs, ze) in spans {
            let (a, b) = (s.max(zs), e.min(ze));
            if a < b {
                out.push((a, b));
            }
        }
    }
    merge(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::*;

    #[test]
    fn cxl_box_has_node1_in_a_lower_tier() {
        let topo = TierTopology::read(&cxl_box()).unwrap();
        assert!(topo.tiering);
        assert_eq!(topo.block_size, 128 << 20);
        assert_eq!(
            topo.tiers,
            vec![MemoryTier { id: 4, nodes: vec![0] }, MemoryTier { id: 56, nodes: vec![1] }]
        );
        let n0 = topo.node(0).unwrap();
        let n1 = topo.node(1).unwrap();
        assert!(n0.top_tier && !n1.top_tier);
        assert_eq!(n0.cpus, vec![0, 1]);
        assert!(n1.cpus.is_empty());
        assert_eq!(n1.distances, vec![(0, 20), (1, 10)]);
        // Node 0: blocks 0-7 clipped by zone spans (DMA from pfn 1, DMA32 to 262144).
        assert_eq!(n0.pfn_ranges, vec![(1, 262144)]);
        // Node 1: blocks 8-15, clipped to its DMA32 span that stops short of 2 GiB.
        assert_eq!(n1.pfn_ranges, vec![(262144, 262144 + 262111)]);
        assert_eq!(topo.lower_tier_nodes().map(|n| n.id).collect::<Vec<_>>(), vec![1]);
        assert_eq!(topo.node_of_pfn(300_000), Some(1));
        assert_eq!(topo.node_of_pfn(0), None);
        assert_eq!(topo.nearest_top_tier(1), Some(0));
        topo.require_lower_tier(&cxl_box()).unwrap();
        let ranges = topo.lower_tier_ranges().unwrap();
        assert_eq!(ranges, vec![PfnRange { start_pfn: 262144, end_pfn: 524255, nid: 1, reserved: 0 }]);
    }

    #[test]
    fn single_node_machine_has_no_lower_tier() {
        let topo = TierTopology::read(&single_node()).unwrap();
        assert!(topo.tiering);
        assert_eq!(topo.nodes.len(), 1);
        assert!(topo.nodes[0].top_tier);
        assert!(topo.nodes[0].pages() > 0);
        let err = topo.require_lower_tier(&single_node()).unwrap_err();
        assert!(matches!(err, TopologyError::NoLowerTier { .. }));
        let msg = err.to_string();
        assert!(msg.contains("node0 in memory_tier4"), "{msg}");
        assert!(msg.contains("cargo xtask vm demo"), "{msg}");
        assert!(topo.lower_tier_ranges().unwrap().is_empty());
    }

    #[test]
    fn two_sockets_and_a_cxl_node() {
        let topo = TierTopology::read(&two_socket_cxl()).unwrap();
        let top: Vec<u32> = topo.top_tier_nodes().map(|n| n.id).collect();
        assert_eq!(top, vec![0, 1]);
        let cxl = topo.node(2).unwrap();
        assert_eq!(cxl.tier, Some(22));
        assert!(!cxl.top_tier);
        // 256 GiB .. 288 GiB, far from pfn 0.
        assert_eq!(cxl.pfn_ranges, vec![(256 << 18, 288 << 18)]);
        // Node 2 is nearer to socket 1 (14) than socket 0 (24).
        assert_eq!(topo.nearest_top_tier(2), Some(1));
        assert_eq!(topo.node(0).unwrap().cpus.len(), 32);
        assert_eq!(topo.lower_tier_ranges().unwrap().len(), 1);
    }

    #[test]
    fn kernel_without_memory_tiering() {
        let topo = TierTopology::read(&no_tiering()).unwrap();
        assert!(!topo.tiering);
        assert!(topo.nodes.iter().all(|n| n.top_tier && n.tier.is_none()));
        let err = topo.require_lower_tier(&no_tiering()).unwrap_err();
        assert!(err.to_string().contains("needs Linux 6.1 or later"), "{err}");
    }

    #[test]
    fn missing_root_names_the_file() {
        let err = TierTopology::read(Path::new("/nonexistent-root")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-root/sys/devices/system/node/online"), "{err}");
    }

    #[test]
    fn merge_and_clip() {
        assert_eq!(merge(vec![(5, 8), (0, 5), (10, 12)]), vec![(0, 8), (10, 12)]);
        assert_eq!(clip(vec![(0, 100)], &[(10, 20), (50, 200)]), vec![(10, 20), (50, 100)]);
        assert_eq!(clip(vec![(0, 100)], &[]), vec![(0, 100)]);
    }
}
