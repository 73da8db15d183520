//! The hot map: a userspace twin of the kernel's pghot hot map.
//!
//! One hotness record per page of online lower-tier memory, stored per 128 MiB
//! memory section; a per-section hot flag; per-node "activate" flags that wake
//! the node's promoter; and `record_access()` with `pghot_record_access()`'s
//! checks, in its order, and its counters. Pure data-structure code: no I/O,
//! nothing about BPF. The collector records, the node workers walk and consume,
//! on different threads; records are updated with compare-and-swap.
//!
//! Deviations from the kernel, each because userspace cannot do otherwise or
//! because the kernel's choice loses pages:
//! - check 6 (the folio can be pinned, is on an LRU list) is not done per
//!   access; the promoter re-checks each page before it moves it;
//! - check 7 (use the folio's first pfn) takes the folio order from the
//!   caller, which got it from the BPF program at the hook;
//! - a section shared by two nodes gets a record array if any part of it is
//!   lower tier, and a hot flag per node, so neither node's walk clears the
//!   other's flag or visits the other's pages;
//! - sections are never freed while the map lives: an offlined section is
//!   cleared and skipped, and reused if its memory comes back.

mod config;
mod directory;
mod hints;
mod layout;
mod record;

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering},
};

use hotpage_common::{PAGES_PER_SECTION, PFN_SECTION_SHIFT, folio_head, source};
use serde::Serialize;
use thiserror::Error;

use crate::{counters::ThreadCounter, sys::topology::NodeRanges};

pub use config::{ConfigError, HotMapConfig, KNOWN_SOURCES, SOURCE_HINT_FAULTS, SOURCE_HW_HINTS};
use directory::Directory;
pub use hints::{Hint, HintTable};
pub use layout::{LayoutNode, MemoryLayout, Segment};
pub use record::{NUMA_NO_NODE, RecordFields, RecordMode, UpdateParams};

/// `MAX_NUMNODES` on x86-64 distribution kernels (NODES_SHIFT 10).
pub const MAX_NODES: usize = 1024;

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

/// The word holding `pfn`'s record: 8 records per word (default) or 2 (precise).
#[inline]
fn slot_of<const PRECISE: bool>(sec: &Section, pfn: u64) -> Slot<'_> {
    let off = (pfn - (sec.nr << PFN_SECTION_SHIFT)) as usize;
    if PRECISE {
        Slot { word: &sec.words[off / 2], shift: (off % 2) as u32 * 32, mask: 0xffff_ffff }
    } else {
        Slot { word: &sec.words[off / 8], shift: (off % 8) as u32 * 8, mask: 0xff }
    }
}

#[inline]
fn prefetch(word: &AtomicU64) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is only a hint; the address is a live record word.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (word as *const AtomicU64).cast(),
        )
    };
}

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

/// The kernel's counters (`pghot_recorded_*` in /proc/vmstat).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HotMapCounters {
    /// `pghot_recorded_accesses`: accesses that updated a record.
    pub recorded_accesses: u64,
    /// `pghot_recorded_hintfaults`: hint faults from an enabled source, before filtering.
    pub recorded_hintfaults: u64,
    /// `pghot_recorded_hwhints`.
    pub recorded_hwhints: u64,
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

/// One 128 MiB section's records and flags.
struct Section {
    nr: u64,
    /// The lower-tier segment checked first (the whole section, usually).
    first: Segment,
    segments: Vec<Segment>,
    /// Distinct lower-tier nodes of the section; hot bit i belongs to owners[i].
    owners: Vec<u32>,
    /// Bit i: owners[i] has READY pages here not yet walked (PGHOT_SECTION_HOT).
    hot: AtomicU8,
    online: AtomicBool,
    /// Records packed into words: 8 per word (default) or 2 (precise).
    words: Box<[AtomicU64]>,
}

