//! Each lower-tier page's latency estimate and evidence, two bytes per page: written by the
//! rule (the collector thread), read by the promoter's workers to send the
//! hottest pages first. The workers in turn say when they moved a process's
//! pages, which stalls it (`stall`).

use std::{
    collections::BTreeMap,
    sync::{
        OnceLock,
        atomic::{AtomicU16, Ordering},
    },
};

use hotpage_common::{PAGES_PER_SECTION, PFN_SECTION_SHIFT};

use super::{
    evidence,
    latency::{class_mid_ms, class_of},
    stall::{MoveSpan, PendingMoves},
};
use crate::hotmap::{MemoryLayout, directory::Directory};

/// A page's state in two bytes: in the high five bits the class of its mean
/// latency plus one (0: no latency yet; classes clamp at [`MAX_CLASS`], about
/// 33 s, far beyond any threshold), then whether the mean holds two
/// latencies or more, two bits of how many fast faults it took in a row
/// (saturating at 3), and in the low byte the evidence its faults carry
/// (`evidence`; 0: none yet).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageScore(u16);

/// The highest class a score keeps.
pub const MAX_CLASS: u8 = 30;
const CLASS_SHIFT: u32 = 11;
const HAS_MEAN: u16 = 1 << 10;
const STREAK_SHIFT: u32 = 8;
const STREAK: u16 = 3 << STREAK_SHIFT;
const EVIDENCE: u16 = 0xff;
/// The evidence byte holds `steps - EVIDENCE_ZERO` so that 0 means "none".
const EVIDENCE_ZERO: i16 = evidence::FLOOR_STEPS - 1;

impl PageScore {
    pub const fn is_empty(self) -> bool {
        self.0 >> CLASS_SHIFT == 0
    }

    /// The mean latency class: lower is hotter.
    pub const fn class(self) -> u8 {
        ((self.0 >> CLASS_SHIFT) as u8).saturating_sub(1)
    }

    /// Whether the mean holds two latencies or more.
    pub const fn has_mean(self) -> bool {
        self.0 & HAS_MEAN != 0
    }

    /// Fast faults in a row, up to 3.
    pub const fn streak(self) -> u8 {
        ((self.0 & STREAK) >> STREAK_SHIFT) as u8
    }

    pub fn with_streak(self, streak: u8) -> Self {
        Self((self.0 & !STREAK) | (u16::from(streak.min(3)) << STREAK_SHIFT))
    }

    /// The page's summed evidence (quarter nats); None before the node's
    /// fault model first judged one of its faults.
    pub fn evidence(self) -> Option<i16> {
        let e = self.0 & EVIDENCE;
        (e != 0).then(|| e as i16 + EVIDENCE_ZERO)
    }

    /// With the evidence set to `steps`, held between the floor and the ceiling.
    pub fn with_evidence(self, steps: i16) -> Self {
        let e = steps.clamp(evidence::FLOOR_STEPS, evidence::CEILING_STEPS) - EVIDENCE_ZERO;
        Self((self.0 & !EVIDENCE) | e as u16)
    }

    fn with_class(self, class: u8) -> Self {
        Self((u16::from(class.min(MAX_CLASS) + 1) << CLASS_SHIFT) | (self.0 & !(0x1f << CLASS_SHIFT)))
    }

    /// This state after one more latency of `ms`: a running mean with
    /// weight 1/2 on the newest (a hot set that moves is followed within a
    /// few scans; the rule's streaks, not the mean, filter luck). The mean is
    /// over milliseconds, not classes: a page accessed at rate λ has
    /// exponential latencies of mean 1/λ, whose long fast tail would drag a
    /// mean of logarithms down; one lucky fast fault of a cold page moves a
    /// linear mean less.
    pub fn after(self, ms: u32) -> Self {
        if self.is_empty() {
            return self.with_class(class_of(ms));
        }
        let mean = (class_mid_ms(self.class()) + f64::from(ms)) / 2.0;
        Self(self.0 | HAS_MEAN).with_class(class_of(mean.clamp(0.0, f64::from(u32::MAX)) as u32))
    }
}

