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
//!
//! Files: `record` (the record formats, bit for bit), `section` (a section's
//! packed records and flags), `access` (the record path), `walk` (the node
//! workers' side: walk, take, re-arm), `census` (counts for reports),
//! `layout` (the memory layout and hot-plug), `directory` (section lookup),
//! `hints` (pfn → `(pid, vaddr)`), `config` (the knobs).

mod access;
mod census;
mod changes;
mod config;
pub(crate) mod directory;
mod hints;
mod layout;
mod record;
mod section;
mod walk;

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
};

use hotpage_common::source;

use crate::{counters::ThreadCounter, sys::topology::NodeRanges};

pub use access::{Access, RecordError, Recorded};
pub use census::{HotMapCounters, MapMemory};
pub use changes::MapChange;
pub use config::{
    ConfigError, HotMapConfig, KNOWN_SOURCES, SOURCE_HINT_FAULTS, SOURCE_HW_HINTS, SOURCE_PGTABLE_SCAN,
};
use directory::Directory;
pub use hints::{Hint, HintTable, PfnMap};
pub use layout::{LayoutNode, MemoryLayout, Segment};
pub use record::{NUMA_NO_NODE, RecordFields, RecordMode, UpdateParams};
use section::{Section, Slot, slot_of};
pub use walk::{ReadyPage, WalkControl, WalkStats};

/// `MAX_NUMNODES` on x86-64 distribution kernels (NODES_SHIFT 10).
pub const MAX_NODES: usize = 1024;

/// Per node: activate flag, its sections, the promoter's wake-up.
#[derive(Default)]
struct NodeState {
    online: AtomicBool,
    top_tier: AtomicBool,
    /// PGDAT_KMIGRATED_ACTIVATE.
    activate: AtomicBool,
    sections: Mutex<Arc<Vec<u64>>>,
    waker: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
    /// READY records of the node, kept at every READY transition (set by an
    /// access or a re-arm, cleared by a take or a hot-unplug) so that a
    /// report costs one load, not a scan of every record.
    ready: AtomicI64,
}

/// Whether flagging a section hot wakes the node's worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wake {
    Yes,
    No,
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
    /// Accesses handed to the map so far (see `accesses_handled`).
    handled: AtomicU64,
    changes: changes::ChangeLog,
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
            handled: AtomicU64::new(0),
            changes: changes::ChangeLog::new(),
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

    /// A READY transition of a record of node `nid` (+1 set, -1 cleared).
    #[inline]
    fn count_ready(&self, nid: u32, delta: i64) {
        if let Some(n) = self.nodes.get(nid as usize) {
            n.ready.fetch_add(delta, Ordering::Relaxed);
        }
    }

    /// Test-and-clear of the node's activate flag (PGDAT_KMIGRATED_ACTIVATE).
    pub fn take_activate(&self, nid: u32) -> bool {
        self.nodes.get(nid as usize).is_some_and(|n| n.activate.swap(false, Ordering::AcqRel))
    }
}

#[cfg(test)]
mod tests;
