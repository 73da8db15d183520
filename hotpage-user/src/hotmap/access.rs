//! The record path: `pghot_record_access()`, one access or a batch of them,
//! checks in the kernel's order, the compare-and-swap update, and the hint a
//! READY page needs before READY is visible.

use std::sync::atomic::Ordering;

use hotpage_common::{PFN_SECTION_SHIFT, folio_head, source};
use serde::Serialize;
use thiserror::Error;

use super::{
    Hint, HotMap, RecordMode, Wake,
    section::{Section, Slot, prefetch, slot_of},
};

/// What `record_access()` did when the kernel would return 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Recorded {
    /// 1: the promoter has not started.
    NotStarted,
    /// 3: the source is disabled.
    SourceDisabled,
    /// 4 (post-v6): the page already sits on the accessing node.
    SameNode,
    /// 4: the page is on a top-tier node.
    TopTier,
    /// 5: the pfn is not online memory.
    NotOnline,
    /// 8: the page's section has no record array.
    NoRecordArray,
    /// 9: the record was updated; `ready` if it is now READY, `newly_ready`
    /// if this access made it so.
    Updated { ready: bool, newly_ready: bool },
}

impl Recorded {
    /// `pghot_record_access()`'s return value for this outcome.
    pub const fn kernel_return(self) -> i32 {
        0
    }
}

/// What `record_access()` refuses, where the kernel returns -EINVAL.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum RecordError {
    /// 2: the accessing node is not an online node (NUMA_NO_NODE is fine).
    #[error("node {0} is not a valid accessing node")]
    InvalidNode(i32),
    /// 3: not a source pghot knows.
    #[error("unknown access source {0}")]
    UnknownSource(u16),
}

impl RecordError {
    /// `-EINVAL`, as the kernel returns for both.
    pub const fn kernel_return(self) -> i32 {
        -22
    }
}

/// One access, as `record_batch()` takes them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    pub pfn: u64,
    /// Folio order of the page (0 for a base page).
    pub order: u8,
    /// Accessing node, or NUMA_NO_NODE.
    pub nid: i32,
    pub src: u16,
    /// ms ticks.
    pub now: u64,
    /// Process that mapped the page (0: unknown, no hint is kept).
    pub pid: u32,
    /// Its virtual address of the folio's first page, for `move_pages`.
    pub vaddr: u64,
}

impl Access {
    /// An access as `pghot_record_access()` sees it: no mapping to move it by.
    pub const fn new(pfn: u64, order: u8, nid: i32, src: u16, now: u64) -> Self {
        Self { pfn, order, nid, src, now, pid: 0, vaddr: 0 }
    }

    /// The access with the mapping the promoter moves the page by.
    pub const fn mapped(self, pid: u32, vaddr: u64) -> Self {
        Self { pid, vaddr, ..self }
    }
}

/// Counter increments gathered over a batch, added to the shared counters once.
#[derive(Default)]
struct LocalCounts {
    accesses: u64,
    by_source: [u64; source::COUNT],
}

/// Accesses `record_batch()` looks up before it updates them: enough misses in
/// flight to cover DRAM latency, few enough that the lines stay in L1.
const WINDOW: usize = 32;

/// Where an access's record is, or what the access came to without one.
enum Resolved<'a> {
    Done(Result<Recorded, RecordError>),
    Record { sec: &'a Section, head: u64, head_nid: u32, slot: Slot<'a> },
}

impl HotMap {
    /// `pghot_record_access(pfn, nid, src, now)`: records an access by node
    /// `nid` (NUMA_NO_NODE for "unknown") to the page `pfn`, whose folio has
    /// order `order`, at `now` (ms ticks). Checks in the kernel's order.
    pub fn record_access(
        &self,
        pfn: u64,
        order: u8,
        nid: i32,
        src: u16,
        now: u64,
    ) -> Result<Recorded, RecordError> {
        self.record(&Access::new(pfn, order, nid, src, now))
    }

