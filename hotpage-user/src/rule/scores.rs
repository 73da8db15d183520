//! Each lower-tier page's latency estimate, one byte per page: written by the
//! rule (the collector thread), read by the promoter's workers to send the
//! hottest pages first.

use std::sync::{
    OnceLock,
    atomic::{AtomicU8, Ordering},
};

use hotpage_common::{PAGES_PER_SECTION, PFN_SECTION_SHIFT};

use super::latency::{class_mid_ms, class_of};
use crate::hotmap::MemoryLayout;

/// A page's state in one byte: in the high five bits the class of its mean
/// latency plus one (0: no latency yet; classes clamp at [`MAX_CLASS`], about
/// 33 s, far beyond any threshold), in bit 2 whether the mean holds two
/// latencies or more, in the low two how many fast faults it took in a row
/// (saturating at 3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageScore(u8);

/// The highest class a score keeps.
pub const MAX_CLASS: u8 = 30;
const HAS_MEAN: u8 = 1 << 2;
const STREAK: u8 = 3;

impl PageScore {
    pub const fn is_empty(self) -> bool {
        self.0 >> 3 == 0
    }

    /// The mean latency class: lower is hotter.
    pub const fn class(self) -> u8 {
        (self.0 >> 3).saturating_sub(1)
    }

    /// Whether the mean holds two latencies or more.
    pub const fn has_mean(self) -> bool {
        self.0 & HAS_MEAN != 0
    }

    /// Fast faults in a row, up to 3.
    pub const fn streak(self) -> u8 {
        self.0 & STREAK
    }

    pub fn with_streak(self, streak: u8) -> Self {
        Self((self.0 & !STREAK) | streak.min(STREAK))
    }

    fn with_class(self, class: u8) -> Self {
        Self(((class.min(MAX_CLASS) + 1) << 3) | (self.0 & 7))
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

/// The scores of every lower-tier page, allocated per 128 MiB section on the
/// first latency it sees (1 byte per page, as the hot map's default record).
pub struct PageScores {
    sections: Vec<OnceLock<Box<[AtomicU8]>>>,
    /// The lower-tier node of each section; `u16::MAX` for none.
    section_node: Vec<u16>,
}

impl PageScores {
    pub fn new(layout: &MemoryLayout) -> Self {
        let lower = || layout.nodes.iter().filter(|n| !n.top_tier);
        let end = lower().flat_map(|n| n.ranges.iter().map(|r| r.1)).max().unwrap_or(0);
        let count = end.div_ceil(PAGES_PER_SECTION) as usize;
        let mut section_node = vec![u16::MAX; count];
        for n in lower() {
            for &(start, end) in &n.ranges {
                for s in (start >> PFN_SECTION_SHIFT)..end.div_ceil(PAGES_PER_SECTION) {
                    let slot = &mut section_node[s as usize];
                    if *slot == u16::MAX {
                        *slot = n.id as u16;
                    }
                }
            }
        }
        Self { sections: (0..count).map(|_| OnceLock::new()).collect(), section_node }
    }

    /// The lower-tier node whose section holds `pfn`.
    pub fn node_of(&self, pfn: u64) -> Option<u32> {
        let n = *self.section_node.get((pfn >> PFN_SECTION_SHIFT) as usize)?;
        (n != u16::MAX).then_some(u32::from(n))
    }

    /// The page's score; None for a page not on a lower-tier node or never seen.
    pub fn get(&self, pfn: u64) -> Option<PageScore> {
        let sec = self.sections.get((pfn >> PFN_SECTION_SHIFT) as usize)?.get()?;
        let s = PageScore(sec[(pfn & (PAGES_PER_SECTION - 1)) as usize].load(Ordering::Relaxed));
        (!s.is_empty()).then_some(s)
    }

    /// Replaces the page's score by `next(score)` and returns the new one;
    /// None for a pfn outside the lower tier.
    pub fn update(&self, pfn: u64, next: impl FnOnce(PageScore) -> PageScore) -> Option<PageScore> {
        let s = (pfn >> PFN_SECTION_SHIFT) as usize;
        if *self.section_node.get(s)? == u16::MAX {
            return None;
        }
        let sec = self.sections[s].get_or_init(|| (0..PAGES_PER_SECTION).map(|_| AtomicU8::new(0)).collect());
        let cell = &sec[(pfn & (PAGES_PER_SECTION - 1)) as usize];
        // Only the collector thread writes: a plain load and store suffice.
        let new = next(PageScore(cell.load(Ordering::Relaxed)));
        cell.store(new.0, Ordering::Relaxed);
        Some(new)
    }

    /// Forgets the page (it left the lower tier): a pfn reused later starts fresh.
    pub fn clear(&self, pfn: u64) {
        if let Some(sec) = self.sections.get((pfn >> PFN_SECTION_SHIFT) as usize).and_then(|s| s.get()) {
            sec[(pfn & (PAGES_PER_SECTION - 1)) as usize].store(0, Ordering::Relaxed);
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
}
