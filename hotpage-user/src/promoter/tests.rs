//! Promoter tests with an injected environment: batching, grouping, every
//! status and errno, the positive return value, the rate limit, observe-only,
//! the headroom watermark, verification, latency; then the worker threads.

use std::{
    collections::{HashMap, HashSet},
    io,
    sync::{Arc, Mutex, atomic::AtomicU64},
    time::{Duration, Instant},
};

use hotpage_common::{PAGES_PER_SECTION as S, source};

use super::*;
use crate::hotmap::{Access, Hint, HotMapConfig, LayoutNode, MemoryLayout, RecordMode};

#[derive(Clone, Debug, PartialEq, Eq)]
struct Call {
    pid: u32,
    pages: Vec<u64>,
    nodes: Option<Vec<i32>>,
    flags: i32,
}

type Responder = Box<dyn FnMut(&Call, &mut [i32]) -> io::Result<u64> + Send>;

/// Node memory as every fake environment of a test sees it (as workers all
/// read the same /sys).
type SharedMemory = Arc<Mutex<HashMap<u32, NodeMemory>>>;

struct FakeSystem {
    /// Overrides of where (pid, vaddr) maps; by default the hint's own pfn.
    mappings: HashMap<(u32, u64), Mapping>,
    flags: HashMap<u64, u64>,
    memory: SharedMemory,
    calls: Arc<Mutex<Vec<Call>>>,
    /// pagemap lookups made (pages).
    lookups: Arc<AtomicU64>,
    /// Free-memory readings of a target.
    memory_reads: Arc<AtomicU64>,
    respond: Responder,
    /// Processes whose memory is gone from here on (pagemap reads nothing).
    exited: Arc<Mutex<HashSet<u32>>>,
    now: u64,
    /// When set, the clock runs from here (tests with worker threads).
    started: Option<Instant>,
}

fn vaddr_of(pfn: u64) -> u64 {
    0x7f00_0000_0000 + (pfn << 12)
}

fn pfn_of(vaddr: u64) -> u64 {
    (vaddr - 0x7f00_0000_0000) >> 12
}

/// Moves everything: statuses = the requested node; queries say node 1.
fn move_all() -> Responder {
    Box::new(|c: &Call, st: &mut [i32]| {
        match &c.nodes {
            Some(n) => st.copy_from_slice(n),
            None => st.fill(1),
        }
        Ok(0)
    })
}

impl FakeSystem {
    fn new(respond: Responder) -> Self {
        Self {
            mappings: HashMap::new(),
            flags: HashMap::new(),
            memory: SharedMemory::default(),
            calls: Arc::default(),
            lookups: Arc::default(),
            memory_reads: Arc::default(),
            respond,
            exited: Arc::default(),
            now: 1_000,
            started: None,
        }
    }
}

impl PromoterSystem for FakeSystem {
    fn mapping(&mut self, pid: u32, vaddr: u64) -> Mapping {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        if self.exited.lock().unwrap().contains(&pid) {
            return Mapping::ProcessGone;
        }
        self.mappings.get(&(pid, vaddr)).copied().unwrap_or(Mapping::Present(pfn_of(vaddr)))
    }

    fn page_flags(&mut self, pfn: u64) -> Option<u64> {
        Some(self.flags.get(&pfn).copied().unwrap_or(system::kpf::LRU))
    }

    fn node_memory(&mut self, nid: u32) -> Option<NodeMemory> {
        self.memory_reads.fetch_add(1, Ordering::Relaxed);
        self.memory.lock().unwrap().get(&nid).copied()
    }

    fn move_pages(
        &mut self,
        pid: u32,
        pages: &[u64],
        nodes: Option<&[i32]>,
        status: &mut [i32],
        flags: i32,
    ) -> io::Result<u64> {
        let call = Call { pid, pages: pages.to_vec(), nodes: nodes.map(<[i32]>::to_vec), flags };
        let r = (self.respond)(&call, status);
        // Moved pages take memory on their node, as they would.
        if let (Ok(_), Some(nodes)) = (&r, nodes) {
            for (&st, &n) in status.iter().zip(nodes) {
                if st == n
                    && let Some(m) = self.memory.lock().unwrap().get_mut(&(n as u32))
                {
                    m.free = m.free.saturating_sub(1);
                }
            }
        }
        if let Ok(mut c) = self.calls.lock() {
            c.push(call);
        }
        r
    }

    fn now_tick(&self) -> u64 {
        self.now + self.started.map_or(0, |t| t.elapsed().as_millis() as u64)
    }

    fn process_alive(&self, _pid: u32) -> bool {
        true
    }
}

