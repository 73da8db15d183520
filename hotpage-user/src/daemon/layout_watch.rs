//! Memory hot-plug: new CXL memory appears as memory blocks coming online
//! (`/sys/devices/system/memory/memoryN/state`, linked from its node's
//! directory), and blocks go offline before they are removed. Every few
//! seconds the topology is read again; when the lower tier's pfn ranges
//! changed, the hot map (records for new sections, removed ones cleared with
//! their READY counts), the rule's scores, the programs' tier filters and the
//! sample resolver follow. A lower-tier node that appears or disappears as a
//! whole is reported: its promoter worker starts or stops with the next run.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use hotpage_common::PfnRange;

use crate::{
    hotmap::{HotMap, MemoryLayout},
    rule::PageScores,
    sources::LoadedSource,
    sys::topology::{TierTopology, TopologyError},
};

/// How often sysfs is read again: a block coming online is tracked within this.
pub const EVERY: Duration = Duration::from_secs(5);

/// A change of the lower tier.
#[derive(Debug)]
pub struct LayoutChange {
    pub topology: TierTopology,
    pub ranges: Vec<PfnRange>,
    /// Lower-tier pages now, and before.
    pub pages: (u64, u64),
    pub new_nodes: Vec<u32>,
    pub gone_nodes: Vec<u32>,
}

impl LayoutChange {
    /// One line for the log.
    pub fn summary(&self) -> String {
        let mib = |pages: u64| pages >> 8;
        let mut s = format!(
            "memory hot-plug: the lower tier is now {} MiB in {} range(s) (was {} MiB)",
            mib(self.pages.0),
            self.ranges.len(),
            mib(self.pages.1)
        );
        if !self.new_nodes.is_empty() {
            s += &format!(
                "; node(s) {:?} joined the lower tier: restart hotpage to promote from them",
                self.new_nodes
            );
        }
        if !self.gone_nodes.is_empty() {
            s += &format!("; node(s) {:?} left it", self.gone_nodes);
        }
        s
    }
}

/// The lower tier as last seen.
pub struct LayoutWatch {
    root: PathBuf,
    ranges: Vec<PfnRange>,
}

fn pages(ranges: &[PfnRange]) -> u64 {
    ranges.iter().map(|r| r.end_pfn - r.start_pfn).sum()
}

fn nodes(ranges: &[PfnRange]) -> BTreeSet<u32> {
    ranges.iter().map(|r| r.nid as u32).collect()
}

impl LayoutWatch {
    pub fn new(root: &Path, ranges: &[PfnRange]) -> Self {
        Self { root: root.to_owned(), ranges: ranges.to_vec() }
    }

    /// Reads the topology again; the change, if the lower tier changed.
    pub fn poll(&mut self) -> Result<Option<LayoutChange>, TopologyError> {
        let topology = TierTopology::read(&self.root)?;
        let ranges = topology.lower_tier_ranges()?;
        if ranges == self.ranges {
            return Ok(None);
        }
        let (now, before) = (nodes(&ranges), nodes(&self.ranges));
        let change = LayoutChange {
            pages: (pages(&ranges), pages(&self.ranges)),
            new_nodes: now.difference(&before).copied().collect(),
            gone_nodes: before.difference(&now).copied().collect(),
            ranges: ranges.clone(),
            topology,
        };
        self.ranges = ranges;
        Ok(Some(change))
    }
}

/// What follows the layout in a running daemon.
pub struct Followers {
    pub map: Arc<HotMap>,
    pub scores: Arc<PageScores>,
    pub hint_faults: Arc<Mutex<Option<LoadedSource>>>,
    /// The sample source's filter and the sample resolver take it from here.
    pub ranges: tokio::sync::watch::Sender<Arc<Vec<PfnRange>>>,
}

impl Followers {
    /// Applies a change: the map and scores first (so an event from new
    /// memory finds its record), then the filters that let such events in.
    pub fn apply(&self, change: &LayoutChange) {
        let layout = MemoryLayout::from(&change.topology);
        self.map.update_layout(&layout);
        self.scores.update_layout(&layout);
        if let Some(src) = self.hint_faults.lock().unwrap_or_else(PoisonError::into_inner).as_mut()
            && let Err(e) = src.set_lower_tier(&change.ranges)
        {
            tracing::warn!("memory hot-plug: updating the hint-fault filter: {e}");
        }
        self.ranges.send_replace(Arc::new(change.ranges.clone()));
    }
}