impl Section {
    fn new(nr: u64, segments: Vec<Segment>, mode: RecordMode) -> Self {
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
    fn segment_of(&self, pfn: u64) -> Option<&Segment> {
        // Most sections belong to one node in one piece.
        if (self.first.start..self.first.end).contains(&pfn) {
            return Some(&self.first);
        }
        self.segments.iter().find(|s| (s.start..s.end).contains(&pfn))
    }

    fn owner_bit(&self, nid: u32) -> Option<u8> {
        self.owners.iter().position(|&o| o == nid).map(|i| 1 << i)
    }

    fn tracked_pages(&self) -> u64 {
        self.segments.iter().filter(|s| !s.top_tier).map(|s| s.end - s.start).sum()
    }
}

/// Per node: activate flag, its sections, the promoter's wake-up.
#[derive(Default)]
struct NodeState {
    online: AtomicBool,
    top_tier: AtomicBool,
    /// PGDAT_KMIGRATED_ACTIVATE.
    activate: AtomicBool,
    sections: Mutex<Arc<Vec<u64>>>,
    waker: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
}

/// Whether flagging a section hot wakes the node's worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wake {
    Yes,
    No,
}

/// Where a pfn lives: records are packed into words.
struct Slot<'a> {
    word: &'a AtomicU64,
    shift: u32,
    mask: u64,
}

pub struct HotMap {
    config: HotMapConfig,
    params: UpdateParams,
    started: AtomicBool,
    /// Online nodes below 64 as a bit mask: the common check in one load.
    online_low: AtomicU64,
    dir: Directory<Section>,
    nodes: Box<[NodeState]>,
    /// All online ranges, for pfns outside any section (top tier, holes).
    ranges: Mutex<Arc<NodeRanges>>,
    recorded_accesses: ThreadCounter,
    recorded_by_source: [ThreadCounter; source::COUNT],
    hints: HintTable,
    layout_lock: Mutex<()>,
}

/// Default bound of the hint table: 256 Ki candidate pages (1 GiB of 4 KiB pages).
pub const DEFAULT_HINT_CAPACITY: usize = 256 * 1024;

impl HotMap {
    /// Builds the map for `layout`: a record array for every section with
    /// lower-tier memory. Fails if the config is out of the kernel's limits or
    /// `target_nid` is not an online top-tier node.
    pub fn new(
        layout: &MemoryLayout,
        config: HotMapConfig,
        hint_capacity: usize,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let map = Self {
            config,
            params: config.update_params(),
            started: AtomicBool::new(false),
            online_low: AtomicU64::new(0),
            dir: Directory::new(),
            nodes: (0..MAX_NODES).map(|_| NodeState::default()).collect(),
            ranges: Mutex::new(Arc::default()),
            recorded_accesses: ThreadCounter::default(),
            recorded_by_source: std::array::from_fn(|_| ThreadCounter::default()),
            hints: HintTable::new(hint_capacity),
            layout_lock: Mutex::new(()),
        };
        map.update_layout(layout);
        let target = config.target_nid as usize;
        if target >= MAX_NODES
            || !map.nodes[target].online.load(Ordering::Relaxed)
            || !map.nodes[target].top_tier.load(Ordering::Relaxed)
        {
            return Err(ConfigError::TargetNotTopTier(config.target_nid));
        }
        Ok(map)
    }

    pub fn config(&self) -> &HotMapConfig {
        &self.config
    }

    pub fn hints(&self) -> &HintTable {
        &self.hints
    }

    /// `kmigrated_started`: until then every access is ignored.
    pub fn start(&self) {
        self.started.store(true, Ordering::Release);
    }