/// node 0 and node 2: top tier; node 1: lower tier, nearer to node 0.
fn topo_parts(mode: RecordMode) -> (Arc<HotMap>, Targets) {
    let layout = MemoryLayout {
        nodes: vec![
            LayoutNode { id: 0, top_tier: true, ranges: vec![(0, S)] },
            LayoutNode { id: 1, top_tier: false, ranges: vec![(S, 8 * S)] },
            LayoutNode { id: 2, top_tier: true, ranges: vec![(8 * S, 9 * S)] },
        ],
    };
    let map = Arc::new(HotMap::new(&layout, HotMapConfig::defaults(mode), 1 << 16).unwrap());
    map.start();
    let targets = Targets {
        nearest: HashMap::from([(1, 0)]),
        top_tier: vec![0, 2],
        ranges: layout.all_ranges(),
        precise: mode == RecordMode::Precise,
        target_nid: None,
    };
    (map, targets)
}

/// Makes `pfn` READY (two accesses from `nid`) with a hint for `pid`; the
/// hint's tick is 750.
fn ready(map: &HotMap, pfn: u64, pid: u32, nid: i32) {
    let a = Access::new(pfn, 0, nid, source::HINT_FAULT, 500);
    map.record(&a).unwrap();
    map.record(&Access { now: 750, ..a }.mapped(pid, vaddr_of(pfn))).unwrap();
}

fn worker(
    map: &Arc<HotMap>,
    targets: Targets,
    config: PromoterConfig,
    env: FakeSystem,
) -> NodeWorker<FakeSystem> {
    let ledger = TargetLedger::new(&config);
    NodeWorker::new(1, map.clone(), Arc::new(targets), config, env, ledger, Arc::default())
}

fn unlimited() -> PromoterConfig {
    PromoterConfig { rate_limit: RateLimit::Unlimited, ..PromoterConfig::default() }
}

#[test]
fn batches_of_512_grouped_by_process() {
    let (map, targets) = topo_parts(RecordMode::Default);
    for i in 0..1500 {
        ready(&map, S + i, 7, 0);
    }
    for i in 0..100 {
        ready(&map, 2 * S + i, 8, 0);
    }
    let env = FakeSystem::new(move_all());
    let calls = env.calls.clone();
    let mut w = worker(&map, targets, unlimited(), env);
    let end = w.round(true);
    assert_eq!(end, RoundEnd { moved: 1600, limited: false });
    let calls = calls.lock().unwrap();
    let shape: Vec<(u32, usize)> = calls.iter().map(|c| (c.pid, c.pages.len())).collect();
    assert_eq!(shape, vec![(7, 512), (7, 512), (7, 476), (8, 100)]);
    assert!(calls.iter().all(|c| c.nodes.as_ref().unwrap().iter().all(|&n| n == 0)));
    assert!(calls.iter().all(|c| c.flags == move_pages::MPOL_MF_MOVE_ALL));
    assert_eq!(calls[0].pages[0], vaddr_of(S), "address order within a batch");
    let s = w.stats().snapshot();
    assert_eq!((s.candidates, s.moved, s.move_calls, s.moved_bytes), (1600, 1600, 4, 1600 * 4096));
    let by_pid = w.stats().processes();
    assert_eq!((by_pid[&7], by_pid[&8]), (1500, 100));
}

#[test]
fn precise_mode_groups_by_the_recorded_top_tier_node() {
    let (map, targets) = topo_parts(RecordMode::Precise);
    for i in 0..10 {
        ready(&map, S + i, 7, if i % 2 == 0 { 0 } else { 2 });
    }
    let env = FakeSystem::new(move_all());
    let calls = env.calls.clone();
    let mut w = worker(&map, targets, unlimited(), env);
    assert_eq!(w.round(true).moved, 10);
    let calls = calls.lock().unwrap();
    let targets: Vec<(usize, i32)> =
        calls.iter().map(|c| (c.pages.len(), c.nodes.as_ref().unwrap()[0])).collect();
    assert_eq!(targets, vec![(5, 0), (5, 2)]);
}

#[test]
fn every_per_page_status_is_counted_and_busy_pages_come_back() {
    let (map, targets) = topo_parts(RecordMode::Default);
    for i in 0..7 {
        ready(&map, S + i, 7, 0);
    }
    let statuses =
        [0, -libc::EBUSY, -libc::ENOMEM, -libc::EACCES, -libc::EFAULT, -libc::ENOENT, -libc::EPERM];
    let env = FakeSystem::new(Box::new(move |_: &Call, st: &mut [i32]| {
        st.copy_from_slice(&statuses);
        Ok(0)
    }));
    let mut w = worker(&map, targets, unlimited(), env);
    assert_eq!(w.round(true).moved, 1);
    let s = w.stats().snapshot();
    assert_eq!(
        (s.moved, s.err_ebusy, s.err_enomem, s.err_eacces, s.err_efault, s.err_enoent, s.err_other),
        (1, 1, 1, 1, 1, 1, 1)
    );
    assert_eq!(per_page_outcomes(&s), 7);
    assert_eq!(s.rearmed, 1);
    // The busy page is READY again, with its hint: the next round retries it.
    assert!(map.peek(S + 1).unwrap().ready);
    assert_eq!(map.hints().get(S + 1).map(|h| h.pid), Some(7));
    assert!(!map.peek(S + 2).unwrap().ready, "ENOMEM is not retried by re-arming");
}