/// Polls every [`EVERY`] until aborted.
pub async fn watch(mut layout: LayoutWatch, followers: Followers) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        // A few hundred small sysfs reads: quick enough for this thread.
        match layout.poll() {
            Ok(Some(change)) => {
                tracing::warn!("{}", change.summary());
                followers.apply(&change);
            }
            Ok(None) => {}
            // A block half-way through onlining: the next poll sees it whole.
            Err(e) => tracing::debug!("memory hot-plug: reading the topology: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::{copy_tree, cxl_box};

    /// A writable copy of the box capture, and its lower-tier ranges.
    fn box_copy() -> (tempfile::TempDir, TierTopology, Vec<PfnRange>) {
        let dir = tempfile::tempdir().unwrap();
        copy_tree(&cxl_box(), dir.path());
        let topo = TierTopology::read(dir.path()).unwrap();
        let ranges = topo.lower_tier_ranges().unwrap();
        (dir, topo, ranges)
    }

    /// The box capture with one more 128 MiB block on node 1, `memory{block}`,
    /// online in node 1's movable zone (as an onlined DIMM is).
    fn hot_add(root: &Path, block: u32) {
        let mem = root.join(format!("sys/devices/system/memory/memory{block}"));
        std::fs::create_dir_all(&mem).unwrap();
        std::fs::write(mem.join("state"), "online\n").unwrap();
        std::fs::create_dir_all(root.join(format!("sys/devices/system/node/node1/memory{block}"))).unwrap();
        let zoneinfo = std::fs::read_to_string(root.join("proc/zoneinfo")).unwrap();
        let zoneinfo = movable_span(&zoneinfo, 1, u64::from(block) * 32768, 32768);
        std::fs::write(root.join("proc/zoneinfo"), zoneinfo).unwrap();
    }

    /// `zoneinfo` with node `nid`'s (empty) movable zone spanning `pages` from `start`.
    fn movable_span(zoneinfo: &str, nid: u32, start: u64, pages: u64) -> String {
        let header = format!("Node {nid}, zone  Movable");
        let mut out = String::new();
        let mut inside = false;
        for line in zoneinfo.lines() {
            if line.starts_with("Node ") {
                if inside {
                    out += &format!("  start_pfn:           {start}\n");
                }
                inside = line == header;
            }
            if inside && line.trim_start().starts_with("spanned") {
                out += &format!("        spanned  {pages}\n");
            } else {
                out += line;
                out += "\n";
            }
        }
        if inside {
            out += &format!("  start_pfn:           {start}\n");
        }
        out
    }

    #[test]
    fn a_block_coming_online_on_node_1_is_a_change_and_then_none() {
        let (dir, _, ranges) = box_copy();
        let before = pages(&ranges);
        let mut watch = LayoutWatch::new(dir.path(), &ranges);
        assert!(watch.poll().unwrap().is_none(), "nothing changed");

        // The first block above node 1's memory (its last block ends short, at the zone's end).
        let block = ranges.iter().map(|r| r.end_pfn).max().unwrap().div_ceil(32768);
        hot_add(dir.path(), block as u32);
        let change = watch.poll().unwrap().expect("the new block is seen");
        assert_eq!(change.pages, (before + 32768, before), "{}", change.summary());
        assert!(change.new_nodes.is_empty() && change.gone_nodes.is_empty());
        assert!(change.summary().contains("memory hot-plug"), "{}", change.summary());
        assert!(watch.poll().unwrap().is_none(), "seen once");

        // Offlined again: the ranges shrink back.
        std::fs::write(
            dir.path().join(format!("sys/devices/system/memory/memory{block}/state")),
            "offline\n",
        )
        .unwrap();
        let change = watch.poll().unwrap().expect("the block going is seen");
        assert_eq!(change.pages, (before, before + 32768));
    }

    #[test]
    fn the_followers_track_and_score_the_new_memory() {
        let (dir, topo, ranges) = box_copy();
        let layout = MemoryLayout::from(&topo);
        let map = Arc::new(HotMap::new(&layout, crate::hotmap::HotMapConfig::default(), 64).unwrap());
        let scores = Arc::new(PageScores::new(&layout));
        let (tx, mut rx) = tokio::sync::watch::channel(Arc::new(ranges.clone()));
        let followers =
            Followers { map: map.clone(), scores: scores.clone(), hint_faults: Arc::default(), ranges: tx };
        let tracked = map.tracked_pages(1);

        let block = ranges.iter().map(|r| r.end_pfn).max().unwrap().div_ceil(32768);
        let new_pfn = block * 32768 + 5;
        assert_eq!(scores.node_of(new_pfn), None);
        hot_add(dir.path(), block as u32);
        let change = LayoutWatch::new(dir.path(), &ranges).poll().unwrap().unwrap();
        followers.apply(&change);
        assert_eq!(map.tracked_pages(1), tracked + 32768, "records for the new block");
        assert_eq!(scores.node_of(new_pfn), Some(1), "scores for the new block");
        assert!(rx.has_changed().unwrap(), "the sample filter and resolver are told");
        assert_eq!(pages(&rx.borrow_and_update()), pages(&change.ranges));
    }
}
