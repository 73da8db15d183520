//! The promoter: a kmigrated-equivalent worker per lower-tier node.
//!
//! Each worker waits for its node's activate flag (set by the hot map when a
//! page of the node becomes ready) for at most `sleep_ms`, walks only its own
//! node's flagged sections, takes the READY records, re-verifies every page
//! against `/proc/<pid>/pagemap`, and promotes with `move_pages(2)` in batches
//! grouped by (pid, target node). A rate limit per target node and a headroom
//! watermark on the target bound what moves; pages that must wait get their
//! record re-armed rather than losing their hotness.

pub mod ledger;
pub mod move_pages;
pub mod rate;
pub mod stats;
pub mod system;
mod targets;
mod worker;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde::Serialize;
use thiserror::Error;

pub use ledger::TargetLedger;
pub use rate::{RateLimit, TokenBucket};
pub use stats::{Counter, CounterSnapshot, LatencySnapshot, NodeStats};
pub use system::{LiveSystem, Mapping, NodeMemory, PromoterSystem};
pub use targets::Targets;
pub use worker::{NodeWorker, RoundEnd};

use crate::{hotmap::HotMap, rule::PageScores};

/// The promoter's knobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PromoterConfig {
    /// Longest wait for the node's activate flag, ms (`kmigrated_sleep_ms`, 50–1000).
    pub sleep_ms: u64,
    /// Pages per `move_pages` call (`kmigrated_batch_nr`, 64–1024 in the kernel;
    /// move_pages batches unmap and TLB flush per 512).
    pub batch_pages: usize,
    /// READY pages one round takes at most; the walk resumes in the next round.
    pub max_round_pages: usize,
    /// Promotion rate per target node.
    pub rate_limit: RateLimit,
    /// Free memory kept on a target above its low watermark, MiB; None: the
    /// larger of 64 MiB and 1/64 of the node.
    pub headroom_mib: Option<u64>,
    /// Also move pages other processes map too (MPOL_MF_MOVE_ALL).
    pub move_shared: bool,
    /// Re-arm a page's record once when move_pages says EBUSY (transient).
    pub rearm_busy: bool,
    /// Skip pages that kpageflags shows off the LRU lists, before the call
    /// (costs a kpageflags read per batch; move_pages refuses them anyway).
    pub check_lru: bool,
}