/// One section's scores and the lower-tier node it belongs to.
struct ScoreSection {
    /// `u32::MAX`: no longer lower tier (its memory went away).
    node: u32,
    cells: OnceLock<Box<[AtomicU16]>>,
}

/// The scores of every lower-tier page, allocated per 128 MiB section on the
/// first latency it sees (2 bytes per page).
/// Sections are looked up like the hot map's (a two-level table), so memory
/// that comes online later gets scores too ([`PageScores::update_layout`]).
pub struct PageScores {
    sections: Directory<ScoreSection>,
    /// The promoter's move calls the rule has not taken yet (`stall`).
    moves: PendingMoves,
}

impl PageScores {
    pub fn new(layout: &MemoryLayout) -> Self {
        let scores = Self { sections: Directory::new(), moves: PendingMoves::default() };
        scores.update_layout(layout);
        scores
    }

    /// Follows a new layout (memory hot-plug): sections that became lower
    /// tier get (empty) scores, those that left it are forgotten. Called by
    /// one thread at a time; the rule and the workers read meanwhile.
    pub fn update_layout(&self, layout: &MemoryLayout) {
        let mut wanted: BTreeMap<u64, u32> = BTreeMap::new();
        for n in layout.nodes.iter().filter(|n| !n.top_tier) {
            for &(start, end) in &n.ranges {
                for s in (start >> PFN_SECTION_SHIFT)..end.div_ceil(PAGES_PER_SECTION) {
                    // A section shared by two lower-tier nodes counts as the first's.
                    wanted.entry(s).or_insert(n.id);
                }
            }
        }
        for nr in self.sections.numbers() {
            if !wanted.contains_key(&nr) && self.sections.get(nr).is_some_and(|s| s.node != u32::MAX) {
                self.sections.insert(nr, ScoreSection { node: u32::MAX, cells: OnceLock::new() });
            }
        }
        for (nr, node) in wanted {
            if self.sections.get(nr).is_none_or(|s| s.node != node) {
                self.sections.insert(nr, ScoreSection { node, cells: OnceLock::new() });
            }
        }
    }

    fn section(&self, pfn: u64) -> Option<&ScoreSection> {
        self.sections.get(pfn >> PFN_SECTION_SHIFT).filter(|s| s.node != u32::MAX)
    }

    /// The lower-tier node whose section holds `pfn`.
    pub fn node_of(&self, pfn: u64) -> Option<u32> {
        self.section(pfn).map(|s| s.node)
    }

    /// The page's score; None for a page not on a lower-tier node or never seen.
    pub fn get(&self, pfn: u64) -> Option<PageScore> {
        let cells = self.section(pfn)?.cells.get()?;
        let s = PageScore(cells[(pfn & (PAGES_PER_SECTION - 1)) as usize].load(Ordering::Relaxed));
        (!s.is_empty()).then_some(s)
    }

    /// Replaces the page's score by `next(score)` and returns the new one;
    /// None for a pfn outside the lower tier.
    pub fn update(&self, pfn: u64, next: impl FnOnce(PageScore) -> PageScore) -> Option<PageScore> {
        let sec = self.section(pfn)?;
        let cells = sec.cells.get_or_init(|| (0..PAGES_PER_SECTION).map(|_| AtomicU16::new(0)).collect());
        let cell = &cells[(pfn & (PAGES_PER_SECTION - 1)) as usize];
        // Only the collector thread writes: a plain load and store suffice.
        let new = next(PageScore(cell.load(Ordering::Relaxed)));
        cell.store(new.0, Ordering::Relaxed);
        Some(new)
    }

    /// The promoter moved pages of `pid` from `start_ms` to `end_ms`.
    pub fn note_move(&self, pid: u32, start_ms: u64, end_ms: u64) {
        self.moves.push(MoveSpan { pid, start_ms, end_ms });
    }

    /// The move calls noted since the last take.
    pub fn take_moves(&self) -> Vec<MoveSpan> {
        self.moves.take()
    }

