//! Where memory is, in the shape the hot map needs: every online node's pfn
//! ranges and whether it is top tier, cut into 128 MiB sections.

use std::collections::BTreeMap;

use hotpage_common::PFN_SECTION_SHIFT;

use std::sync::{Arc, atomic::Ordering};

use super::section::Section;
use crate::sys::topology::{NodeRange, NodeRanges, TierTopology};

/// One node's online memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutNode {
    pub id: u32,
    pub top_tier: bool,
    /// Sorted, merged `[start, end)` pfn ranges.
    pub ranges: Vec<(u64, u64)>,
}

/// All online memory, by node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryLayout {
    pub nodes: Vec<LayoutNode>,
}

/// The part of a section that belongs to one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub nid: u32,
    pub top_tier: bool,
    pub start: u64,
    pub end: u64,
}

impl From<&TierTopology> for MemoryLayout {
    fn from(t: &TierTopology) -> Self {
        Self {
            nodes: t
                .nodes
                .iter()
                .map(|n| LayoutNode { id: n.id, top_tier: n.top_tier, ranges: n.pfn_ranges.clone() })
                .collect(),
        }
    }
}

impl MemoryLayout {
    /// Every section that holds lower-tier memory, with the segments of every
    /// node (top tier too) inside it, sorted by pfn. A section split between
    /// two nodes lists both; the kernel would give it a record array only when
    /// its first pfn is lower tier, hotpage gives it one whenever any part is.
    pub fn lower_tier_sections(&self) -> BTreeMap<u64, Vec<Segment>> {
        let mut out: BTreeMap<u64, Vec<Segment>> = BTreeMap::new();
        for n in self.nodes.iter().filter(|n| !n.top_tier) {
            for &(s, e) in &n.ranges {
                let mut nr = s >> PFN_SECTION_SHIFT;
                while (nr << PFN_SECTION_SHIFT) < e {
                    out.entry(nr).or_default();
                    nr += 1;
                }
            }
        }
        for (&nr, segs) in out.iter_mut() {
            let (lo, hi) = (nr << PFN_SECTION_SHIFT, (nr + 1) << PFN_SECTION_SHIFT);
            for n in &self.nodes {
                for &(s, e) in &n.ranges {
                    let (a, b) = (s.max(lo), e.min(hi));
                    if a < b {
                        segs.push(Segment { nid: n.id, top_tier: n.top_tier, start: a, end: b });
                    }
                }
            }
            segs.sort_by_key(|s| s.start);
        }
        out
    }

    /// Every node's ranges.
    pub fn all_ranges(&self) -> NodeRanges {
        NodeRanges::new(self.nodes.iter().flat_map(|n| {
            n.ranges.iter().map(move |&(start, end)| NodeRange {
                start,
                end,
                nid: n.id,
                top_tier: n.top_tier,
            })
        }))
    }
}

impl super::HotMap {
    /// Empties a section's records (swapped out, so a walk taking one at the
    /// same time is not counted twice) and uncounts its READY ones.
    fn clear_section(&self, sec: &Section) {
        let ready_bit = u64::from(self.config.mode.ready_bit());
        for seg in sec.segments.iter().filter(|s| !s.top_tier) {
            let mut ready = 0i64;
            for pfn in seg.start..seg.end {
                let slot = self.slot(sec, pfn);
                // Each record once: swap its bits out of the word.
                let mut cur = slot.word.load(Ordering::Acquire);
                loop {
                    let rec = (cur >> slot.shift) & slot.mask;
                    if rec == 0 {
                        break;
                    }
                    match slot.word.compare_exchange_weak(
                        cur,
                        cur & !(slot.mask << slot.shift),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => {
                            ready += i64::from(rec & ready_bit != 0);
                            break;
                        }
                        Err(actual) => cur = actual,
                    }
                }
            }
            self.count_ready(seg.nid, -ready);
        }
        // Records outside the segments (holes) were never set; clear all to be sure.
        for w in sec.words.iter() {
            w.store(0, Ordering::Relaxed);
        }
    }

    /// Applies a (new) layout: record arrays for newly online lower-tier
    /// sections, offlined sections cleared and skipped. As on memory hotplug.
    pub fn update_layout(&self, layout: &MemoryLayout) {
        let Ok(_g) = self.layout_lock.lock() else { return };
        for n in &self.nodes {
            n.online.store(false, Ordering::Relaxed);
        }
        let mut low = 0u64;
        for n in &layout.nodes {
            if let Some(state) = self.nodes.get(n.id as usize) {
                state.online.store(true, Ordering::Relaxed);
                state.top_tier.store(n.top_tier, Ordering::Relaxed);
            }
            if n.id < 64 {
                low |= 1 << n.id;
            }
        }
        self.online_low.store(low, Ordering::Relaxed);
        let wanted = layout.lower_tier_sections();
        // Sections that went away: offline and empty.
        for nr in self.dir.numbers() {
            if !wanted.contains_key(&nr)
                && let Some(sec) = self.dir.get(nr)
            {
                sec.online.store(false, Ordering::Release);
                self.clear_section(sec);
                sec.hot.store(0, Ordering::Relaxed);
            }
        }
        let mut per_node: BTreeMap<u32, Vec<u64>> = Default::default();
        for (nr, segments) in wanted {
            match self.dir.get(nr) {
                Some(sec) if sec.segments == segments => sec.online.store(true, Ordering::Release),
                // New, or its nodes changed: a fresh array (the old one stays
                // until drop, its READY records no longer counted).
                old => {
                    if let Some(old) = old {
                        old.online.store(false, Ordering::Release);
                        self.clear_section(old);
                    }
                    self.dir.insert(nr, Section::new(nr, segments.clone(), self.config.mode))
                }
            }
            for s in segments.iter().filter(|s| !s.top_tier) {
                let v = per_node.entry(s.nid).or_default();
                if v.last() != Some(&nr) {
                    v.push(nr);
                }
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            let list = per_node.remove(&(i as u32)).unwrap_or_default();
            if let Ok(mut s) = n.sections.lock() {
                *s = Arc::new(list);
            }
        }
        if let Ok(mut r) = self.ranges.lock() {
            *r = Arc::new(layout.all_ranges());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotpage_common::PAGES_PER_SECTION as S;

    #[test]
    fn sections_of_the_box() {
        let topo = TierTopology::read(&crate::test_fixtures::cxl_box()).unwrap();
        let layout = MemoryLayout::from(&topo);
        let secs = layout.lower_tier_sections();
        // Node 1: pfn 262144..524255, i.e. sections 8..=15, the last one short.
        assert_eq!(secs.keys().copied().collect::<Vec<_>>(), (8..16).collect::<Vec<_>>());
        assert_eq!(secs[&15], vec![Segment { nid: 1, top_tier: false, start: 15 * S, end: 524255 }]);
    }

    #[test]
    fn a_section_shared_with_a_top_tier_node_lists_both() {
        let layout = MemoryLayout {
            nodes: vec![
                LayoutNode { id: 0, top_tier: true, ranges: vec![(0, 3 * S + 100)] },
                LayoutNode { id: 1, top_tier: false, ranges: vec![(3 * S + 100, 5 * S)] },
            ],
        };
        let secs = layout.lower_tier_sections();
        assert_eq!(secs.len(), 2);
        assert_eq!(
            secs[&3],
            vec![
                Segment { nid: 0, top_tier: true, start: 3 * S, end: 3 * S + 100 },
                Segment { nid: 1, top_tier: false, start: 3 * S + 100, end: 4 * S },
            ]
        );
    }
}
