//! Replay: a recording's events fed through the real hot map (the same
//! feeder the daemon uses) on the recorded clock, and either
//! - the hot map's recorded takes and re-arms put back where they happened
//!   ("as recorded": the same READY decisions as the live daemon), or
//! - a simulated promoter: the real node worker (`NodeWorker`) over a
//!   simulated system whose target node has the recorded (or given) free
//!   memory, run when the live worker would run (its activate flag, its
//!   sleep), on the recorded clock.
//!
//! A simulated promotion takes the page off the lower tier: later recorded
//! events on its pfn are dropped, as the page would have faulted on node 0.
//! So the recording to compare rules on is one where nothing moved (an
//! observe-only daemon, or `hotpage record`).

use std::{
    collections::{HashMap, VecDeque},
    io,
    sync::{Arc, Mutex},
};

use hotpage_common::{HotpageEvent, event_flags, folio_pages};
use serde::Serialize;
use thiserror::Error;

use super::{
    format::{FormatError, Header, Reader, Trailer},
    truth::{Truth, TruthScore},
};
use crate::{
    collector::{FeedStats, HotMapFeeder},
    daemon::config::RunConfig,
    hotmap::{ConfigError, HotMap, HotMapConfig, HotMapCounters, MapChange, MemoryLayout, PfnMap, Recorded},
    promoter::{
        CounterSnapshot, Mapping, NodeMemory, NodeStats, NodeWorker, PromoterConfig, PromoterError,
        PromoterSystem, TargetLedger, Targets,
    },
    rule::{HotnessRule, MoveSpan, NodeThreshold, Policy, RuleReport, latency::LatencyHistogram},
    sys::clock::ns_to_tick,
};

/// Events fed to the map at once.
const BATCH: usize = 256;
/// Events decoded at once.
const CHUNK: usize = 4 * LOOKAHEAD;
/// Events held back so that a change written after later events still lands
/// at its place: the recorder writes the changes of one collector batch (at
/// most 256 events) before the next batch's events.
const LOOKAHEAD: usize = 4096;

#[derive(Debug, Error)]
pub enum ReplayError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("reading {0}: {1}")]
    Read(String, io::Error),
    #[error("the recording's hot map settings: {0}")]
    HotMap(#[from] ConfigError),
    #[error("the promoter's settings: {0}")]
    Promoter(#[from] PromoterError),
    #[error(
        "{0} was recorded without the hot map's takes (by `hotpage record`, or with --pid): it can only be simulated"
    )]
    NoChanges(String),
}

/// How to replay.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    pub hotmap: HotMapConfig,
    pub hint_capacity: usize,
    pub promoter: PromoterConfig,
    pub target_nid: Option<u32>,
    /// Which hint faults count (the hotness rule).
    pub policy: Policy,
    /// Free memory of every top-tier node at the start, pages (default: as recorded).
    pub top_tier_free_pages: Option<u64>,
    /// Put back the recorded takes and re-arms instead of simulating a promoter.
    pub as_recorded: bool,
    /// Timeline resolution, ms.
    pub step_ms: u64,
}

impl ReplayOptions {
    /// Replays with the knobs of a resolved configuration (the recording's,
    /// `FileConfig::of_recording`, with flags on top).
    pub fn new(cfg: &RunConfig) -> Self {
        Self {
            hotmap: cfg.hotmap,
            hint_capacity: cfg.hint_capacity,
            promoter: cfg.promoter,
            target_nid: cfg.target_nid,
            policy: cfg.policy,
            top_tier_free_pages: None,
            as_recorded: false,
            step_ms: 1000,
        }
    }
}

