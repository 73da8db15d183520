//! Promoter tests with an injected environment: batching, grouping, every
//! status and errno, the positive return value, the rate limit, observe-only,
//! the headroom watermark, verification, latency; then the worker threads.

use std::{
    collections::HashMap,
    io,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hotpage_common::{PAGES_PER_SECTION as S, source};

use super::*;
use crate::hotmap::{Hint, HotMapConfig, LayoutNode, MemoryLayout, RecordMode};

#[derive(Clone, Debug, PartialEq, Eq)]
struct Call {
    pid: u32,
    pages: Vec<u64>,
    nodes: Option<Vec<i32>>,
    flags: i32,
}

type Responder = Box<dyn FnMut(&Call, &mut [i32]) -> io::Result<u64> + Send>;

struct FakeEnv {
    /// Overrides of where (pid, vaddr) maps; by default the hint's own pfn.
    mappings: HashMap<(u32, u64), Mapping>,
    flags: HashMap<u64, u64>,
    memory: HashMap<u32, NodeMemory>,
    calls: Arc<Mutex<Vec<Call>>>,
    respond: Responder,
    now: u64,
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

impl FakeEnv {
    fn new(respond: Responder) -> Self {
        Self {
            mappings: HashMap::new(),
            flags: HashMap::new(),
            memory: HashMap::new(),
            calls: Arc::default(),
            respond,
            now: 1_000,
        }
    }
}

impl PromoterEnv for FakeEnv {
    fn mapping(&mut self, pid: u32, vaddr: u64) -> Mapping {
        self.mappings.get(&(pid, vaddr)).copied().unwrap_or(Mapping::Present(pfn_of(vaddr)))
    }

    fn page_flags(&mut self, pfn: u64) -> Option<u64> {
        Some(self.flags.get(&pfn).copied().unwrap_or(env::kpf::LRU))
    }

    fn node_memory(&mut self, nid: u32) -> Option<NodeMemory> {
        self.memory.get(&nid).copied()
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
                    && let Some(m) = self.memory.get_mut(&(n as u32))
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
        self.now
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
        ranges: vec![(0, S, 0), (S, 8 * S, 1), (8 * S, 9 * S, 2)],
        precise: mode == RecordMode::Precise,
    };
    (map, targets)
}

/// Makes `pfn` READY (two accesses from `nid`) with a hint for `pid`.
fn ready(map: &HotMap, pfn: u64, pid: u32, nid: i32) {
    // The hint first: a running worker may take the page the moment it is READY.
    map.hints().insert(pfn, Hint::new(pid, vaddr_of(pfn), 750, 0));
    map.record_access(pfn, 0, nid, source::HINT_FAULT, 500).unwrap();
    map.record_access(pfn, 0, nid, source::HINT_FAULT, 501).unwrap();
}

fn worker(map: &Arc<HotMap>, targets: Targets, config: PromoterConfig, env: FakeEnv) -> NodeWorker<FakeEnv> {
    NodeWorker::new(1, map.clone(), Arc::new(targets), config, env, Buckets::default(), Arc::default())
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
    let env = FakeEnv::new(move_all());
    let calls = env.calls.clone();
    let mut w = worker(&map, targets, unlimited(), env);
    let end = w.round(true);
    assert_eq!(end, RoundEnd { moved: 1600, limited: false });
    let calls = calls.lock().unwrap();
    let shape: Vec<(u32, usize)> = calls.iter().map(|c| (c.pid, c.pages.len())).collect();
    assert_eq!(shape, vec![(7, 512), (7, 512), (7, 476), (8, 100)]);
    assert!(calls.iter().all(|c| c.nodes.as_ref().unwrap().iter().all(|&n| n == 0)));
    assert!(calls.iter().all(|c| c.flags == crate::page_migration::MPOL_MF_MOVE_ALL));
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
    let env = FakeEnv::new(move_all());
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
    let env = FakeEnv::new(Box::new(move |_: &Call, st: &mut [i32]| {
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
    assert_eq!(s.rearmed, 1);
    // The busy page is READY again, with its hint: the next round retries it.
    assert!(map.peek(S + 1).unwrap().ready);
    assert_eq!(map.hints().get(S + 1).map(|h| h.pid), Some(7));
    assert!(!map.peek(S + 2).unwrap().ready, "ENOMEM is not retried by re-arming");
}

#[test]
fn a_positive_return_value_is_checked_page_by_page() {
    let (map, targets) = topo_parts(RecordMode::Default);
    for i in 0..4 {
        ready(&map, S + i, 7, 0);
    }
    let env = FakeEnv::new(Box::new(|c: &Call, st: &mut [i32]| match &c.nodes {
        // "2 pages not migrated", with statuses that claim the target for all.
        Some(n) => {
            st.copy_from_slice(n);
            Ok(2)
        }
        // Where they really are: the last two are still on node 1.
        None => {
            st.copy_from_slice(&[0, 0, 1, 1]);
            Ok(0)
        }
    }));
    let calls = env.calls.clone();
    let mut w = worker(&map, targets, unlimited(), env);
    assert_eq!(w.round(true).moved, 2);
    let s = w.stats().snapshot();
    assert_eq!((s.moved, s.not_migrated, s.move_calls), (2, 2, 1));
    assert_eq!(calls.lock().unwrap().len(), 2, "the batch and one query");
}

#[test]
fn a_process_that_exits_during_the_call_is_counted_not_fatal() {
    let (map, targets) = topo_parts(RecordMode::Default);
    for i in 0..3 {
        ready(&map, S + i, 7, 0);
    }
    ready(&map, 2 * S, 8, 0);
    let env = FakeEnv::new(Box::new(|c: &Call, st: &mut [i32]| {
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

#[test]
fn a_failed_call_is_counted_and_the_loop_goes_on() {
    let (map, targets) = topo_parts(RecordMode::Default);
    ready(&map, S, 7, 0);
    let env =
        FakeEnv::new(Box::new(|_: &Call, _: &mut [i32]| Err(io::Error::from_raw_os_error(libc::EPERM))));
    let mut w = worker(&map, targets, unlimited(), env);
    assert_eq!(w.round(true).moved, 0);
    let s = w.stats().snapshot();
    assert_eq!((s.call_errors, s.err_other), (1, 1));
}

#[test]
fn pages_are_verified_against_pagemap_before_moving() {
    let (map, targets) = topo_parts(RecordMode::Default);
    for i in 0..6 {
        ready(&map, S + i, 7, 0);
    }
    let mut env = FakeEnv::new(move_all());
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
    let mut w = worker(&map, targets, unlimited(), FakeEnv::new(move_all()));
    assert_eq!(w.round(true).moved, 512);
    assert_eq!(w.stats().snapshot().moved_bytes, 2 << 20);
}

#[test]
fn with_the_lru_check_kpageflags_tells_a_thp() {
    let (map, targets) = topo_parts(RecordMode::Default);
    ready(&map, S + 512, 7, 0);
    let mut env = FakeEnv::new(move_all());
    env.flags.insert(S + 512, env::kpf::LRU | env::kpf::THP | env::kpf::COMPOUND_HEAD);
    let cfg = PromoterConfig { check_lru: true, ..unlimited() };
    let mut w = worker(&map, targets, cfg, env);
    assert_eq!(w.round(true).moved, 512);
}

#[test]
fn a_page_busy_twice_is_not_retried_again() {
    let (map, targets) = topo_parts(RecordMode::Default);
    ready(&map, S, 7, 0);
    let env = FakeEnv::new(Box::new(|_: &Call, st: &mut [i32]| {
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
    let mut w = worker(&map, targets, cfg, FakeEnv::new(move_all()));
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
    let env = FakeEnv::new(move_all());
    let calls = env.calls.clone();
    let mut w = worker(&map, targets, cfg, env);
    assert_eq!(w.round(true).moved, 0);
    assert_eq!(w.stats().snapshot().would_promote, 1000);
    assert!(calls.lock().unwrap().is_empty());
}

#[test]
fn the_target_keeps_its_headroom_above_the_low_watermark() {
    let (map, targets) = topo_parts(RecordMode::Default);
    for i in 0..1000 {
        ready(&map, S + i, 7, 0);
    }
    let cfg = PromoterConfig { headroom_mib: Some(4), ..unlimited() };
    let mut env = FakeEnv::new(move_all());
    // low 2000 pages + headroom 1024 pages; 100 pages above that are free.
    env.memory.insert(0, NodeMemory { total: 262_144, free: 2000 + 1024 + 100, low: 2000 });
    let mut w = worker(&map, targets, cfg, env);
    let end = w.round(true);
    assert_eq!(end, RoundEnd { moved: 100, limited: true });
    let s = w.stats().snapshot();
    assert_eq!((s.moved, s.watermark_limited), (100, 900));
}

#[test]
fn a_full_target_takes_nothing() {
    let (map, targets) = topo_parts(RecordMode::Default);
    for i in 0..10 {
        ready(&map, S + i, 7, 0);
    }
    let mut env = FakeEnv::new(move_all());
    env.memory.insert(0, NodeMemory { total: 262_144, free: 3000, low: 2000 });
    let calls = env.calls.clone();
    let mut w = worker(&map, targets, unlimited(), env);
    assert_eq!(w.round(true), RoundEnd { moved: 0, limited: true });
    assert!(calls.lock().unwrap().is_empty());
    assert_eq!(w.stats().snapshot().watermark_limited, 10);
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
    let mut env = FakeEnv::new(move_all());
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
        let mut e = FakeEnv::new(move_all());
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
    assert_eq!(calls.lock().unwrap().len(), 1);
}