    pub fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
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
                for w in sec.words.iter() {
                    w.store(0, Ordering::Relaxed);
                }
                sec.hot.store(0, Ordering::Relaxed);
            }
        }
        let mut per_node: std::collections::BTreeMap<u32, Vec<u64>> = Default::default();
        for (nr, segments) in wanted {
            match self.dir.get(nr) {
                Some(sec) if sec.segments == segments => sec.online.store(true, Ordering::Release),
                // New, or its nodes changed: a fresh array (the old one stays until drop).
                _ => self.dir.insert(nr, Section::new(nr, segments.clone(), self.config.mode)),
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

    #[inline]
    fn nid_valid(&self, nid: i32) -> bool {
        if (0..64).contains(&nid) {
            return self.online_low.load(Ordering::Relaxed) & (1 << nid) != 0;
        }
        nid == NUMA_NO_NODE
            || (nid >= 0
                && (nid as usize) < MAX_NODES
                && self.nodes[nid as usize].online.load(Ordering::Relaxed))
    }

    /// The node and tier of a pfn outside any section (or in a section's hole).
    fn node_of_pfn_slow(&self, pfn: u64) -> Option<(u32, bool)> {
        let ranges = self.ranges.lock().ok()?.clone();
        ranges.find(pfn).map(|r| (r.nid, r.top_tier))
    }

    fn slot<'a>(&self, sec: &'a Section, pfn: u64) -> Slot<'a> {
        match self.config.mode {
            RecordMode::Default => slot_of::<false>(sec, pfn),
            RecordMode::Precise => slot_of::<true>(sec, pfn),
        }
    }

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
        let r = self.record_one(a, &mut counts);
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
    #[inline]
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
            source::HINT_FAULT | source::HW_SAMPLE => {
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
    #[inline]
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
            // section right now takes the record and must find its hint. A
            // ready page refreshes it on every access, so the newest mapping wins.
            if new & ready_bit != 0 && !hinted && a.pid != 0 {
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
                out(w * WINDOW + k, result);
            }
        }
        self.flush(&counts);
    }

    /// Sets the section's hot bit for `nid` and the node's activate flag, and
    /// with `Wake::Yes` wakes its worker when the flag turns on.
    fn flag_hot(&self, sec: &Section, nid: u32, wake: Wake) {
        if let Some(bit) = sec.owner_bit(nid)
            && sec.hot.load(Ordering::Relaxed) & bit == 0
        {
            sec.hot.fetch_or(bit, Ordering::Release);
        }
        let node = &self.nodes[nid as usize];
        if !node.activate.load(Ordering::Relaxed)
            && !node.activate.swap(true, Ordering::AcqRel)
            && wake == Wake::Yes
        {
            let waker = node.waker.lock().ok().and_then(|w| w.clone());
            if let Some(w) = waker {
                w();
            }
        }
    }

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
        self.take_slot(&self.slot(sec, pfn))
    }

    fn take_slot(&self, slot: &Slot<'_>) -> Option<RecordFields> {
        let ready_bit = u64::from(self.config.mode.ready_bit());
        let mut cur = slot.word.load(Ordering::Acquire);
        loop {
            let rec = (cur >> slot.shift) & slot.mask;
            if rec & ready_bit == 0 {
                return None;
            }
            let next = cur & !(slot.mask << slot.shift);
            match slot.word.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(self.config.mode.fields(rec as u32, self.config.target_nid)),
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
        self.flag_hot(sec, page.node, Wake::No);
        true
    }

    /// The lower-tier nodes that have sections.
    pub fn lower_tier_nodes(&self) -> Vec<u32> {
        (0..MAX_NODES as u32)
            .filter(|&n| self.nodes[n as usize].sections.lock().map(|s| !s.is_empty()).unwrap_or(false))
            .collect()
    }

    /// Registers what wakes node `nid`'s worker when the node gets work.
    pub fn set_waker(&self, nid: u32, waker: Arc<dyn Fn() + Send + Sync>) {
        if let Some(n) = self.nodes.get(nid as usize)
            && let Ok(mut w) = n.waker.lock()
        {
            *w = Some(waker);
        }
    }

    /// Test-and-clear of the node's activate flag (PGDAT_KMIGRATED_ACTIVATE).
    pub fn take_activate(&self, nid: u32) -> bool {
        self.nodes.get(nid as usize).is_some_and(|n| n.activate.swap(false, Ordering::AcqRel))
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
                if let Some(fields) = self.take_slot(&slot) {
                    stats.pages_taken += 1;
                    if f(ReadyPage { pfn, node: seg.nid, fields }) == WalkControl::Stop {
                        return WalkControl::Stop;
                    }
                }
            }
        }
        WalkControl::Continue
    }

    pub fn counters(&self) -> HotMapCounters {
        HotMapCounters {
            recorded_accesses: self.recorded_accesses.get(),
            recorded_hintfaults: self.recorded_by_source[source::HINT_FAULT as usize].get(),
            recorded_hwhints: self.recorded_by_source[source::HW_SAMPLE as usize].get(),
        }
    }

    /// READY records now in the map, per node (a full scan: for stats, not hot paths).
    pub fn ready_pages(&self, nid: u32) -> u64 {
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

#[cfg(test)]
mod tests;