    /// `record_access()` for an access that also says where the page is
    /// mapped: a READY record gets that `(pid, vaddr)` hint before READY is
    /// visible, so a node worker never takes a record whose hint is missing.
    pub fn record(&self, a: &Access) -> Result<Recorded, RecordError> {
        let mut counts = LocalCounts::default();
        let base = self.handled.load(Ordering::Relaxed);
        let r = self.record_one(a, &mut counts);
        self.handled.store(base + 1, Ordering::Release);
        self.flush(&counts);
        r
    }

    fn flush(&self, c: &LocalCounts) {
        if c.accesses > 0 {
            self.recorded_accesses.add(c.accesses);
        }
        for (counter, &n) in self.recorded_by_source.iter().zip(&c.by_source) {
            if n > 0 {
                counter.add(n);
            }
        }
    }

    #[inline]
    fn record_one(&self, a: &Access, counts: &mut LocalCounts) -> Result<Recorded, RecordError> {
        match self.config.mode {
            RecordMode::Default => self.record_one_in::<false>(a, counts),
            RecordMode::Precise => self.record_one_in::<true>(a, counts),
        }
    }

    #[inline]
    fn record_one_in<const PRECISE: bool>(
        &self,
        a: &Access,
        counts: &mut LocalCounts,
    ) -> Result<Recorded, RecordError> {
        match self.resolve::<PRECISE>(a, counts) {
            Resolved::Done(r) => r,
            Resolved::Record { sec, head, head_nid, slot } => {
                Ok(self.update::<PRECISE>(a, sec, head, head_nid, &slot, counts))
            }
        }
    }