/// The per-page outcome counters: every page sent to move_pages lands in
/// exactly one of them.
fn per_page_outcomes(s: &CounterSnapshot) -> u64 {
    s.moved
        + s.err_ebusy
        + s.err_enomem
        + s.err_eacces
        + s.err_efault
        + s.err_enoent
        + s.err_esrch
        + s.err_other
        + s.left_on_node
        + s.on_other_node
        + s.status_unknown
}

/// As the kernel's do_pages_move() does when a migration fails: the statuses
/// of pages 0..2 are written (the first an errno), those of the failed chunk
/// (2..4) and after are left as they were, and the call returns the count of
/// pages not migrated.
fn partial_failure(c: &Call, st: &mut [i32]) -> Option<io::Result<u64>> {
    let nodes = c.nodes.as_ref()?;
    st[0] = -libc::EBUSY;
    st[1] = nodes[1];
    Some(Ok(3))
}

#[test]
fn a_positive_return_value_keeps_the_written_statuses_and_asks_for_the_rest() {
    let (map, targets) = topo_parts(RecordMode::Default);
    for i in 0..5 {
        ready(&map, S + i, 7, 0);
    }
    let env = FakeSystem::new(Box::new(|c: &Call, st: &mut [i32]| {
        partial_failure(c, st).unwrap_or_else(|| {
            // Where the unwritten ones are: two still on node 1, one on node 2.
            st.copy_from_slice(&[1, 1, 2]);
            Ok(0)
        })
    }));
    let calls = env.calls.clone();
    let mut w = worker(&map, targets, unlimited(), env);
    assert_eq!(w.round(true).moved, 1);
    let s = w.stats().snapshot();
    assert_eq!((s.moved, s.err_ebusy, s.left_on_node, s.on_other_node), (1, 1, 2, 1));
    assert_eq!((s.not_migrated, s.move_calls, s.status_unknown), (3, 1, 0));
    assert_eq!(per_page_outcomes(&s), 5, "each status counted once");
    let calls = calls.lock().unwrap();
    assert_eq!(calls.len(), 2, "the batch and one query");
    assert_eq!(calls[1].pages, vec![vaddr_of(S + 2), vaddr_of(S + 3), vaddr_of(S + 4)], "only the unwritten");
    // The busy page and the two left behind are retried once; the EBUSY errno survived the query.
    assert_eq!(s.rearmed, 3);
    assert!(map.peek(S).unwrap().ready && map.peek(S + 2).unwrap().ready && !map.peek(S + 4).unwrap().ready);
}

#[test]
fn a_failed_query_counts_nothing_as_moved() {
    let (map, targets) = topo_parts(RecordMode::Default);
    for i in 0..4 {
        ready(&map, S + i, 7, 0);
    }
    let env = FakeSystem::new(Box::new(|c: &Call, st: &mut [i32]| {
        partial_failure(c, st).unwrap_or_else(|| Err(io::Error::from_raw_os_error(libc::ESRCH)))
    }));
    let mut w = worker(&map, targets, unlimited(), env);
    assert_eq!(w.round(true).moved, 1, "only the page whose status named the target");
    let s = w.stats().snapshot();
    assert_eq!((s.moved, s.err_ebusy, s.status_unknown), (1, 1, 2));
    assert_eq!(per_page_outcomes(&s), 4);
    assert_eq!(w.stats().latency.snapshot().count, 1);
}

