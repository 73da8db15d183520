//! What the map holds, for reports: the kernel's counters, ready and
//! tracked pages per node, memory.

use std::sync::atomic::Ordering;

use hotpage_common::source;
use serde::{Deserialize, Serialize};

use super::{HotMap, Segment, section::Section};

/// The kernel's counters (`pghot_recorded_*` in /proc/vmstat).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotMapCounters {
    /// `pghot_recorded_accesses`: accesses that updated a record.
    pub recorded_accesses: u64,
    /// `pghot_recorded_hintfaults`: hint faults from an enabled source, before filtering.
    pub recorded_hintfaults: u64,
    /// `pghot_recorded_hwhints`.
    pub recorded_hwhints: u64,
    /// Page-table-scan accesses (pghot's kscand source; here DAMON's regions).
    #[serde(default)]
    pub recorded_pgtscans: u64,
}

/// Memory the map holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MapMemory {
    pub sections: u64,
    /// Pages with a record (online lower-tier pages of allocated sections).
    pub tracked_pages: u64,
    /// Bytes of record arrays.
    pub record_bytes: u64,
    /// Bytes of per-section bookkeeping and the directory.
    pub overhead_bytes: u64,
}

impl HotMap {
    pub fn counters(&self) -> HotMapCounters {
        HotMapCounters {
            recorded_accesses: self.recorded_accesses.get(),
            recorded_hintfaults: self.recorded_by_source[source::HINT_FAULT as usize].get(),
            recorded_hwhints: self.recorded_by_source[source::HW_SAMPLE as usize].get(),
            recorded_pgtscans: self.recorded_by_source[source::PGTABLE_SCAN as usize].get(),
        }
    }

    /// READY records now in the map, per node: one load (the count is kept
    /// at every READY transition), whatever the node's size.
    pub fn ready_pages(&self, nid: u32) -> u64 {
        self.nodes.get(nid as usize).map_or(0, |n| n.ready.load(Ordering::Relaxed).max(0) as u64)
    }

    /// The same by scanning every record of the node: what `ready_pages` was
    /// before it was kept incrementally, for tests and the scrape benchmark.
    pub fn ready_pages_by_scan(&self, nid: u32) -> u64 {
        let Some(node) = self.nodes.get(nid as usize) else { return 0 };
        let Ok(list) = node.sections.lock().map(|s| s.clone()) else { return 0 };
        let ready_bit = u64::from(self.config.mode.ready_bit());
        let mut n = 0;
        for &nr in list.iter() {
            let Some(sec) = self.dir.get(nr) else { continue };
            for seg in sec.segments.iter().filter(|s| s.nid == nid && !s.top_tier) {
                for pfn in seg.start..seg.end {
                    let slot = self.slot(sec, pfn);
                    if (slot.word.load(Ordering::Relaxed) >> slot.shift) & slot.mask & ready_bit != 0 {
                        n += 1;
                    }
                }
            }
        }
        n
    }

    /// Pages of `nid` that have a record (online lower-tier pages of its sections).
    pub fn tracked_pages(&self, nid: u32) -> u64 {
        let Some(node) = self.nodes.get(nid as usize) else { return 0 };
        let Ok(list) = node.sections.lock().map(|s| s.clone()) else { return 0 };
        let mut n = 0;
        for &nr in list.iter() {
            let Some(sec) = self.dir.get(nr) else { continue };
            if !sec.online.load(Ordering::Relaxed) {
                continue;
            }
            n += sec
                .segments
                .iter()
                .filter(|s| s.nid == nid && !s.top_tier)
                .map(|s| s.end - s.start)
                .sum::<u64>();
        }
        n
    }

    pub fn memory(&self) -> MapMemory {
        let mut m = MapMemory { overhead_bytes: self.dir.overhead_bytes() as u64, ..Default::default() };
        for nr in self.dir.numbers() {
            let Some(sec) = self.dir.get(nr) else { continue };
            if !sec.online.load(Ordering::Relaxed) {
                continue;
            }
            m.sections += 1;
            m.tracked_pages += sec.tracked_pages();
            m.record_bytes += (sec.words.len() * 8) as u64;
            m.overhead_bytes +=
                (size_of::<Section>() + sec.segments.capacity() * size_of::<Segment>()) as u64;
        }
        m
    }
}