impl Default for PromoterConfig {
    fn default() -> Self {
        Self {
            sleep_ms: 100,
            batch_pages: 512,
            max_round_pages: 16384,
            rate_limit: RateLimit::MbPerSec(1024),
            headroom_mib: None,
            move_shared: true,
            rearm_busy: true,
            check_lru: false,
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PromoterError {
    #[error("sleep {0} ms is outside 1..=60000 ms")]
    Sleep(u64),
    #[error("batch of {0} pages is outside 1..=65536")]
    Batch(usize),
    #[error("no lower-tier node has memory to promote from")]
    NoLowerTier,
    #[error("lower-tier node {0} has no top-tier node to promote to")]
    NoTarget(u32),
}

impl PromoterConfig {
    pub fn validate(&self) -> Result<(), PromoterError> {
        if !(1..=60_000).contains(&self.sleep_ms) {
            return Err(PromoterError::Sleep(self.sleep_ms));
        }
        if !(1..=65_536).contains(&self.batch_pages) {
            return Err(PromoterError::Batch(self.batch_pages));
        }
        Ok(())
    }

    /// Free pages a promotion must leave on a target: its low watermark plus
    /// the headroom; when the kernel demotes (`demotion_enabled`) and no
    /// headroom was asked for, a little under the low watermark, as the
    /// kernel's own promotion does: the allocation wakes kswapd, which demotes
    /// the node's coldest pages to make the room (the "tight" case). When the
    /// kernel has given up waking kswapd for the node (`node_unreclaimable`),
    /// no floor: the allocations then go down to the min watermark and
    /// reclaim (demote) directly, whose progress makes kswapd wakeable again.
    /// Otherwise every promotion waits for a kswapd that never comes (three
    /// "tight" runs of the bench stalled so, the kernel's own promotion too).
    pub fn floor_pages(&self, m: &NodeMemory) -> u64 {
        if m.demotes && self.headroom_mib.is_none() {
            return if m.kswapd_hopeless { 0 } else { m.low - m.low / 8 };
        }
        m.low.saturating_add(self.headroom_pages(m.total))
    }

    /// Whether promotions to this target lean on kswapd to demote for them:
    /// under the floor, a few pages still go now and then
    /// ([`ledger::WAKE_PAGES`]), since their allocation under the low
    /// watermark is what wakes kswapd.
    pub fn wakes_kswapd(&self, m: &NodeMemory) -> bool {
        m.demotes && self.headroom_mib.is_none() && !m.kswapd_hopeless
    }

    /// Headroom in pages for a target node of `total` pages.
    pub fn headroom_pages(&self, total: u64) -> u64 {
        match self.headroom_mib {
            Some(mib) => mib << 8,
            None => (64u64 << 8).max(total / 64),
        }
    }
}

/// Parks until `deadline` or until `stop` is set (stopping unparks the thread).
fn sleep_until(deadline: Instant, stop: &AtomicBool) {
    loop {
        let now = Instant::now();
        if now >= deadline || stop.load(Ordering::Acquire) {
            return;
        }
        std::thread::park_timeout(deadline - now);
    }
}

/// A node's counters and latency, for stats.
#[derive(Clone, Debug, Serialize)]
pub struct NodeReport {
    pub node: u32,
    pub target: Option<u32>,
    pub counters: CounterSnapshot,
    pub latency: LatencySnapshot,
}

/// A handle for reading the workers' counters, cloneable and cheap.
#[derive(Clone, Default)]
pub struct PromoterReporter {
    stats: Vec<(u32, Arc<NodeStats>)>,
    targets: Arc<Targets>,
}

impl PromoterReporter {
    pub fn reports(&self) -> Vec<NodeReport> {
        self.stats
            .iter()
            .map(|(nid, s)| NodeReport {
                node: *nid,
                target: self.targets.default_target(*nid),
                counters: s.snapshot(),
                latency: s.latency.snapshot(),
            })
            .collect()
    }

    /// Base pages promoted per process, all nodes.
    pub fn processes(&self) -> HashMap<u32, u64> {
        let mut all = HashMap::new();
        for (_, s) in &self.stats {
            for (pid, n) in s.processes() {
                *all.entry(pid).or_default() += n;
            }
        }
        all
    }
}

/// The running workers.
pub struct Promoter {
    stop: Arc<AtomicBool>,
    workers: Vec<(u32, JoinHandle<()>)>,
    stats: Vec<(u32, Arc<NodeStats>)>,
    targets: Arc<Targets>,
    config: PromoterConfig,
}

impl Promoter {
    /// Starts one worker thread per lower-tier node of the map (`kmigrated%d`),
    /// each with its own environment from `make_env`, and marks the map started.
    pub fn start<E: PromoterSystem + 'static>(
        map: Arc<HotMap>,
        targets: Targets,
        config: PromoterConfig,
        make_env: impl Fn(u32) -> E,
    ) -> Result<Self, PromoterError> {
        Self::start_ranked(map, targets, config, None, make_env)
    }

    /// `start()`, with the hotness rule's page scores: when a target cannot
    /// take every READY page, the hottest go first.
    pub fn start_ranked<E: PromoterSystem + 'static>(
        map: Arc<HotMap>,
        targets: Targets,
        config: PromoterConfig,
        scores: Option<Arc<PageScores>>,
        make_env: impl Fn(u32) -> E,
    ) -> Result<Self, PromoterError> {
        config.validate()?;
        let nodes = map.lower_tier_nodes();
        if nodes.is_empty() {
            return Err(PromoterError::NoLowerTier);
        }
        for &n in &nodes {
            targets.default_target(n).ok_or(PromoterError::NoTarget(n))?;
        }
        let targets = Arc::new(targets);
        let stop = Arc::new(AtomicBool::new(false));
        let ledger = TargetLedger::new(&config);
        let mut workers = Vec::new();
        let mut stats = Vec::new();
        for nid in nodes {
            let node_stats = Arc::new(NodeStats::default());
            stats.push((nid, node_stats.clone()));
            let mut worker = NodeWorker::new(
                nid,
                map.clone(),
                targets.clone(),
                config,
                make_env(nid),
                ledger.clone(),
                node_stats,
            )
            .ranked_by(scores.clone());
            let (map, stop) = (map.clone(), stop.clone());
            let sleep = Duration::from_millis(config.sleep_ms);
            let handle = std::thread::Builder::new()
                .name(format!("kmigrated{nid}"))
                .spawn(move || {
                    let me = std::thread::current();
                    map.set_waker(nid, Arc::new(move || me.unpark()));
                    let mut limited = false;
                    while !stop.load(Ordering::Acquire) {
                        let activated = if limited {
                            // The rate limit or the target's headroom stopped the
                            // last round: back off for the whole sleep, whatever
                            // wakes the thread, or it would walk and defer again
                            // back to back.
                            sleep_until(Instant::now() + sleep, &stop);
                            map.take_activate(nid)
                        } else if map.take_activate(nid) {
                            true
                        } else {
                            std::thread::park_timeout(sleep);
                            map.take_activate(nid)
                        };
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                        limited = worker.round(activated).limited;
                    }
                })
                .map_err(|_| PromoterError::NoLowerTier)?;
            workers.push((nid, handle));
        }
        map.start();
        Ok(Self { stop, workers, stats, targets, config })
    }

    pub fn config(&self) -> &PromoterConfig {
        &self.config
    }

    pub fn reporter(&self) -> PromoterReporter {
        PromoterReporter { stats: self.stats.clone(), targets: self.targets.clone() }
    }

    pub fn reports(&self) -> Vec<NodeReport> {
        self.reporter().reports()
    }

    /// Stops and joins the workers (each finishes its current batch).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        for (_, h) in &self.workers {
            h.thread().unpark();
        }
        for (nid, h) in self.workers.drain(..) {
            if h.join().is_err() {
                tracing::error!("promoter worker of node {nid} panicked");
            }
        }
    }
}

impl Drop for Promoter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests;