#[test]
fn a_process_that_exits_during_the_call_is_counted_not_fatal() {
    let (map, targets) = topo_parts(RecordMode::Default);
    for i in 0..3 {
        ready(&map, S + i, 7, 0);
    }
    ready(&map, 2 * S, 8, 0);
    let env = FakeSystem::new(Box::new(|c: &Call, st: &mut [i32]| {
        if c.pid == 7 {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        st.copy_from_slice(c.nodes.as_ref().unwrap());
        Ok(0)
    }));
    let mut w = worker(&map, targets, unlimited(), env);
    assert_eq!(w.round(true).moved, 1, "the other process still moves");
    let s = w.stats().snapshot();
    assert_eq!((s.err_esrch, s.call_errors, s.moved), (3, 0, 1));
}

/// A process between exit_mm() and its reaping: move_pages finds the task
/// but no memory and says EINVAL. Counted as an exit, not as an error.
#[test]
fn a_process_whose_memory_went_during_the_call_is_counted_as_exited() {
    let (map, targets) = topo_parts(RecordMode::Default);
    for i in 0..3 {
        ready(&map, S + i, 7, 0);
    }
    let exited: Arc<Mutex<HashSet<u32>>> = Arc::default();
    let gone = exited.clone();
    let mut env = FakeSystem::new(Box::new(move |c: &Call, _: &mut [i32]| {
        gone.lock().unwrap().insert(c.pid);
        Err(io::Error::from_raw_os_error(libc::EINVAL))
    }));
    env.exited = exited;
    let mut w = worker(&map, targets, unlimited(), env);
    assert_eq!(w.round(true).moved, 0);
    let s = w.stats().snapshot();
    assert_eq!((s.err_esrch, s.call_errors, s.err_other), (3, 0, 0));
}

/// A call that fails as a whole counts once, its pages under their errno,
/// and the loop goes on. EINVAL from a process that still has its memory
/// is such an error, not an exit.
#[test]
fn a_failed_call_is_counted_and_the_loop_goes_on() {
    for errno in [libc::EPERM, libc::EINVAL] {
        let (map, targets) = topo_parts(RecordMode::Default);
        ready(&map, S, 7, 0);
        let env = FakeSystem::new(Box::new(move |_: &Call, _: &mut [i32]| {
            Err(io::Error::from_raw_os_error(errno))
        }));
        let mut w = worker(&map, targets, unlimited(), env);
        assert_eq!(w.round(true).moved, 0);
        let s = w.stats().snapshot();
        assert_eq!((s.err_esrch, s.call_errors, s.err_other), (0, 1, 1), "errno {errno}");
    }
}

#[test]
fn pages_are_verified_against_pagemap_before_moving() {
    let (map, targets) = topo_parts(RecordMode::Default);
    for i in 0..6 {
        ready(&map, S + i, 7, 0);
    }
    let mut env = FakeSystem::new(move_all());
    env.mappings.insert((7, vaddr_of(S)), Mapping::ProcessGone);
    env.mappings.insert((7, vaddr_of(S + 1)), Mapping::NotPresent);
    // The vaddr now maps another node-1 page (the pfn was reused): stale.
    env.mappings.insert((7, vaddr_of(S + 2)), Mapping::Present(S + 999));
    // The vaddr now maps a node-0 page: someone promoted it already.
    env.mappings.insert((7, vaddr_of(S + 3)), Mapping::Present(5));
    env.flags.insert(S + 4, 0); // off the LRU lists
    let calls = env.calls.clone();
    map.hints().take(S + 5); // evicted hint
    let cfg = PromoterConfig { check_lru: true, ..unlimited() };
    let mut w = worker(&map, targets, cfg, env);
    assert_eq!(w.round(true).moved, 0);
    let s = w.stats().snapshot();
    assert_eq!((s.process_gone, s.stale, s.already_on_target, s.not_lru, s.no_hint), (1, 2, 1, 1, 1));
    assert!(calls.lock().unwrap().is_empty(), "nothing unverified is ever moved");
}

#[test]
fn a_thp_counts_as_512_pages_by_its_event_order() {
    let (map, targets) = topo_parts(RecordMode::Default);
    ready(&map, S + 512, 7, 0);
    map.hints().insert(S + 512, Hint::new(7, vaddr_of(S + 512), 750, 9));
    let mut w = worker(&map, targets, unlimited(), FakeSystem::new(move_all()));
    assert_eq!(w.round(true).moved, 512);
    assert_eq!(w.stats().snapshot().moved_bytes, 2 << 20);
}

#[test]
fn with_the_lru_check_kpageflags_tells_a_thp() {
    let (map, targets) = topo_parts(RecordMode::Default);
    ready(&map, S + 512, 7, 0);
    let mut env = FakeSystem::new(move_all());
    env.flags.insert(S + 512, system::kpf::LRU | system::kpf::THP | system::kpf::COMPOUND_HEAD);
    let cfg = PromoterConfig { check_lru: true, ..unlimited() };
    let mut w = worker(&map, targets, cfg, env);
    assert_eq!(w.round(true).moved, 512);
}

#[test]
fn a_page_busy_twice_is_not_retried_again() {
    let (map, targets) = topo_parts(RecordMode::Default);
    ready(&map, S, 7, 0);
    let env = FakeSystem::new(Box::new(|_: &Call, st: &mut [i32]| {
        st.fill(-libc::EBUSY);
        Ok(0)
    }));
    let mut w = worker(&map, targets, unlimited(), env);
    w.round(true);
    assert!(map.peek(S).unwrap().ready, "retried once");
    w.round(true);
    assert!(!map.peek(S).unwrap().ready, "busy again: left to its next accesses");
    let s = w.stats().snapshot();
    assert_eq!((s.err_ebusy, s.rearmed), (2, 1));
}

#[test]
fn the_rate_limit_defers_the_rest_without_losing_it() {
    let (map, targets) = topo_parts(RecordMode::Default);
    for i in 0..1000 {
        ready(&map, S + i, 7, 0);
    }
    let cfg = PromoterConfig { rate_limit: RateLimit::MbPerSec(1), ..PromoterConfig::default() };
    let mut w = worker(&map, targets, cfg, FakeSystem::new(move_all()));
    let end = w.round(true);
    // 1 MB/s: one second of burst = 244 pages.
    assert_eq!(end, RoundEnd { moved: 244, limited: true });
    let s = w.stats().snapshot();
    assert_eq!((s.moved, s.rate_limited), (244, 756));
    assert_eq!(map.ready_pages(1), 756, "deferred pages are READY again");
    assert_eq!(map.hints().len(), 756);
}

#[test]
fn observe_only_moves_nothing_and_counts_what_would_move() {
    let (map, targets) = topo_parts(RecordMode::Default);
    for i in 0..1000 {
        ready(&map, S + i, 7, 0);
    }
    let cfg = PromoterConfig { rate_limit: RateLimit::ObserveOnly, ..PromoterConfig::default() };
    let env = FakeSystem::new(move_all());
    let calls = env.calls.clone();
    let mut w = worker(&map, targets, cfg, env);
    assert_eq!(w.round(true).moved, 0);
    assert_eq!(w.stats().snapshot().would_promote, 1000);
    assert!(calls.lock().unwrap().is_empty());
}

/// A 4 MiB headroom over a low watermark of 2000 pages, and 100 pages free above both.
fn room_for_100_pages() -> (PromoterConfig, FakeSystem) {
    let cfg = PromoterConfig { headroom_mib: Some(4), ..unlimited() };
    let env = FakeSystem::new(move_all());
    env.memory.lock().unwrap().insert(
        0,
        NodeMemory {
            total: 262_144,
            free: 2000 + 1024 + 100,
            low: 2000,
            demotes: false,
            kswapd_hopeless: false,
        },
    );
    (cfg, env)
}

#[test]
fn the_target_keeps_its_headroom_above_the_low_watermark() {
    let (map, targets) = topo_parts(RecordMode::Default);
    for i in 0..1000 {
        ready(&map, S + i, 7, 0);
    }
    let (cfg, env) = room_for_100_pages();
    let mut w = worker(&map, targets, cfg, env);
    let end = w.round(true);
    assert_eq!(end, RoundEnd { moved: 100, limited: true });
    let s = w.stats().snapshot();
    assert_eq!((s.moved, s.watermark_limited), (100, 900));
}

/// An environment whose node 0 is at its headroom: 1000 pages above a low
/// watermark of 2000, under the default 64 MiB headroom.
fn full_node0() -> FakeSystem {
    let env = FakeSystem::new(move_all());
    env.memory.lock().unwrap().insert(
        0,
        NodeMemory { total: 262_144, free: 3000, low: 2000, demotes: false, kswapd_hopeless: false },
    );
    env
}

#[test]
fn a_full_target_takes_nothing() {
    let (map, targets) = topo_parts(RecordMode::Default);
    for i in 0..10 {
        ready(&map, S + i, 7, 0);
    }
    let env = full_node0();
    let calls = env.calls.clone();
    let mut w = worker(&map, targets, unlimited(), env);
    assert_eq!(w.round(true), RoundEnd { moved: 0, limited: true });
    assert!(calls.lock().unwrap().is_empty());
    let s = w.stats().snapshot();
    assert_eq!((s.limited_rounds, s.candidates), (1, 0), "not even walked");
    assert_eq!(map.ready_pages(1), 10, "the pages wait READY");
}

#[test]
fn a_round_with_nothing_ready_reads_no_free_memory() {
    let (map, targets) = topo_parts(RecordMode::Default);
    let env = full_node0();
    let reads = env.memory_reads.clone();
    let mut w = worker(&map, targets, unlimited(), env);
    assert_eq!(w.round(false), RoundEnd { moved: 0, limited: false });
    let s = w.stats().snapshot();
    assert_eq!((s.rounds, s.idle_rounds, s.limited_rounds), (1, 1, 0));
    assert_eq!(reads.load(Ordering::Relaxed), 0, "an idle worker costs one load per round");
    // A READY page: the room is checked again (and the full target stops it).
    ready(&map, S, 7, 0);
    assert_eq!(w.round(true), RoundEnd { moved: 0, limited: true });
    assert!(reads.load(Ordering::Relaxed) >= 1);
    assert_eq!(w.stats().snapshot().limited_rounds, 1);
}

#[test]
fn default_headroom_is_64_mib_or_a_64th_of_the_node() {
    let c = PromoterConfig::default();
    assert_eq!(c.headroom_pages(262_144), 64 << 8, "1 GiB node: 64 MiB");
    assert_eq!(c.headroom_pages(64 << 18), (64 << 18) / 64, "64 GiB node: 1 GiB");
}

#[test]
fn latency_runs_from_ready_to_moved() {
    let (map, targets) = topo_parts(RecordMode::Default);
    ready(&map, S, 7, 0); // hint tick 750
    let mut env = FakeSystem::new(move_all());
    env.now = 1_000;
    let mut w = worker(&map, targets, unlimited(), env);
    w.round(true);
    let l = w.stats().latency.snapshot();
    assert_eq!((l.count, l.sum_ms), (1, 250));
    assert_eq!(l.quantile_ms(0.5), Some(500));
}

#[test]
fn config_limits() {
    assert!(PromoterConfig { sleep_ms: 0, ..PromoterConfig::default() }.validate().is_err());
    assert!(PromoterConfig { batch_pages: 0, ..PromoterConfig::default() }.validate().is_err());
    PromoterConfig::default().validate().unwrap();
}

#[test]
fn worker_threads_wake_on_ready_pages_and_stop_cleanly() {
    let (map, targets) = topo_parts(RecordMode::Default);
    let calls = Arc::new(Mutex::new(Vec::new()));
    let cfg = PromoterConfig { sleep_ms: 60_000, ..unlimited() };
    let c2 = calls.clone();
    let promoter = Promoter::start(map.clone(), targets, cfg, move |_| {
        let mut e = FakeSystem::new(move_all());
        e.calls = c2.clone();
        e
    })
    .unwrap();
    // The worker sleeps for a minute unless the map wakes it.
    std::thread::sleep(Duration::from_millis(50));
    for i in 0..10 {
        ready(&map, S + i, 7, 0);
    }
    let t = Instant::now();
    while promoter.reports()[0].counters.moved < 10 {
        assert!(t.elapsed() < Duration::from_secs(10), "the worker was not woken");
        std::thread::sleep(Duration::from_millis(5));
    }
    let r = promoter.reports();
    assert_eq!((r[0].node, r[0].target), (1, Some(0)));
    assert!(r[0].counters.wakeups >= 1);
    promoter.stop();
    // One call, or more when the first ready page woke the worker before the
    // tenth was ready (a busy machine): each page moved once.
    let calls = calls.lock().unwrap();
    assert!((1..=10).contains(&calls.len()), "{} calls", calls.len());
    assert_eq!(calls.iter().map(|c| c.pages.len()).sum::<usize>(), 10);
}

#[test]
fn target_nid_is_the_target_in_default_mode() {
    let (map, mut targets) = topo_parts(RecordMode::Default);
    targets.target_nid = Some(2);
    for i in 0..3 {
        ready(&map, S + i, 7, 0);
    }
    let env = FakeSystem::new(move_all());
    let calls = env.calls.clone();
    let mut w = worker(&map, targets, unlimited(), env);
    assert_eq!(w.round(true).moved, 3);
    let calls = calls.lock().unwrap();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].nodes.as_ref().unwrap().iter().all(|&n| n == 2), "node 2, not the nearest node 0");
}

