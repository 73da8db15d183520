//! One 128 MiB section's records and flags, and where a pfn's record is in
//! its packed words.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64};

use hotpage_common::{PAGES_PER_SECTION, PFN_SECTION_SHIFT};

use super::{RecordMode, Segment};

/// One 128 MiB section's records and flags.
pub(super) struct Section {
    pub(super) nr: u64,
    /// The lower-tier segment checked first (the whole section, usually).
    pub(super) first: Segment,
    pub(super) segments: Vec<Segment>,
    /// Distinct lower-tier nodes of the section; hot bit `i` belongs to `owners[i]`.
    pub(super) owners: Vec<u32>,
    /// Bit `i`: `owners[i]` has READY pages here not yet walked (PGHOT_SECTION_HOT).
    pub(super) hot: AtomicU8,
    pub(super) online: AtomicBool,
    /// Records packed into words: 8 per word (default) or 2 (precise).
    pub(super) words: Box<[AtomicU64]>,
}

impl Section {
    pub(super) fn new(nr: u64, segments: Vec<Segment>, mode: RecordMode) -> Self {
        let mut owners: Vec<u32> = segments.iter().filter(|s| !s.top_tier).map(|s| s.nid).collect();
        owners.dedup();
        let words = PAGES_PER_SECTION as usize * mode.record_bytes() / 8;
        let first = segments.iter().find(|s| !s.top_tier).or(segments.first()).copied().unwrap_or(Segment {
            nid: 0,
            top_tier: true,
            start: 0,
            end: 0,
        });
        Self {
            nr,
            first,
            segments,
            owners,
            hot: AtomicU8::new(0),
            online: AtomicBool::new(true),
            words: (0..words).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    #[inline]
    pub(super) fn segment_of(&self, pfn: u64) -> Option<&Segment> {
        // Most sections belong to one node in one piece.
        if (self.first.start..self.first.end).contains(&pfn) {
            return Some(&self.first);
        }
        self.segments.iter().find(|s| (s.start..s.end).contains(&pfn))
    }

    pub(super) fn owner_bit(&self, nid: u32) -> Option<u8> {
        self.owners.iter().position(|&o| o == nid).map(|i| 1 << i)
    }

    pub(super) fn tracked_pages(&self) -> u64 {
        self.segments.iter().filter(|s| !s.top_tier).map(|s| s.end - s.start).sum()
    }
}

/// Where a pfn lives: records are packed into words.
pub(super) struct Slot<'a> {
    pub(super) word: &'a AtomicU64,
    pub(super) shift: u32,
    pub(super) mask: u64,
}

/// The word holding `pfn`'s record: 8 records per word (default) or 2 (precise).
#[inline]
pub(super) fn slot_of<const PRECISE: bool>(sec: &Section, pfn: u64) -> Slot<'_> {
    let off = (pfn - (sec.nr << PFN_SECTION_SHIFT)) as usize;
    if PRECISE {
        Slot { word: &sec.words[off / 2], shift: (off % 2) as u32 * 32, mask: 0xffff_ffff }
    } else {
        Slot { word: &sec.words[off / 8], shift: (off % 8) as u32 * 8, mask: 0xff }
    }
}

#[inline]
pub(super) fn prefetch(word: &AtomicU64) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is only a hint; the address is a live record word.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (word as *const AtomicU64).cast(),
        )
    };
}