/// One step of the timeline (cumulative counts).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Step {
    /// Seconds since the recording started.
    pub t_s: f64,
    pub events: u64,
    /// Accesses that made a page READY.
    pub ready: u64,
    /// Base pages promoted (simulated) or taken (as recorded).
    pub promoted_pages: u64,
    /// Hot base pages promoted so far, with a ground truth.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hot_promoted_pages: Option<u64>,
    /// Each lower-tier node's "fast" as the rule drew it then (the latency
    /// policy): where a replay stalls, this says whether the threshold did.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fast: Vec<NodeThreshold>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ProcessReplay {
    pub pid: u32,
    pub events: u64,
    pub ready: u64,
    pub promoted_pages: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReplayReport {
    pub mode: &'static str,
    pub kernel: String,
    pub events: u64,
    /// Events on pages the simulated promoter had moved, not fed.
    pub dropped_after_promotion: u64,
    pub duration_s: f64,
    pub feed: FeedStats,
    pub hotmap: HotMapCounters,
    /// The simulated promoter's counters, all lower-tier nodes summed.
    pub promoter: Option<CounterSnapshot>,
    pub promoted_pages: u64,
    pub timeline: Vec<Step>,
    pub processes: Vec<ProcessReplay>,
    /// What the live daemon decided (from the recording's trailer).
    pub live_feed: Option<FeedStats>,
    pub live_hotmap: Option<HotMapCounters>,
    /// Whether this replay's READY decisions equal the live ones, field by field.
    pub matches_live: Option<bool>,
    pub truth: Option<TruthScore>,
    /// Scan-to-fault latencies of the events that carry one.
    pub latency: LatencyReport,
    /// The hotness rule at the end: policy, verdicts, thresholds.
    pub rule: RuleReport,
    pub trailer: Trailer,
}

/// Scan-to-fault latencies in the recording, and with a ground truth, those
/// of hot and of cold pages apart (what a latency rule has to separate).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LatencyReport {
    /// Events without a latency (other sources, unstamped folios).
    pub without: u64,
    pub all: LatencyHistogram,
    /// Events on the truth's hot pages, and on the rest of its regions.
    pub hot: Option<LatencyHistogram>,
    pub cold: Option<LatencyHistogram>,
}

impl LatencyReport {
    fn add(&mut self, ev: &HotpageEvent, truth: &[Truth]) {
        if ev.flags & event_flags::LATENCY == 0 {
            self.without += 1;
            return;
        }
        self.all.add(ev.latency_ms);
        if truth.is_empty() {
            return;
        }
        let side = if Truth::hot_pages_of(truth, ev.pid, ev.vaddr, 1) > 0 {
            &mut self.hot
        } else if truth.iter().any(|t| t.pid == ev.pid && (t.region.0..t.region.1).contains(&ev.vaddr)) {
            &mut self.cold
        } else {
            return;
        };
        side.get_or_insert_with(LatencyHistogram::new).add(ev.latency_ms);
    }
}

/// The simulated machine behind the node workers.
#[derive(Default)]
struct Sim {
    now_ms: u64,
    /// Where a READY page is mapped: [`page_key`] → (pfn, order).
    mapped: PfnMap<(u64, u8)>,
    memory: HashMap<u32, NodeMemory>,
    /// pfns of promoted folios (their first pfn).
    promoted: PfnMap<()>,
    /// (ms, pid, vaddr, base pages) of each promotion.
    moves: Vec<(u64, u32, u64, u64)>,
}

/// A process's virtual page as one well-spread u64: the pid above 36 bits of
/// page number (48-bit user addresses).
fn page_key(pid: u32, vaddr: u64) -> u64 {
    (u64::from(pid) << 36) | ((vaddr >> 12) & ((1 << 36) - 1))
}

#[derive(Clone)]
struct SimSystem(Arc<Mutex<Sim>>);

impl SimSystem {
    fn sim(&self) -> std::sync::MutexGuard<'_, Sim> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl PromoterSystem for SimSystem {
    fn mapping(&mut self, pid: u32, vaddr: u64) -> Mapping {
        self.sim()
            .mapped
            .get(&page_key(pid, vaddr))
            .map_or(Mapping::NotPresent, |&(pfn, _)| Mapping::Present(pfn))
    }

    fn page_flags(&mut self, _pfn: u64) -> Option<u64> {
        None
    }

    fn node_memory(&mut self, nid: u32) -> Option<NodeMemory> {
        self.sim().memory.get(&nid).copied()
    }

    fn move_pages(
        &mut self,
        pid: u32,
        pages: &[u64],
        nodes: Option<&[i32]>,
        status: &mut [i32],
        _flags: i32,
    ) -> io::Result<u64> {
        let mut sim = self.sim();
        let Some(nodes) = nodes else {
            status.fill(-libc::ENOENT);
            return Ok(0);
        };
        let now = sim.now_ms;
        for ((&vaddr, &node), st) in pages.iter().zip(nodes).zip(status.iter_mut()) {
            *st = node;
            let Some((pfn, order)) = sim.mapped.remove(&page_key(pid, vaddr)) else { continue };
            let n = folio_pages(order);
            sim.promoted.insert(pfn, ());
            sim.moves.push((now, pid, vaddr, n));
            if let Some(m) = sim.memory.get_mut(&(node as u32)) {
                m.free = m.free.saturating_sub(n);
            }
        }
        Ok(0)
    }

