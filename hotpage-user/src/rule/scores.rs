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

/// A page's state: the class of its running mean latency in the high five
/// bits (up to class 31, about 46 s: far beyond any threshold), whether its
/// last fault was fast in bit 2, how many latencies it has seen (saturating
/// at 3) in the low two.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageScore(u8);

/// The highest class a score keeps.
pub const MAX_CLASS: u8 = 31;
const ARMED: u8 = 1 << 2;

impl PageScore {
    pub fn new(class: u8, seen: u8) -> Self {
        Self((class.min(MAX_CLASS) << 3) | seen.min(3))
    }

    /// The mean latency class: lower is hotter.
    pub const fn class(self) -> u8 {
        self.0 >> 3
    }

    /// Whether the page's last fault was judged fast.
    pub const fn armed(self) -> bool {
        self.0 & ARMED != 0
    }

    pub const fn with_armed(self, armed: bool) -> Self {
        Self(if armed { self.0 | ARMED } else { self.0 & !ARMED })
    }

    /// Latencies seen, up to 3.
    pub const fn seen(self) -> u8 {
        self.0 & 3
    }

    /// This state after one more latency of `ms`: the mean of the first four,
    /// then a running mean with weight 1/4 on the newest. The mean is over
    /// milliseconds, not classes: a page accessed at rate λ has exponential
    /// latencies of mean 1/λ, whose long fast tail drags a mean of logarithms
    /// down, while one lucky fast fault of a cold page moves a linear mean of
    /// several little.
    pub fn after(self, ms: u32) -> Self {
        let seen = self.seen();
        if seen == 0 {
            return Self::new(class_of(ms), 1);
        }
        let old = class_mid_ms(self.class());
        let mean = old + (f64::from(ms) - old) / f64::from(seen + 1);
        Self::new(class_of(mean.clamp(0.0, f64::from(u32::MAX)) as u32), seen + 1).with_armed(self.armed())
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
        (s.seen() > 0).then_some(s)
    }

    /// Folds one latency into the page's score and returns the new one; None
    /// for a pfn outside the lower tier.
    pub fn update(&self, pfn: u64, ms: u32) -> Option<PageScore> {
        let s = (pfn >> PFN_SECTION_SHIFT) as usize;
        if *self.section_node.get(s)? == u16::MAX {
            return None;
        }
        let sec = self.sections[s].get_or_init(|| (0..PAGES_PER_SECTION).map(|_| AtomicU8::new(0)).collect());
        let cell = &sec[(pfn & (PAGES_PER_SECTION - 1)) as usize];
        // Only the collector thread writes: a plain load and store suffice.
        let new = PageScore(cell.load(Ordering::Relaxed)).after(ms);
        cell.store(new.0, Ordering::Relaxed);
        Some(new)
    }

    /// Records whether the page's latest fault was fast.
    pub fn set_armed(&self, pfn: u64, armed: bool) {
        if let Some(sec) = self.sections.get((pfn >> PFN_SECTION_SHIFT) as usize).and_then(|s| s.get()) {
            let cell = &sec[(pfn & (PAGES_PER_SECTION - 1)) as usize];
            cell.store(PageScore(cell.load(Ordering::Relaxed)).with_armed(armed).0, Ordering::Relaxed);
        }
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
        assert_eq!((s.class(), s.seen()), (class_of(40), 1));
        // Class 10 is 31..44 ms, its middle ~38 ms; (38 + 1000) / 2 = 519 ms.
        let s = s.after(1000);
        assert_eq!((s.class(), s.seen()), (class_of(519), 2));
        let s = s.after(30);
        assert_eq!(s.seen(), 3);
        assert!(s.class() < class_of(519) && s.class() > class_of(30), "a mean, not the last");
        let s = s.after(30);
        assert_eq!(s.seen(), 3, "the count saturates");
        assert_eq!(PageScore::default().after(u32::MAX).class(), MAX_CLASS);
        let armed = s.with_armed(true);
        assert!(armed.armed() && armed.after(5).armed(), "a new latency keeps the flag");
        assert_eq!((armed.class(), armed.seen()), (s.class(), s.seen()));
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
        assert_eq!(scores.update(5, 20), None, "top tier");
        assert_eq!(scores.update(3 * S, 20), None, "beyond the lower tier");
        assert_eq!(scores.get(S + 1), None);
        assert_eq!(scores.update(S + 1, 20), Some(PageScore::new(8, 1)));
        assert_eq!(scores.get(S + 1), Some(PageScore::new(8, 1)));
        assert_eq!((scores.node_of(S + 1), scores.node_of(1)), (Some(1), None));
        scores.clear(S + 1);
        assert_eq!(scores.get(S + 1), None);
    }
}
