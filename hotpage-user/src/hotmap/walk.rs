//! kmigrated's side of the map: the walk of one node's flagged sections,
//! taking READY records (`pghot_get_record()`), and putting one back.

use std::sync::atomic::Ordering;

use hotpage_common::PFN_SECTION_SHIFT;
use serde::Serialize;

use super::{
    HotMap, MapChange, RecordFields, RecordMode, Segment, Wake, record,
    section::{Section, Slot},
};

/// A page a node's walk took: its record was READY and is now zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadyPage {
    pub pfn: u64,
    /// The node whose walk found it (the page's node).
    pub node: u32,
    pub fields: RecordFields,
}

/// What the walk's callback wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkControl {
    Continue,
    /// Stop now; the current section is flagged hot again so the next walk
    /// finds the pages not yet taken.
    Stop,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WalkStats {
    /// Sections of the node whose hot flag was set, walked.
    pub sections_walked: u64,
    /// Sections of the node without the flag, skipped.
    pub sections_skipped: u64,
    /// READY records taken.
    pub pages_taken: u64,
}

impl HotMap {
    /// The record of `pfn` without consuming it.
    pub fn peek(&self, pfn: u64) -> Option<RecordFields> {
        let sec = self.dir.get(pfn >> PFN_SECTION_SHIFT)?;
        let slot = self.slot(sec, pfn);
        let rec = (slot.word.load(Ordering::Acquire) >> slot.shift) & slot.mask;
        Some(self.config.mode.fields(rec as u32, self.config.target_nid))
    }

    /// `pghot_get_record()`: if the record of `pfn` is READY, swaps it to 0
    /// and returns its fields; otherwise leaves it alone.
    pub fn take_ready(&self, pfn: u64) -> Option<RecordFields> {
        let sec = self.dir.get(pfn >> PFN_SECTION_SHIFT)?;
        let nid = sec.segment_of(pfn)?.nid;
        self.take_slot(&self.slot(sec, pfn), nid)
    }

    /// Takes the READY record in `slot`, a page of node `nid`.
    fn take_slot(&self, slot: &Slot<'_>, nid: u32) -> Option<RecordFields> {
        let ready_bit = u64::from(self.config.mode.ready_bit());
        let mut cur = slot.word.load(Ordering::Acquire);
        loop {
            let rec = (cur >> slot.shift) & slot.mask;
            if rec & ready_bit == 0 {
                return None;
            }
            let next = cur & !(slot.mask << slot.shift);
            match slot.word.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    self.count_ready(nid, -1);
                    return Some(self.config.mode.fields(rec as u32, self.config.target_nid));
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// Puts a taken record back (READY kept) after a transient failure, and
    /// flags its section again without waking the node's worker: the worker
    /// re-arms its own pages and must not wake itself into a busy loop. A
    /// no-op if the page was accessed meanwhile.
    pub fn rearm(&self, page: &ReadyPage) -> bool {
        let Some(sec) = self.dir.get(page.pfn >> PFN_SECTION_SHIFT) else { return false };
        // Memory that went offline since the walk: nothing to put back.
        if !sec.online.load(Ordering::Acquire) {
            return false;
        }
        let slot = self.slot(sec, page.pfn);
        let f = page.fields;
        let rec = match self.config.mode {
            RecordMode::Default => {
                u64::from(f.freq & record::default_fmt::FREQ_MASK)
                    | (u64::from(f.time & record::default_fmt::TIME_MASK) << record::default_fmt::TIME_SHIFT)
                    | u64::from(record::default_fmt::READY)
            }
            RecordMode::Precise => {
                use record::precise_fmt::*;
                u64::from(f.nid & NID_MASK)
                    | (u64::from(f.freq & FREQ_MASK) << FREQ_SHIFT)
                    | (u64::from(f.time & TIME_MASK) << TIME_SHIFT)
                    | u64::from(READY)
            }
        };
        let mut cur = slot.word.load(Ordering::Acquire);
        loop {
            if (cur >> slot.shift) & slot.mask != 0 {
                return false;
            }
            let next = cur | (rec << slot.shift);
            match slot.word.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        self.count_ready(page.node, 1);
        self.flag_hot(sec, page.node, Wake::No);
        self.log(|seq| MapChange::Rearmed { seq, page: *page });
        true
    }

    /// kmigrated's walk of node `nid`: only that node's sections, only those
    /// flagged hot (the flag is test-and-cleared), only that node's pfns in
    /// them; every READY record is taken (swapped to 0) and handed to `f`.
    pub fn walk_node(&self, nid: u32, mut f: impl FnMut(ReadyPage) -> WalkControl) -> WalkStats {
        let mut stats = WalkStats::default();
        let Some(node) = self.nodes.get(nid as usize) else { return stats };
        let Ok(list) = node.sections.lock().map(|s| s.clone()) else { return stats };
        for &nr in list.iter() {
            let Some(sec) = self.dir.get(nr) else { continue };
            let Some(bit) = sec.owner_bit(nid) else { continue };
            if !sec.online.load(Ordering::Acquire) || sec.hot.fetch_and(!bit, Ordering::AcqRel) & bit == 0 {
                stats.sections_skipped += 1;
                continue;
            }
            stats.sections_walked += 1;
            for seg in sec.segments.iter().filter(|s| s.nid == nid && !s.top_tier) {
                if self.walk_segment(sec, seg, &mut stats, &mut f) == WalkControl::Stop {
                    sec.hot.fetch_or(bit, Ordering::Release);
                    node.activate.store(true, Ordering::Release);
                    return stats;
                }
            }
        }
        stats
    }

    fn walk_segment(
        &self,
        sec: &Section,
        seg: &Segment,
        stats: &mut WalkStats,
        f: &mut impl FnMut(ReadyPage) -> WalkControl,
    ) -> WalkControl {
        let base = sec.nr << PFN_SECTION_SHIFT;
        let per_word: u64 = match self.config.mode {
            RecordMode::Default => 8,
            RecordMode::Precise => 2,
        };
        // READY is the top bit of every record: test a word's records at once.
        let ready_mask: u64 = match self.config.mode {
            RecordMode::Default => 0x8080_8080_8080_8080,
            RecordMode::Precise => 0x8000_0000_8000_0000,
        };
        let (first_word, last_word) = ((seg.start - base) / per_word, (seg.end - 1 - base) / per_word);
        for wi in first_word..=last_word {
            let word = &sec.words[wi as usize];
            if word.load(Ordering::Relaxed) & ready_mask == 0 {
                continue;
            }
            for k in 0..per_word {
                let pfn = base + wi * per_word + k;
                if pfn < seg.start || pfn >= seg.end {
                    continue;
                }
                let slot = self.slot(sec, pfn);
                if let Some(fields) = self.take_slot(&slot, seg.nid) {
                    self.log(|seq| MapChange::Taken { seq, pfn });
                    stats.pages_taken += 1;
                    if f(ReadyPage { pfn, node: seg.nid, fields }) == WalkControl::Stop {
                        return WalkControl::Stop;
                    }
                }
            }
        }
        WalkControl::Continue
    }
}
