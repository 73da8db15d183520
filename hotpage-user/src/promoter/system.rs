//! What the promoter needs from the system, behind one trait so that tests
//! inject a fake and the box exercises the real one: where a virtual page is
//! mapped (pagemap), a page's flags (kpageflags), a node's free memory and
//! watermark, and `move_pages(2)`.

use std::{
    collections::HashMap,
    io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use hotpage_common::PAGE_SIZE;

use crate::{
    promoter::move_pages,
    sys::clock,
    sys::kpageflags::KPageFlags,
    sys::node_meminfo::read_node_meminfo,
    sys::pagemap::PagemapCache,
    sys::zoneinfo::{Zone, node_unreclaimable, read_zoneinfo},
};

pub use crate::sys::kpageflags::kpf;

/// Where a process maps a virtual page now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping {
    Present(u64),
    NotPresent,
    /// The process is gone (its pagemap cannot be opened).
    ProcessGone,
}

/// A node's free memory and low watermark, in pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeMemory {
    pub total: u64,
    pub free: u64,
    /// Sum of the node's zones' low watermarks.
    pub low: u64,
    /// The kernel demotes this node's cold pages to a lower tier under
    /// pressure (`/sys/kernel/mm/numa/demotion_enabled`).
    pub demotes: bool,
    /// The kernel no longer wakes kswapd for this node (`node_unreclaimable`
    /// in /proc/zoneinfo; read only when the node is down to its low watermark).
    pub kswapd_hopeless: bool,
}

pub trait PromoterSystem: Send {
    fn mapping(&mut self, pid: u32, vaddr: u64) -> Mapping;
    /// kpageflags of `pfn`, when the kernel offers them.
    fn page_flags(&mut self, pfn: u64) -> Option<u64>;

    /// `mapping()` for many addresses of one process (sorted ascending).
    fn mappings(&mut self, pid: u32, vaddrs: &[u64], out: &mut [Mapping]) {
        for (o, &v) in out.iter_mut().zip(vaddrs) {
            *o = self.mapping(pid, v);
        }
    }

    /// `page_flags()` for many pfns (sorted ascending).
    fn pages_flags(&mut self, pfns: &[u64], out: &mut [Option<u64>]) {
        for (o, &p) in out.iter_mut().zip(pfns) {
            *o = self.page_flags(p);
        }
    }

    fn node_memory(&mut self, nid: u32) -> Option<NodeMemory>;
    /// `move_pages(2)`, see [`move_pages::move_pages`].
    fn move_pages(
        &mut self,
        pid: u32,
        pages: &[u64],
        nodes: Option<&[i32]>,
        status: &mut [i32],
        flags: i32,
    ) -> io::Result<u64>;
    /// Hot-map ticks (ms of CLOCK_MONOTONIC).
    fn now_tick(&self) -> u64;

    /// Whether process `pid` exists.
    fn process_alive(&self, pid: u32) -> bool;
}

/// The real system under a root path.
pub struct LiveSystem {
    root: PathBuf,
    pagemaps: PagemapCache,
    kpageflags: Option<KPageFlags>,
    watermarks: HashMap<u32, u64>,
    watermarks_read: Option<Instant>,
}

/// Open pagemaps kept at once; beyond that the cache starts over.
const PAGEMAP_CACHE: usize = 128;
/// Watermarks change with memory hotplug and `min_free_kbytes`; re-read this often.
const WATERMARK_REFRESH: Duration = Duration::from_secs(60);

impl LiveSystem {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
            pagemaps: PagemapCache::new(root, PAGEMAP_CACHE),
            kpageflags: KPageFlags::open(root).ok(),
            watermarks: HashMap::new(),
            watermarks_read: None,
        }
    }

    /// Whether the kernel demotes under pressure (a top-tier node then makes
    /// room by demoting its coldest pages, as it does for its own promotions).
    fn targets_demote(&self) -> bool {
        std::fs::read_to_string(self.root.join(crate::kernel::settings::DEMOTION_ENABLED))
            .is_ok_and(|s| matches!(s.trim(), "true" | "1"))
    }

    fn low_watermark(&mut self, nid: u32) -> u64 {
        if self.watermarks_read.is_none_or(|t| t.elapsed() > WATERMARK_REFRESH)
            && let Ok(zones) = read_zoneinfo(&self.root)
        {
            self.watermarks = sum_low(&zones);
            self.watermarks_read = Some(Instant::now());
        }
        self.watermarks.get(&nid).copied().unwrap_or(0)
    }
}