#[test]
fn without_target_nid_a_node_promotes_to_its_nearest_top_tier_node() {
    let (_, targets) = topo_parts(RecordMode::Default);
    assert_eq!(targets.default_target(1), Some(0));
    let with = Targets { target_nid: Some(2), ..targets.clone() };
    assert_eq!(with.default_target(1), Some(2));
    // A target that is not top tier is never used.
    let bad = Targets { target_nid: Some(1), ..targets };
    assert_eq!(bad.default_target(1), Some(0));
}

/// node 0 top tier; nodes 1 and 3 lower tier, both nearest to node 0.
fn two_lower_nodes() -> (Arc<HotMap>, Targets) {
    let layout = MemoryLayout {
        nodes: vec![
            LayoutNode { id: 0, top_tier: true, ranges: vec![(0, S)] },
            LayoutNode { id: 1, top_tier: false, ranges: vec![(S, 2 * S)] },
            LayoutNode { id: 3, top_tier: false, ranges: vec![(2 * S, 3 * S)] },
        ],
    };
    let map = Arc::new(HotMap::new(&layout, HotMapConfig::default(), 1 << 16).unwrap());
    map.start();
    let targets = Targets {
        nearest: HashMap::from([(1, 0), (3, 0)]),
        top_tier: vec![0],
        ranges: layout.all_ranges(),
        precise: false,
        target_nid: None,
    };
    (map, targets)
}

