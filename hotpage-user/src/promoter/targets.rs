//! Where each lower-tier node's pages go: the promotion target of a page,
//! and which nodes are top tier.

use std::collections::HashMap;

use crate::{
    hotmap::{ReadyPage, RecordMode},
    sys::topology::{NodeRanges, TierTopology},
};

/// Where pages of each lower-tier node go, and which nodes are top tier.
#[derive(Clone, Debug, Default)]
pub struct Targets {
    pub(super) nearest: HashMap<u32, u32>,
    pub(super) top_tier: Vec<u32>,
    pub(super) ranges: NodeRanges,
    pub(super) precise: bool,
    /// The operator's `target_nid`, when given.
    pub(super) target_nid: Option<u32>,
}

impl Targets {
    /// `target_nid`: the operator's promotion target (`vm.pghot_target_nid`),
    /// when set; otherwise each lower-tier node promotes to its nearest
    /// top-tier node.
    pub fn new(topo: &TierTopology, mode: RecordMode, target_nid: Option<u32>) -> Self {
        Self {
            target_nid,
            nearest: topo
                .lower_tier_nodes()
                .filter_map(|n| Some((n.id, topo.nearest_top_tier(n.id)?)))
                .collect(),
            top_tier: topo.top_tier_nodes().filter(|n| !n.pfn_ranges.is_empty()).map(|n| n.id).collect(),
            ranges: topo.node_ranges(),
            precise: mode == RecordMode::Precise,
        }
    }

    /// In precise mode the recorded accessing node when it is top tier (as
    /// pghot); else the operator's `target_nid` (pghot's default-mode target);
    /// else the nearest top-tier node of the page's node.
    pub fn pick(&self, page: &ReadyPage) -> Option<u32> {
        if self.precise && self.is_top_tier(page.fields.nid) {
            return Some(page.fields.nid);
        }
        self.default_target(page.node)
    }

    /// Where a page of `lower` goes without a recorded node.
    pub fn default_target(&self, lower: u32) -> Option<u32> {
        self.target_nid.filter(|&t| self.is_top_tier(t)).or_else(|| self.nearest(lower))
    }

    /// Every node pages of `lower` may be promoted to.
    pub fn possible(&self, lower: u32) -> Vec<u32> {
        if self.precise {
            return self.top_tier.clone();
        }
        self.default_target(lower).into_iter().collect()
    }

    pub fn nearest(&self, lower: u32) -> Option<u32> {
        self.nearest.get(&lower).copied()
    }

    pub fn is_top_tier(&self, nid: u32) -> bool {
        self.top_tier.contains(&nid)
    }

    pub fn node_of_pfn(&self, pfn: u64) -> Option<u32> {
        self.ranges.node_of(pfn)
    }
}
