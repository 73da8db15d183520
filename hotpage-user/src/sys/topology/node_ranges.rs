//! Which node a pfn is on: sorted, non-overlapping pfn ranges with their
//! node and tier, searched by bisection. The one lookup the hot map, the
//! promoter, the address resolver and the topology share.

use hotpage_common::PfnRange;

/// One node's `[start, end)` pfn range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeRange {
    pub start: u64,
    pub end: u64,
    pub nid: u32,
    pub top_tier: bool,
}

/// Pfn ranges of nodes, sorted by start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeRanges(Vec<NodeRange>);

impl NodeRanges {
    pub fn new(ranges: impl IntoIterator<Item = NodeRange>) -> Self {
        let mut v: Vec<NodeRange> = ranges.into_iter().collect();
        v.sort_unstable_by_key(|r| r.start);
        Self(v)
    }

    /// The lower-tier ranges as the BPF filter holds them.
    pub fn lower_tier(ranges: &[PfnRange]) -> Self {
        Self::new(ranges.iter().map(|r| NodeRange {
            start: r.start_pfn,
            end: r.end_pfn,
            nid: r.nid as u32,
            top_tier: false,
        }))
    }

    /// The range holding `pfn`, if any.
    #[inline]
    pub fn find(&self, pfn: u64) -> Option<&NodeRange> {
        let i = self.0.partition_point(|r| r.start <= pfn);
        let r = self.0.get(i.checked_sub(1)?)?;
        (pfn < r.end).then_some(r)
    }

    /// The node holding `pfn`, if any.
    pub fn node_of(&self, pfn: u64) -> Option<u32> {
        self.find(pfn).map(|r| r.nid)
    }

    pub fn iter(&self) -> impl Iterator<Item = &NodeRange> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64, nid: u32) -> NodeRange {
        NodeRange { start, end, nid, top_tier: nid == 0 }
    }

    #[test]
    fn finds_the_range_of_a_pfn_and_nothing_in_holes() {
        let m = NodeRanges::new([r(300, 400, 2), r(100, 200, 1), r(0, 50, 0)]);
        assert_eq!(m.node_of(0), Some(0));
        assert_eq!(m.node_of(100), Some(1));
        assert_eq!(m.node_of(199), Some(1));
        assert_eq!(m.node_of(200), None, "the end is exclusive");
        assert_eq!(m.node_of(75), None, "a hole");
        assert_eq!(m.find(350), Some(&r(300, 400, 2)));
        assert_eq!(m.node_of(1 << 40), None);
        assert_eq!(NodeRanges::default().node_of(5), None);
    }

    #[test]
    fn lower_tier_ranges_from_the_bpf_filter() {
        let m = NodeRanges::lower_tier(&[PfnRange { start_pfn: 10, end_pfn: 20, nid: 3, reserved: 0 }]);
        assert_eq!(m.find(15), Some(&NodeRange { start: 10, end: 20, nid: 3, top_tier: false }));
    }
}