#[test]
fn workers_of_two_nodes_share_the_targets_headroom() {
    let (map, targets) = two_lower_nodes();
    let (targets, cfg) = (Arc::new(targets), unlimited());
    let ledger = TargetLedger::new(&cfg);
    let memory = SharedMemory::default();
    // 1 GiB node 0: low 2000, headroom 64 MiB; 101 pages above that.
    let headroom = cfg.headroom_pages(262_144);
    memory.lock().unwrap().insert(
        0,
        NodeMemory {
            total: 262_144,
            free: 2000 + headroom + 101,
            low: 2000,
            demotes: false,
            kswapd_hopeless: false,
        },
    );
    let mut workers: Vec<NodeWorker<FakeSystem>> = [1, 3]
        .into_iter()
        .map(|nid| {
            let mut env = FakeSystem::new(move_all());
            env.memory = memory.clone();
            NodeWorker::new(nid, map.clone(), targets.clone(), cfg, env, ledger.clone(), Arc::default())
        })
        .collect();
    // Each worker reads node 0's memory once with a page of its own...
    ready(&map, S, 7, 0);
    ready(&map, 2 * S, 7, 0);
    let first: u64 = workers.iter_mut().map(|w| w.round(true).moved).sum();
    assert_eq!(first, 2);
    // ...then both promote 100 pages while that reading is still fresh.
    for i in 1..=100 {
        ready(&map, S + i, 7, 0);
        ready(&map, 2 * S + i, 7, 0);
    }
    let second: u64 = workers.iter_mut().map(|w| w.round(true).moved).sum();
    assert_eq!(second, 99, "together they fill only the 101 pages above the headroom");
    let free = memory.lock().unwrap()[&0].free;
    assert_eq!(free, 2000 + headroom, "node 0 ends at its low watermark plus the headroom");
    // Node 1's last page waits re-armed; node 3's worker saw no room and left its pages READY.
    assert_eq!(workers[0].stats().snapshot().watermark_limited, 1);
    assert_eq!(workers[1].stats().snapshot().limited_rounds, 1);
    assert_eq!((map.ready_pages(1), map.ready_pages(3)), (1, 100));
}