    /// Forgets the page (it left the lower tier): a pfn reused later starts fresh.
    pub fn clear(&self, pfn: u64) {
        if let Some(cells) = self.section(pfn).and_then(|s| s.cells.get()) {
            cells[(pfn & (PAGES_PER_SECTION - 1)) as usize].store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hotmap::LayoutNode;

    const S: u64 = PAGES_PER_SECTION;

    #[test]
    fn the_mean_is_over_milliseconds_and_follows_the_newest() {
        let s = PageScore::default().after(40);
        assert_eq!((s.class(), s.has_mean(), s.is_empty()), (class_of(40), false, false));
        // Class 10 is 31..44 ms, its middle ~38 ms; (38 + 1000) / 2 = 519 ms.
        let s = s.after(1000);
        assert_eq!((s.class(), s.has_mean()), (class_of(519), true));
        let s = s.after(30);
        assert!(s.class() < class_of(519) && s.class() > class_of(30), "a mean, not the last");
        assert_eq!(PageScore::default().after(u32::MAX).class(), MAX_CLASS);
        assert!(!PageScore::default().after(0).is_empty(), "0 ms is a latency");
        let s = s.with_streak(7);
        assert_eq!((s.streak(), s.class()), (3, s.class()), "the streak saturates");
        assert_eq!(s.after(5).streak(), 3, "a new latency keeps the streak (the rule sets it)");
        assert_eq!(s.evidence(), None, "no evidence until the rule gives some");
        let e = s.with_evidence(-100);
        assert_eq!(
            (e.evidence(), e.class(), e.streak(), e.has_mean()),
            (Some(evidence::FLOOR_STEPS), s.class(), 3, true)
        );
        assert_eq!(e.with_evidence(0).evidence(), Some(0), "0 is evidence, not none");
        assert_eq!(
            e.with_evidence(1000).after(900).evidence(),
            Some(40),
            "held at the ceiling, kept by a latency"
        );
    }

    #[test]
    fn only_lower_tier_sections_get_scores() {
        let layout = MemoryLayout {
            nodes: vec![
                LayoutNode { id: 0, top_tier: true, ranges: vec![(0, S)] },
                LayoutNode { id: 1, top_tier: false, ranges: vec![(S, 3 * S)] },
            ],
        };
        let scores = PageScores::new(&layout);
        let first = |s: PageScore| s.after(20);
        assert_eq!(scores.update(5, first), None, "top tier");
        assert_eq!(scores.update(3 * S, first), None, "beyond the lower tier");
        assert_eq!(scores.get(S + 1), None);
        let s = scores.update(S + 1, first).unwrap();
        assert_eq!((s.class(), s.has_mean()), (class_of(20), false));
        assert_eq!(scores.get(S + 1), Some(s));
        assert_eq!((scores.node_of(S + 1), scores.node_of(1)), (Some(1), None));
        scores.clear(S + 1);
        assert_eq!(scores.get(S + 1), None);
    }

    #[test]
    fn memory_that_comes_online_gets_scores_and_memory_that_goes_loses_them() {
        let node1 = |ranges: Vec<(u64, u64)>| MemoryLayout {
            nodes: vec![
                LayoutNode { id: 0, top_tier: true, ranges: vec![(0, S)] },
                LayoutNode { id: 1, top_tier: false, ranges },
            ],
        };
        let scores = PageScores::new(&node1(vec![(S, 2 * S)]));
        let first = |s: PageScore| s.after(20);
        assert_eq!(scores.update(40 * S + 3, first), None, "not lower tier yet");
        assert!(scores.update(S + 3, first).is_some());
        // A DIMM far above comes online on node 1.
        scores.update_layout(&node1(vec![(S, 2 * S), (40 * S, 41 * S)]));
        assert!(scores.update(40 * S + 3, first).is_some());
        assert_eq!(scores.node_of(40 * S + 3), Some(1));
        assert!(scores.get(S + 3).is_some(), "the old memory keeps its scores");
        // And goes away again.
        scores.update_layout(&node1(vec![(S, 2 * S)]));
        assert_eq!((scores.get(40 * S + 3), scores.node_of(40 * S + 3)), (None, None));
        assert_eq!(scores.update(40 * S + 3, first), None);
    }
}