    fn now_tick(&self) -> u64 {
        self.sim().now_ms
    }

    fn process_alive(&self, _pid: u32) -> bool {
        true
    }
}

/// A node worker and when it runs next, as the live thread would.
struct SimWorker {
    nid: u32,
    worker: NodeWorker<SimSystem>,
    next_round_ms: u64,
    backoff: bool,
}

/// Replays the recording in `data`.
pub fn replay(data: &[u8], opts: &ReplayOptions, truth: &[Truth]) -> Result<ReplayReport, ReplayError> {
    let mut reader = Reader::new(data)?;
    let header = reader.header().clone();
    if opts.as_recorded && !header.changes {
        return Err(ReplayError::NoChanges("this recording".into()));
    }
    let layout = MemoryLayout::from(&header.topology);
    let map = Arc::new(HotMap::new(&layout, opts.hotmap, opts.hint_capacity)?);
    map.start();
    let rule = HotnessRule::new(opts.policy, &layout);
    let scores = rule.scores();
    let mut feeder = HotMapFeeder::with_rule(map.clone(), Some(rule));

    let sim = SimSystem(Arc::new(Mutex::new(Sim::default())));
    for m in &header.memory {
        let free = match opts.top_tier_free_pages {
            Some(f) if header.topology.node(m.node).is_some_and(|n| n.top_tier) => f,
            _ => m.free,
        };
        sim.sim().memory.insert(
            m.node,
            NodeMemory { total: m.total, free, low: m.low, demotes: false, kswapd_hopeless: false },
        );
    }
    let mut workers = Vec::new();
    if !opts.as_recorded {
        opts.promoter.validate()?;
        let targets = Arc::new(Targets::new(&header.topology, opts.hotmap.mode, opts.target_nid));
        let ledger = TargetLedger::new(&opts.promoter);
        for nid in map.lower_tier_nodes() {
            let stats = Arc::new(NodeStats::default());
            let worker = NodeWorker::new(
                nid,
                map.clone(),
                targets.clone(),
                opts.promoter,
                sim.clone(),
                ledger.clone(),
                stats,
            )
            .ranked_by(Some(scores.clone()));
            workers.push(SimWorker { nid, worker, next_round_ms: 0, backoff: false });
        }
    }

    let start_ms = ns_to_tick(header.start_ns);
    let mut state = State {
        opts,
        truth,
        map: &map,
        sim: &sim,
        start_ms,
        changes: VecDeque::new(),
        moves: VecDeque::new(),
        fed: 0,
        dropped: 0,
        ready: 0,
        taken_pages: 0,
        taken: PfnMap::default(),
        processes: Vec::new(),
        newly_mapped: Vec::new(),
        timeline: Vec::new(),
        next_step_ms: start_ms + opts.step_ms,
        now_ms: start_ms,
        scratch: Vec::with_capacity(BATCH),
        latency: LatencyReport { all: LatencyHistogram::new(), ..LatencyReport::default() },
    };
    // Events are decoded a chunk at a time into a window and fed a batch at
    // a time, always LOOKAHEAD ahead of the feeding while the stream lasts.
    let mut window: Vec<HotpageEvent> = Vec::with_capacity(CHUNK + LOOKAHEAD + BATCH);
    let (mut start, mut more) = (0, true);
    loop {
        if more && window.len() - start < LOOKAHEAD + BATCH {
            window.drain(..start);
            start = 0;
            more = reader.next_events(&mut window, &mut state.changes, CHUNK)?;
            state.moves.extend(reader.take_moves());
        }
        let unfed = window.len() - start;
        if unfed == 0 {
            break;
        }
        let n = if more { BATCH.min(unfed) } else { unfed.min(BATCH) };
        state.feed_front(&window[start..start + n], &mut feeder, &mut workers);
        start += n;
    }
    // The changes logged after the last event, then one last round.
    if opts.as_recorded {
        while let Some(c) = state.changes.pop_front() {
            state.apply(&c);
        }
    }
    state.run_workers(&mut workers, true);
    state.step(true, feeder.rule());
    let trailer = reader.trailer().cloned().unwrap_or_default();
    let rule = feeder.rule().map(|r| r.report()).unwrap_or_default();
    Ok(state.report(&header, trailer, feeder.stats(), map.counters(), rule, &workers))
}