#[test]
fn a_full_target_costs_a_bounded_number_of_rounds() {
    let (map, targets) = topo_parts(RecordMode::Default);
    for i in 0..2000 {
        ready(&map, S + i, 7, 0);
    }
    let memory = SharedMemory::default();
    memory.lock().unwrap().insert(
        0,
        NodeMemory { total: 262_144, free: 3000, low: 2000, demotes: false, kswapd_hopeless: false },
    );
    let cfg = PromoterConfig { sleep_ms: 20, ..unlimited() };
    let lookups = Arc::new(AtomicU64::new(0));
    let (m, l) = (memory.clone(), lookups.clone());
    let started = Instant::now();
    let promoter = Promoter::start(map.clone(), targets, cfg, move |_| {
        let mut e = FakeSystem::new(move_all());
        e.memory = m.clone();
        e.lookups = l.clone();
        e.started = Some(Instant::now());
        e
    })
    .unwrap();
    // New pages keep turning ready meanwhile, waking the worker.
    for i in 0..20 {
        ready(&map, 4 * S + i, 7, 0);
        std::thread::sleep(Duration::from_millis(25));
    }
    let c = promoter.reports()[0].counters;
    let elapsed = started.elapsed().as_millis() as u64;
    // One round per sleep while limited, plus one per wake-up that found room.
    let bound = elapsed / cfg.sleep_ms + 3;
    assert!(c.rounds <= bound, "{} rounds in {elapsed} ms (bound {bound})", c.rounds);
    assert_eq!((c.moved, c.candidates), (0, 0), "nothing walked while nothing can move");
    assert_eq!(lookups.load(Ordering::Relaxed), 0, "no pagemap reads");
    assert!(c.limited_rounds >= 1);
    // Room again: the waiting pages move.
    memory.lock().unwrap().insert(
        0,
        NodeMemory { total: 262_144, free: 200_000, low: 2000, demotes: false, kswapd_hopeless: false },
    );
    let t = Instant::now();
    while promoter.reports()[0].counters.moved < 2020 {
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", promoter.reports()[0].counters);
        std::thread::sleep(Duration::from_millis(5));
    }
    promoter.stop();
}