    /// Checks 1–8: where the access's record is, or why there is none. Plain
    /// loads only, so a batch's lookups run ahead without waiting on updates.
    /// Always inlined, as `update`: the compiler stopped inlining them as the
    /// crate grew, which cost a third of the record path (`bench hotmap`).
    #[inline(always)]
    fn resolve<'a, const PRECISE: bool>(&'a self, a: &Access, counts: &mut LocalCounts) -> Resolved<'a> {
        let Access { pfn, order, nid, src, .. } = *a;
        // 1
        if !self.started.load(Ordering::Relaxed) {
            return Resolved::Done(Ok(Recorded::NotStarted));
        }
        // 2
        if !self.nid_valid(nid) {
            return Resolved::Done(Err(RecordError::InvalidNode(nid)));
        }
        // 3: counted before any filtering.
        match src {
            source::HINT_FAULT | source::HW_SAMPLE | source::PGTABLE_SCAN => {
                if !self.config.source_enabled(src) {
                    return Resolved::Done(Ok(Recorded::SourceDisabled));
                }
                counts.by_source[src as usize] += 1;
            }
            _ => return Resolved::Done(Err(RecordError::UnknownSource(src))),
        }
        // 4, 5: the page's node, from its section or, outside any, the node ranges.
        let sec = self.dir.get(pfn >> PFN_SECTION_SHIFT).filter(|s| s.online.load(Ordering::Acquire));
        let seg = sec.and_then(|s| s.segment_of(pfn));
        let (page_nid, top_tier) = match seg {
            Some(seg) => (seg.nid, seg.top_tier),
            None => match self.node_of_pfn_slow(pfn) {
                Some(n) => n,
                None => return Resolved::Done(Ok(Recorded::NotOnline)),
            },
        };
        if nid >= 0 && page_nid == nid as u32 {
            return Resolved::Done(Ok(Recorded::SameNode));
        }
        if top_tier {
            return Resolved::Done(Ok(Recorded::TopTier));
        }
        // 7: one record per folio, at its first pfn.
        let head = folio_head(pfn, order);
        // 8. A folio never spans nodes; if the caller's order claims one that
        // does, the head has no lower-tier record of this node's.
        let found = match (sec, seg) {
            // The common case: the head is in the pfn's own segment.
            (Some(sec), Some(seg)) if head >= seg.start => Some((sec, seg.nid)),
            _ => self
                .dir
                .get(head >> PFN_SECTION_SHIFT)
                .filter(|s| s.online.load(Ordering::Acquire))
                .and_then(|s| s.segment_of(head).filter(|seg| !seg.top_tier).map(|seg| (s, seg.nid))),
        };
        match found {
            Some((sec, head_nid)) => {
                Resolved::Record { sec, head, head_nid, slot: slot_of::<PRECISE>(sec, head) }
            }
            None => Resolved::Done(Ok(Recorded::NoRecordArray)),
        }
    }

    /// Check 9: the update itself (`pghot_update_record()`), a CAS loop.
    #[inline(always)]
    fn update<const PRECISE: bool>(
        &self,
        a: &Access,
        sec: &Section,
        head: u64,
        head_nid: u32,
        slot: &Slot<'_>,
        counts: &mut LocalCounts,
    ) -> Recorded {
        counts.accesses += 1;
        let mode = if PRECISE { RecordMode::Precise } else { RecordMode::Default };
        let ready_bit = u64::from(mode.ready_bit());
        let mut cur = slot.word.load(Ordering::Relaxed);
        let mut hinted = false;
        let (old, new) = loop {
            let old = (cur >> slot.shift) & slot.mask;
            let new = u64::from(mode.update(old as u32, a.nid, a.now, &self.params));
            // The hint goes in before READY can be seen: a worker walking the
            // section right now takes the record and must find its hint. Only
            // the access that makes the record READY pays for it: a hot page's
            // later accesses find READY set and leave the table alone.
            if new & ready_bit != 0 && old & ready_bit == 0 && !hinted && a.pid != 0 {
                self.hints.insert(head, Hint::new(a.pid, a.vaddr, a.now, a.order));
                hinted = true;
            }
            // A saturated record in the same time bucket does not change: no write.
            if new == old {
                break (old, new);
            }
            let next = (cur & !(slot.mask << slot.shift)) | (new << slot.shift);
            match slot.word.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break (old, new),
                Err(actual) => cur = actual,
            }
        };
        let ready = new & ready_bit != 0;
        let newly_ready = ready && old & ready_bit == 0;
        // Only the access that makes a record READY flags it: a record that was
        // READY already was flagged then, and a walk that cleared the flag since
        // still meets the record (it clears first, then scans).
        if newly_ready {
            self.count_ready(head_nid, 1);
            self.flag_hot(sec, head_nid, Wake::Yes);
        }
        Recorded::Updated { ready, newly_ready }
    }

    /// `record_access()` for many accesses: for each window of accesses, the
    /// lookups first (each issuing a prefetch of its record), then the
    /// updates, so cache misses overlap instead of each waiting behind a
    /// locked instruction. `out(i, result)` gets each outcome, in order.
    pub fn record_batch(&self, accesses: &[Access], out: impl FnMut(usize, Result<Recorded, RecordError>)) {
        match self.config.mode {
            RecordMode::Default => self.record_batch_in::<false>(accesses, out),
            RecordMode::Precise => self.record_batch_in::<true>(accesses, out),
        }
    }

    fn record_batch_in<const PRECISE: bool>(
        &self,
        accesses: &[Access],
        mut out: impl FnMut(usize, Result<Recorded, RecordError>),
    ) {
        let mut counts = LocalCounts::default();
        let base = self.handled.load(Ordering::Relaxed);
        let mut resolved: [Option<Resolved<'_>>; WINDOW] = [const { None }; WINDOW];
        for (w, window) in accesses.chunks(WINDOW).enumerate() {
            for (r, a) in resolved.iter_mut().zip(window) {
                let res = self.resolve::<PRECISE>(a, &mut counts);
                if let Resolved::Record { slot, .. } = &res {
                    prefetch(slot.word);
                }
                *r = Some(res);
            }
            for (k, (r, a)) in resolved.iter_mut().zip(window).enumerate() {
                let result = match r.take() {
                    Some(Resolved::Record { sec, head, head_nid, slot }) => {
                        Ok(self.update::<PRECISE>(a, sec, head, head_nid, &slot, &mut counts))
                    }
                    Some(Resolved::Done(d)) => d,
                    None => continue,
                };
                let i = w * WINDOW + k;
                // A plain store, not a locked add: one thread records.
                self.handled.store(base + i as u64 + 1, Ordering::Release);
                out(i, result);
            }
        }
        self.flush(&counts);
    }
}