/// The replay in progress.
struct State<'a> {
    opts: &'a ReplayOptions,
    truth: &'a [Truth],
    map: &'a HotMap,
    sim: &'a SimSystem,
    start_ms: u64,
    changes: VecDeque<MapChange>,
    /// The live rule's move calls, each after how many events it took them.
    moves: VecDeque<(u64, MoveSpan)>,
    /// Events fed to the map (its accesses handled).
    fed: u64,
    dropped: u64,
    ready: u64,
    /// READY records the recorded takes took (as recorded).
    taken_pages: u64,
    /// As recorded, what each take took, by pfn, as the simulated promoter's
    /// moves are kept (time ms, pid, address, base pages), for the truth's
    /// score: a take the worker put back is no promotion.
    taken: PfnMap<(u64, u32, u64, u64)>,
    /// Per process, the last one used first.
    processes: Vec<ProcessReplay>,
    /// READY pages of the current piece, for the simulated system.
    newly_mapped: Vec<(u64, (u64, u8))>,
    timeline: Vec<Step>,
    next_step_ms: u64,
    now_ms: u64,
    scratch: Vec<HotpageEvent>,
    latency: LatencyReport,
}

impl State<'_> {
    /// Feeds `events` in pieces that end where a recorded change must go.
    fn feed_front(&mut self, events: &[HotpageEvent], feeder: &mut HotMapFeeder, workers: &mut [SimWorker]) {
        let mut i = 0;
        while i < events.len() {
            let mut end = events.len();
            if self.opts.as_recorded {
                // A change's place is counted in the map's accesses, as the
                // live map counted them when the worker made it: a rule
                // rejects events before the map, so that is not the count
                // of events. An event is at most one access, so feeding as
                // many events as accesses are missing cannot pass the place.
                let handled = self.map.accesses_handled();
                while let Some(c) = self.changes.front() {
                    if c.seq() > handled {
                        end = end.min(i + (c.seq() - handled) as usize);
                        break;
                    }
                    let c = self.changes.pop_front().expect("front exists");
                    self.apply(&c);
                }
            }
            // The live rule's move calls where it took them, in both modes:
            // the stalls they caused are in the recorded latencies whatever
            // a simulated promoter does (its calls take no time).
            while let Some(&(after, span)) = self.moves.front() {
                if after > self.fed {
                    end = end.min(i + (after - self.fed) as usize);
                    break;
                }
                self.moves.pop_front();
                if let Some(rule) = feeder.rule_mut() {
                    rule.apply_move(span);
                }
            }
            self.feed(&events[i..end], feeder, workers);
            i = end;
        }
    }

    /// The process's tally, kept last: the next events are likely its own.
    fn process(&mut self, pid: u32) -> &mut ProcessReplay {
        let processes = &mut self.processes;
        if processes.last().is_none_or(|p| p.pid != pid) {
            match processes.iter().position(|p| p.pid == pid) {
                Some(i) => {
                    let p = processes.swap_remove(i);
                    processes.push(p);
                }
                None => processes.push(ProcessReplay { pid, ..Default::default() }),
            }
        }
        let last = processes.len() - 1;
        &mut processes[last]
    }

    fn apply(&mut self, c: &MapChange) {
        match c {
            MapChange::Taken { pfn, .. } => {
                if self.map.peek(*pfn).is_some_and(|f| f.ready) {
                    self.taken_pages += 1;
                    // Where the page is mapped: the hint its READY access left,
                    // which the live worker moved it by. A page taken again (a
                    // move that failed for good) counts once.
                    if let Some(h) = self.map.hints().get(*pfn) {
                        let now = self.now_ms;
                        self.taken.entry(*pfn).or_insert((now, h.pid, h.vaddr, folio_pages(h.order)));
                    }
                }
            }
            MapChange::Rearmed { page, .. } => {
                self.taken.remove(&page.pfn);
            }
        }
        self.map.apply(c);
    }

    fn feed(&mut self, events: &[HotpageEvent], feeder: &mut HotMapFeeder, workers: &mut [SimWorker]) {
        if events.is_empty() {
            return;
        }
        // Events on promoted pages are dropped: copied only when there are any.
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let kept: &[HotpageEvent] = {
            let sim = self.sim.sim();
            if sim.promoted.is_empty() {
                events
            } else {
                scratch.extend(events.iter().filter(|e| !sim.promoted.contains_key(&e.pfn)));
                self.dropped += (events.len() - scratch.len()) as u64;
                &scratch
            }
        };
        for ev in kept {
            self.latency.add(ev, self.truth);
        }
        // Events per process, counted by runs (one process's events come together).
        let mut run_start = 0;
        for i in 1..=kept.len() {
            if i == kept.len() || kept[i].pid != kept[run_start].pid {
                self.process(kept[run_start].pid).events += (i - run_start) as u64;
                run_start = i;
            }
        }
        let (processes, mapped) = (&mut self.processes, &mut self.newly_mapped);
        let mut ready = 0;
        let simulate = !self.opts.as_recorded;
        feeder.feed(kept, |ev, result| {
            let Ok(Recorded::Updated { ready: true, newly_ready }) = result else { return };
            if *newly_ready {
                ready += 1;
                if let Some(p) = processes.iter_mut().rev().find(|p| p.pid == ev.pid) {
                    p.ready += 1;
                }
            }
            // The simulated system knows where a READY page is mapped, as pagemap would.
            if simulate {
                mapped.push((page_key(ev.pid, ev.vaddr), (ev.pfn, ev.order)));
            }
        });
        if !self.newly_mapped.is_empty() {
            self.sim.sim().mapped.extend(self.newly_mapped.drain(..));
        }
        self.ready += ready;
        self.fed += kept.len() as u64;
        // The clock is the recording's, dropped events included.
        if let Some(last) = events.last() {
            self.now_ms = self.now_ms.max(ns_to_tick(last.time_ns));
        }
        self.scratch = scratch;
        self.run_workers(workers, false);
        self.step(false, feeder.rule());
    }

    /// Runs each worker whose flag is up (and is not backing off) or whose
    /// sleep is over, at the current recorded time.
    fn run_workers(&mut self, workers: &mut [SimWorker], last: bool) {
        self.sim.sim().now_ms = self.now_ms;
        for w in workers.iter_mut() {
            let due = self.now_ms >= w.next_round_ms;
            let activated = (!w.backoff || due) && self.map.take_activate(w.nid);
            if !(activated || due || last) {
                continue;
            }
            let end = w.worker.round(activated);
            w.backoff = end.limited;
            w.next_round_ms = self.now_ms + self.opts.promoter.sleep_ms;
        }
    }

    /// Adds timeline steps up to now.
    fn step(&mut self, last: bool, rule: Option<&HotnessRule>) {
        while self.now_ms >= self.next_step_ms || last {
            let t_ms = if last { self.now_ms } else { self.next_step_ms };
            let promoted = self.promoted_pages();
            let hot = (!self.truth.is_empty()).then(|| self.hot_promoted(t_ms));
            self.timeline.push(Step {
                t_s: t_ms.saturating_sub(self.start_ms) as f64 / 1000.0,
                events: self.fed + self.dropped,
                ready: self.ready,
                promoted_pages: promoted,
                hot_promoted_pages: hot,
                fast: rule
                    .filter(|r| r.policy() == Policy::Latency)
                    .map(HotnessRule::thresholds)
                    .unwrap_or_default(),
            });
            if last {
                break;
            }
            self.next_step_ms += self.opts.step_ms;
        }
    }

    fn promoted_pages(&self) -> u64 {
        if self.opts.as_recorded {
            return self.taken_pages;
        }
        self.sim.sim().moves.iter().map(|m| m.3).sum()
    }

    fn hot_promoted(&self, until_ms: u64) -> u64 {
        let hot = |&(t, pid, vaddr, pages): &(u64, u32, u64, u64)| {
            if t <= until_ms { Truth::hot_pages_of(self.truth, pid, vaddr, pages) } else { 0 }
        };
        if self.opts.as_recorded {
            return self.taken.values().map(hot).sum();
        }
        self.sim.sim().moves.iter().map(hot).sum()
    }

    fn report(
        mut self,
        header: &Header,
        trailer: Trailer,
        feed: FeedStats,
        hotmap: HotMapCounters,
        rule: RuleReport,
        workers: &[SimWorker],
    ) -> ReplayReport {
        let promoter = (!workers.is_empty()).then(|| {
            let mut sum = CounterSnapshot::default();
            for w in workers {
                let s = w.worker.stats().snapshot();
                sum = CounterSnapshot::from_fn(|id| sum.get(id) + s.get(id));
            }
            sum
        });
        let moves = if self.opts.as_recorded {
            // In time order, as the score's t50 and t90 read them.
            let mut taken: Vec<_> = self.taken.values().copied().collect();
            taken.sort_unstable();
            taken
        } else {
            self.sim.sim().moves.clone()
        };
        let mut processes = std::mem::take(&mut self.processes);
        for &(_, pid, _, pages) in &moves {
            match processes.iter_mut().find(|p| p.pid == pid) {
                Some(p) => p.promoted_pages += pages,
                None => processes.push(ProcessReplay { pid, promoted_pages: pages, ..Default::default() }),
            }
        }
        processes.sort_by(|a, b| (b.promoted_pages, b.ready, a.pid).cmp(&(a.promoted_pages, a.ready, b.pid)));
        let matches_live = match (self.opts.as_recorded, trailer.feed) {
            (true, Some(live)) => Some(live == feed && trailer.hotmap.is_none_or(|h| h == hotmap)),
            _ => None,
        };
        let truth = (!self.truth.is_empty()).then(|| TruthScore::score(self.truth, &moves, self.start_ms));
        let end_ms = self.now_ms.max(self.start_ms);
        ReplayReport {
            mode: if self.opts.as_recorded { "as recorded" } else { "simulated promoter" },
            kernel: header.kernel.clone(),
            events: self.fed + self.dropped,
            dropped_after_promotion: self.dropped,
            duration_s: (end_ms - self.start_ms) as f64 / 1000.0,
            feed,
            hotmap,
            promoter,
            promoted_pages: if self.opts.as_recorded {
                self.taken_pages
            } else {
                moves.iter().map(|m| m.3).sum()
            },
            timeline: self.timeline,
            processes,
            live_feed: trailer.feed,
            live_hotmap: trailer.hotmap,
            matches_live,
            truth,
            latency: self.latency,
            rule,
            trailer,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use hotpage_common::source;

    use super::*;
    use crate::{
        collector::EventConsumer,
        hotmap::WalkControl,
        recording::{NodeMemoryAtStart, PromoterKnobs, Recorder, Trailer},
        sys::topology::TierTopology,
        test_fixtures::cxl_box,
    };

    fn header(topology: TierTopology) -> Header {
        Header {
            hotpage: "test".into(),
            kernel: "6.12".into(),
            topology,
            memory: vec![NodeMemoryAtStart { node: 0, total: 262_144, free: 200_000, low: 3000 }],
            hotmap: HotMapConfig::default(),
            hint_capacity: 1 << 16,
            promoter: PromoterKnobs { rate_limit_mbps: Some(1024), ..PromoterKnobs::default() },
            pid: None,
            changes: true,
            start_ns: 1_000_000_000,
            sources_at_start: Vec::new(),
            policy: None,
        }
    }

    fn options(h: &Header) -> ReplayOptions {
        let cfg =
            crate::daemon::config::FileConfig::of_recording(h).resolve(std::path::Path::new("test")).unwrap();
        ReplayOptions::new(&cfg)
    }

    /// A GUPS-like stream on node 1: 10% of 4096 pages take 90% of the accesses.
    fn events(first_pfn: u64, n: u64) -> Vec<HotpageEvent> {
        let mut x = 0x5eed_u64;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let page = if x % 10 < 9 { x % 410 } else { x % 4096 };
                fault(first_pfn, page, 1_000_000_000 + i * 400_000)
            })
            .collect()
    }

    /// A hint fault of process 42 on page `page` of the streams' region.
    fn fault(first_pfn: u64, page: u64, time_ns: u64) -> HotpageEvent {
        HotpageEvent {
            pfn: first_pfn + page,
            vaddr: 0x7f00_0000_0000 + page * 4096,
            time_ns,
            pid: 42,
            nid: 0,
            page_nid: 1,
            source: source::HINT_FAULT,
            ..HotpageEvent::default()
        }
    }

    /// The streams' ground truth: process 42, its first 410 pages hot.
    fn truth() -> Vec<Truth> {
        vec![Truth {
            pid: 42,
            region: (0x7f00_0000_0000, 0x7f00_0000_0000 + 4096 * 4096),
            hot: vec![(0x7f00_0000_0000, 0x7f00_0000_0000 + 410 * 4096)],
        }]
    }

    /// Feeds a stream through a recorder into a live map while a "worker"
    /// takes READY records (and puts some back) between batches, as the
    /// daemon's threads do; returns the recording and what the live map decided.
    fn record_live(path: &std::path::Path) -> (FeedStats, HotMapCounters) {
        record_live_with(path, None, |first| events(first, 20_000))
    }

    /// `record_live` with a hotness rule of `policy` (and the recording's
    /// header saying so) and the events `stream` makes from the first pfn.
    fn record_live_with(
        path: &std::path::Path,
        policy: Option<Policy>,
        stream: impl Fn(u64) -> Vec<HotpageEvent>,
    ) -> (FeedStats, HotMapCounters) {
        let topology = TierTopology::read(&cxl_box()).unwrap();
        let first = topology.lower_tier_ranges().unwrap()[0].start_pfn;
        let h = Header { policy, ..header(topology.clone()) };
        let layout = MemoryLayout::from(&topology);
        let map = Arc::new(HotMap::new(&layout, h.hotmap, h.hint_capacity).unwrap());
        map.start();
        let (tx, rx) = mpsc::channel();
        assert!(map.log_changes(tx));
        let feeder = match policy {
            Some(p) => HotMapFeeder::with_rule(map.clone(), Some(HotnessRule::new(p, &layout))),
            None => HotMapFeeder::new(map.clone()),
        };
        let mut rec = Recorder::to_file(feeder, path, &h, Some(rx)).unwrap();
        for (b, batch) in stream(first).chunks(97).enumerate() {
            rec.consume_batch(batch);
            if b % 3 == 0 {
                let mut k = 0;
                map.walk_node(1, |p| {
                    k += 1;
                    if k % 7 == 0 {
                        map.rearm(&p);
                    }
                    WalkControl::Continue
                });
            }
        }
        let (feed, counters) = (rec.next().stats(), map.counters());
        let trailer = Trailer { feed: Some(feed), hotmap: Some(counters), ..Trailer::default() };
        rec.finish(trailer).unwrap();
        (feed, counters)
    }

    #[test]
    fn as_recorded_the_replay_makes_the_live_maps_ready_decisions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.hprec");
        let (live, counters) = record_live(&path);
        assert!(live.newly_ready > 100, "{live:?}");
        let data = std::fs::read(&path).unwrap();
        let h = Reader::new(&data).unwrap().header().clone();
        let opts = ReplayOptions { as_recorded: true, ..options(&h) };
        let r = replay(&data, &opts, &[]).unwrap();
        assert_eq!(r.feed, live, "field by field");
        assert_eq!(r.hotmap, counters);
        assert_eq!(r.matches_live, Some(true));
        assert_eq!(r.events, 20_000);
        // Without the recorded takes the same stream decides differently: the
        // takes are what makes the match.
        let sim = replay(&data, &ReplayOptions { as_recorded: false, ..opts }, &[]).unwrap();
        assert_ne!(sim.feed.newly_ready, live.newly_ready);
    }

    /// With the latency rule the live map handles only the accesses the rule
    /// lets through, and a worker's take names its place in those, not in
    /// the events: as recorded, the takes must go there (placed by events
    /// instead, every take came before the page it took was READY, and the
    /// box runs' replays found 0 pages taken).
    #[test]
    fn as_recorded_with_a_rule_the_takes_go_where_the_live_map_made_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.hprec");
        // Scans of 4096 pages: each pass every page faults once, the first
        // 410 fast (their fault every pass), the rest slow.
        let with_latencies = |first: u64| {
            (0..40 * 4096u64)
                .map(|i| {
                    let page = (i * 1031) % 4096;
                    HotpageEvent {
                        latency_ms: if page < 410 { 20 + (i % 7) as u32 } else { 900 + (i % 1300) as u32 },
                        flags: event_flags::LATENCY,
                        ..fault(first, page, 1_000_000_000 + i * 100_000)
                    }
                })
                .collect()
        };
        let (live, counters) = record_live_with(&path, Some(Policy::Latency), with_latencies);
        let data = std::fs::read(&path).unwrap();
        let h = Reader::new(&data).unwrap().header().clone();
        let opts = ReplayOptions { as_recorded: true, ..options(&h) };
        let r = replay(&data, &opts, &[]).unwrap();
        assert!(
            r.rule.counters.rejected > 100_000 && live.newly_ready > 100,
            "{:?} {live:?}",
            r.rule.counters
        );
        assert_eq!(r.feed, live, "field by field");
        assert_eq!(r.hotmap, counters);
        assert_eq!(r.matches_live, Some(true));
        assert!(r.promoted_pages > 100, "the takes found their READY pages: {}", r.promoted_pages);
        // Scored against the truth by what the live workers took.
        let score = replay(&data, &opts, &truth()).unwrap().truth.unwrap();
        assert!(score.precision > 0.99 && score.hot_promoted_pages > 100, "{score:?}");
    }

    /// The stalls hotpage's own moves caused are in the recorded latencies
    /// whatever a replay's promoter does: a simulated replay takes the
    /// recorded move calls off them as the live rule did (without them, the
    /// hot pages whose faults came during a move lost their streaks, and
    /// simulated replays of box runs stopped at 67-85% of the hot set where
    /// the live runs took all of it).
    #[test]
    fn a_simulated_replay_takes_the_recorded_moves_off_the_latencies_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.hprec");
        let topology = TierTopology::read(&cxl_box()).unwrap();
        let first = topology.lower_tier_ranges().unwrap()[0].start_pfn;
        let h = header(topology.clone());
        let map = Arc::new(HotMap::new(&MemoryLayout::from(&topology), h.hotmap, h.hint_capacity).unwrap());
        let (tx, rx) = mpsc::channel();
        let mut rec = Recorder::to_file(HotMapFeeder::new(map), &path, &h, None).unwrap().with_moves(rx);
        // 100 faults a millisecond apart from 3 s on, each 2 s after its
        // scan, the process held by a move from 2.0 to 2.5 s.
        let faults: Vec<HotpageEvent> = (0..100u64)
            .map(|i| HotpageEvent {
                pfn: first + i,
                vaddr: 0x7f00_0000_0000 + i * 4096,
                time_ns: 3_000_000_000 + i * 1_000_000,
                latency_ms: 2000,
                flags: event_flags::LATENCY,
                pid: 42,
                nid: 0,
                page_nid: 1,
                source: source::HINT_FAULT,
                ..HotpageEvent::default()
            })
            .collect();
        rec.consume_batch(&faults[..1]);
        tx.send(MoveSpan { pid: 42, start_ms: 2000, end_ms: 2500 }).unwrap();
        rec.consume_batch(&faults[1..]);
        rec.finish(Trailer::default()).unwrap();
        let data = std::fs::read(&path).unwrap();
        for as_recorded in [false, true] {
            let r = replay(&data, &ReplayOptions { as_recorded, ..options(&h) }, &[]).unwrap();
            assert_eq!(r.rule.counters.stall_corrected, 99, "as recorded: {as_recorded}");
        }
    }

    #[test]
    fn the_simulated_promoter_moves_the_hot_pages_and_scores_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.hprec");
        record_live(&path);
        let data = std::fs::read(&path).unwrap();
        let h = Reader::new(&data).unwrap().header().clone();
        let r = replay(&data, &options(&h), &truth()).unwrap();
        let score = r.truth.unwrap();
        assert!(score.recall > 0.9, "{score:?}");
        assert!(
            r.promoted_pages >= score.hot_promoted_pages && r.promoter.unwrap().moved == r.promoted_pages
        );
        assert!(r.dropped_after_promotion > 0, "promoted pages leave the lower tier");
        assert!(score.t90_s.is_some() && r.timeline.last().unwrap().promoted_pages == r.promoted_pages);
        // A tight target takes fewer pages.
        let tight = ReplayOptions { top_tier_free_pages: Some(3000 + 16384 + 100), ..options(&h) };
        let t = replay(&data, &tight, &truth()).unwrap();
        assert!(t.promoted_pages <= 100, "{}", t.promoted_pages);
    }
}