#[test]
fn a_rearmed_page_does_not_wake_its_worker() {
    let (map, targets) = topo_parts(RecordMode::Default);
    let wakes = Arc::new(AtomicU64::new(0));
    let w2 = wakes.clone();
    map.set_waker(
        1,
        Arc::new(move || {
            w2.fetch_add(1, Ordering::Relaxed);
        }),
    );
    ready(&map, S, 7, 0);
    assert_eq!(wakes.load(Ordering::Relaxed), 1, "a newly ready page wakes it");
    assert!(map.take_activate(1));
    let env = FakeSystem::new(Box::new(|_: &Call, st: &mut [i32]| {
        st.fill(-libc::EBUSY);
        Ok(0)
    }));
    let mut w = worker(&map, targets, unlimited(), env);
    w.round(true);
    assert_eq!(w.stats().snapshot().rearmed, 1);
    assert_eq!(wakes.load(Ordering::Relaxed), 1, "the re-arm flagged without waking");
    assert!(map.take_activate(1), "but the next timed round finds it");
}

#[test]
fn a_large_folio_moves_by_its_first_page_and_counts_all_its_pages() {
    let (map, targets) = topo_parts(RecordMode::Default);
    // A 64 KiB folio (order 4) at S + 16: an access to its 6th page records at
    // the head with the head's address (as the hint-fault program emits it).
    let head = S + 16;
    for now in [500, 600] {
        map.record(&Access::new(head + 5, 4, 0, source::HINT_FAULT, now).mapped(7, vaddr_of(head))).unwrap();
    }
    let env = FakeSystem::new(move_all());
    let calls = env.calls.clone();
    let mut w = worker(&map, targets, unlimited(), env);
    assert_eq!(w.round(true).moved, 16);
    assert_eq!(calls.lock().unwrap()[0].pages, vec![vaddr_of(head)]);
    assert_eq!(w.stats().snapshot().moved_bytes, 16 * 4096);
}

/// The target has room for 100 of 1000 READY pages: the 100 with the lowest
/// latency scores move, the rest wait READY for a later round.
#[test]
fn when_the_target_is_short_the_hottest_pages_go_first() {
    let (map, targets) = topo_parts(RecordMode::Default);
    let layout = MemoryLayout {
        nodes: vec![
            LayoutNode { id: 0, top_tier: true, ranges: vec![(0, S)] },
            LayoutNode { id: 1, top_tier: false, ranges: vec![(S, 8 * S)] },
        ],
    };
    let scores = Arc::new(PageScores::new(&layout));
    for i in 0..1000 {
        ready(&map, S + i, 7, 0);
        // Every tenth page faults within ~20 ms of the scan, the rest after ~500.
        let ms = if i % 10 == 3 { 20 } else { 500 };
        scores.update(S + i, |s| s.after(ms).after(ms));
    }
    let (cfg, env) = room_for_100_pages();
    let calls = env.calls.clone();
    let mut w = worker(&map, targets, cfg, env).ranked_by(Some(scores.clone()));
    assert_eq!(w.round(true), RoundEnd { moved: 100, limited: true });
    let moved: Vec<u64> =
        calls.lock().unwrap().iter().flat_map(|c| c.pages.iter().map(|&v| pfn_of(v))).collect();
    assert_eq!(moved.len(), 100);
    assert!(moved.iter().all(|p| (p - S) % 10 == 3), "only the fast pages moved");
    let s = w.stats().snapshot();
    assert_eq!((s.moved, s.colder_deferred), (100, 900));
    assert_eq!(map.ready_pages(1), 900, "the colder pages wait READY");
    assert!(scores.get(S + 3).is_none(), "a promoted page's score is forgotten");
}

#[test]
fn with_demotion_on_the_floor_drops_under_the_low_watermark() {
    let m = NodeMemory { total: 262_144, free: 10_000, low: 2000, demotes: false, kswapd_hopeless: false };
    let auto = PromoterConfig::default();
    assert_eq!(auto.floor_pages(&m), 2000 + (64 << 8), "low watermark + 64 MiB");
    let demotes = NodeMemory { demotes: true, ..m };
    assert_eq!(auto.floor_pages(&demotes), 1750, "an allocation there wakes kswapd, which demotes");
    let hopeless = NodeMemory { kswapd_hopeless: true, ..demotes };
    assert_eq!(auto.floor_pages(&hopeless), 0, "kswapd is not woken: the allocations reclaim directly");
    let asked = PromoterConfig { headroom_mib: Some(4), ..auto };
    assert_eq!(asked.floor_pages(&demotes), 2000 + 1024, "an operator's headroom stands");
}