/// Runs of values that step by exactly `step`, as (start index, length), at
/// most 1024 long (8 KiB per read).
fn runs(values: &[u64], step: u64) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        if i >= values.len() {
            return None;
        }
        let start = i;
        i += 1;
        while i < values.len() && i - start < 1024 && values[i] == values[i - 1] + step {
            i += 1;
        }
        Some((start, i - start))
    })
}

fn sum_low(zones: &[Zone]) -> HashMap<u32, u64> {
    let mut m = HashMap::new();
    for z in zones {
        *m.entry(z.node).or_insert(0) += z.low;
    }
    m
}

impl PromoterSystem for LiveSystem {
    fn mapping(&mut self, pid: u32, vaddr: u64) -> Mapping {
        let Some(pm) = self.pagemaps.get(pid) else { return Mapping::ProcessGone };
        match pm.entry(vaddr) {
            Ok(e) => e.pfn().map_or(Mapping::NotPresent, Mapping::Present),
            // The process exited after we opened its pagemap.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) || e.kind() == io::ErrorKind::UnexpectedEof => {
                self.pagemaps.forget(pid);
                Mapping::ProcessGone
            }
            Err(_) => {
                self.pagemaps.forget(pid);
                Mapping::NotPresent
            }
        }
    }

    fn page_flags(&mut self, pfn: u64) -> Option<u64> {
        self.kpageflags.as_ref()?.flags(pfn).ok()
    }

    /// One pread per run of consecutive pages: a syscall per page costs more
    /// than the move itself under emulation, and adds up on real machines too.
    fn mappings(&mut self, pid: u32, vaddrs: &[u64], out: &mut [Mapping]) {
        let mut entries = Vec::new();
        for (start, len) in runs(vaddrs, PAGE_SIZE) {
            let first = vaddrs[start];
            let Some(pm) = self.pagemaps.get(pid) else {
                out.fill(Mapping::ProcessGone);
                return;
            };
            entries.clear();
            entries.resize(len, crate::sys::pagemap::PagemapEntry(0));
            match pm.entries(first, &mut entries) {
                Ok(()) => {
                    for (o, e) in out[start..start + len].iter_mut().zip(&entries) {
                        *o = e.pfn().map_or(Mapping::NotPresent, Mapping::Present);
                    }
                }
                // Fall back to single reads: the run may end in an unmapped hole.
                Err(_) => {
                    for i in start..start + len {
                        out[i] = self.mapping(pid, vaddrs[i]);
                    }
                }
            }
        }
    }

    fn pages_flags(&mut self, pfns: &[u64], out: &mut [Option<u64>]) {
        let Some(f) = self.kpageflags.as_ref() else {
            out.fill(None);
            return;
        };
        let mut run = Vec::new();
        for (start, len) in runs(pfns, 1) {
            run.clear();
            run.resize(len, 0);
            let ok = f.flags_of_run(pfns[start], &mut run).is_ok();
            for (o, &flags) in out[start..start + len].iter_mut().zip(&run) {
                *o = ok.then_some(flags);
            }
        }
    }

    fn node_memory(&mut self, nid: u32) -> Option<NodeMemory> {
        let m = read_node_meminfo(&self.root, nid).ok()?;
        let low = self.low_watermark(nid);
        let demotes = self.targets_demote();
        let free = m.get("MemFree")? / 4;
        // Only a node at its watermark waits for kswapd; elsewhere the state
        // does not matter and zoneinfo is not read every round.
        let kswapd_hopeless = demotes
            && free <= low
            && read_zoneinfo(&self.root).is_ok_and(|zones| node_unreclaimable(&zones, nid));
        Some(NodeMemory { total: m.get("MemTotal")? / 4, free, low, demotes, kswapd_hopeless })
    }

    fn move_pages(
        &mut self,
        pid: u32,
        pages: &[u64],
        nodes: Option<&[i32]>,
        status: &mut [i32],
        flags: i32,
    ) -> io::Result<u64> {
        move_pages::move_pages(pid, pages, nodes, status, flags)
    }

    fn now_tick(&self) -> u64 {
        clock::now_tick()
    }

    fn process_alive(&self, pid: u32) -> bool {
        self.root.join(format!("proc/{pid}")).exists()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::cxl_box;

    #[test]
    fn node_memory_from_the_box_capture() {
        let mut env = LiveSystem::new(&cxl_box());
        let m = env.node_memory(1).unwrap();
        assert_eq!(m.free, 1003260 / 4);
        assert_eq!(m.total, 1030832 / 4);
        // DMA32's 10787 plus the empty Movable zone's 32.
        assert_eq!(m.low, 10819);
    }

    /// Node 0 of a copy of the box capture at `free_kb`, with demotion on and
    /// node 0's `node_unreclaimable` as given.
    fn box_with_node0(free_kb: u64, unreclaimable: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        crate::test_fixtures::copy_tree(&cxl_box(), dir.path());
        let meminfo = dir.path().join("sys/devices/system/node/node0/meminfo");
        let text = std::fs::read_to_string(&meminfo).unwrap();
        let text =
            text.replace("Node 0 MemFree:          903156 kB", &format!("Node 0 MemFree: {free_kb} kB"));
        std::fs::write(&meminfo, text).unwrap();
        let demotion = dir.path().join(crate::kernel::settings::DEMOTION_ENABLED);
        std::fs::create_dir_all(demotion.parent().unwrap()).unwrap();
        std::fs::write(&demotion, "true\n").unwrap();
        // Node 0's per-node stats are printed in its first zone (DMA).
        let zoneinfo = dir.path().join("proc/zoneinfo");
        let text = std::fs::read_to_string(&zoneinfo).unwrap();
        let flag = format!("node_unreclaimable:  {}", u8::from(unreclaimable));
        std::fs::write(&zoneinfo, text.replacen("node_unreclaimable:  0", &flag, 1)).unwrap();
        dir
    }

    #[test]
    fn a_node_at_its_watermark_whose_kswapd_the_kernel_gave_up_on_is_hopeless() {
        let low = LiveSystem::new(&cxl_box()).node_memory(0).unwrap().low;
        let at_watermark_kb = low * 4 - 40;
        let hopeless = box_with_node0(at_watermark_kb, true);
        let m = LiveSystem::new(hopeless.path()).node_memory(0).unwrap();
        assert!(m.demotes && m.free < m.low && m.kswapd_hopeless, "{m:?}");
        // kswapd still wakes, or the node has room: not hopeless.
        let waking = box_with_node0(at_watermark_kb, false);
        assert!(!LiveSystem::new(waking.path()).node_memory(0).unwrap().kswapd_hopeless);
        let roomy = box_with_node0(903156, true);
        assert!(!LiveSystem::new(roomy.path()).node_memory(0).unwrap().kswapd_hopeless);
    }

    #[test]
    fn runs_of_consecutive_values() {
        let v = [1, 2, 3, 7, 8, 20];
        assert_eq!(runs(&v, 1).collect::<Vec<_>>(), vec![(0, 3), (3, 2), (5, 1)]);
        let long: Vec<u64> = (0..3000).collect();
        assert_eq!(runs(&long, 1).map(|r| r.1).collect::<Vec<_>>(), vec![1024, 1024, 952]);
    }

    #[test]
    fn batched_mappings_match_single_reads() {
        let buf = vec![1u8; 64 * 4096];
        let first = (buf.as_ptr() as u64 + 4095) & !4095;
        let vaddrs: Vec<u64> = (0..32).map(|i| first + i * 4096).chain([first + 40 * 4096]).collect();
        let mut env = LiveSystem::new(Path::new("/"));
        let mut batched = vec![Mapping::NotPresent; vaddrs.len()];
        env.mappings(std::process::id(), &vaddrs, &mut batched);
        let single: Vec<Mapping> = vaddrs.iter().map(|&v| env.mapping(std::process::id(), v)).collect();
        assert_eq!(batched, single);
        assert!(batched.iter().all(|m| *m != Mapping::ProcessGone));
    }

    #[test]
    fn a_process_that_does_not_exist_is_gone() {
        let mut env = LiveSystem::new(Path::new("/"));
        assert_eq!(env.mapping(u32::MAX - 1, 0x1000), Mapping::ProcessGone);
    }
}
