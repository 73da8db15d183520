//! The running DAMON source: its BPF program (attached to
//! `damon:damon_aggregated`), its kdamond and the loop that keeps the
//! kdamond on the processes holding lower-tier memory.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use btf_rs::Btf;
use serde::{Deserialize, Serialize};

use super::{DamonConfig, DamonError, Kdamond, RegionCounters, targets::lower_tier_users, tracepoint};
use crate::{
    kernel::settings::SettingsGuard,
    sources::{
        BpfError, DamonArgs, LoadOptions, LoadedSource, SourceCounters, SourceKind, cpu_budget::CpuBudget,
    },
    sys::thread_time::stat_cpu_times,
};

/// What `stats` and the metrics show of the DAMON source.
#[derive(Debug, Default)]
pub struct DamonStatus {
    pub kdamond_pid: AtomicU32,
    pub targets: AtomicU32,
    /// Lower-tier pages the monitored processes held at the last look.
    pub target_pages: AtomicU64,
    /// CPU time of hotpage's kdamond(s) so far, ns.
    pub kdamond_cpu_ns: AtomicU64,
    /// Times the kdamond was (re)started on a new target list.
    pub starts: AtomicU64,
    /// DAMON's sampling and aggregation intervals now, µs (the CPU budget moves them).
    pub sample_us: AtomicU64,
    pub aggr_us: AtomicU64,
    /// The source's cost over the budget's last interval (its kdamond plus
    /// hotpage's region expansion), ppm of one core.
    pub cpu_share_ppm: AtomicU64,
    /// Times the budget changed the intervals.
    pub interval_changes: AtomicU64,
}

/// [`DamonStatus`] read at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DamonReport {
    pub kdamond_pid: u32,
    pub targets: u32,
    pub target_pages: u64,
    pub kdamond_cpu_ns: u64,
    pub starts: u64,
    pub sample_us: u64,
    pub aggr_us: u64,
    pub pages_per_second: u64,
    /// The source's CPU budget, ppm of one core (0: none), and its cost over
    /// the budget's last interval (kdamond plus region expansion).
    pub cpu_budget_ppm: u64,
    pub cpu_share_ppm: u64,
    pub interval_changes: u64,
}

impl DamonStatus {
    pub fn report(&self, cfg: &DamonConfig) -> DamonReport {
        DamonReport {
            kdamond_pid: self.kdamond_pid.load(Relaxed),
            targets: self.targets.load(Relaxed),
            target_pages: self.target_pages.load(Relaxed),
            kdamond_cpu_ns: self.kdamond_cpu_ns.load(Relaxed),
            starts: self.starts.load(Relaxed),
            sample_us: self.sample_us.load(Relaxed),
            aggr_us: self.aggr_us.load(Relaxed),
            pages_per_second: cfg.pages_per_second,
            cpu_budget_ppm: (cfg.cpu_budget_percent * 1e4).round() as u64,
            cpu_share_ppm: self.cpu_share_ppm.load(Relaxed),
            interval_changes: self.interval_changes.load(Relaxed),
        }
    }
}

pub struct DamonSource {
    root: PathBuf,
    program: LoadedSource,
    kdamond: Kdamond,
    lower: Vec<u32>,
    monitored: Vec<u32>,
    status: Arc<DamonStatus>,
    /// CPU time of kdamonds that have exited, and of the running one at the last look.
    cpu_done_ns: u64,
    cpu_now_ns: u64,
    budget: Option<CpuBudget>,
    /// The sampling interval the kdamond runs with, µs (the budget's period).
    sample_us: u64,
    /// When the budget last looked, and the source's CPU time then.
    budget_mark: Option<(Instant, u64)>,
    /// Budget windows in a row that asked for more sampling.
    quiet_windows: u32,
    /// hotpage's side of the cost: the resolver's region expansion.
    expansion: Option<Arc<RegionCounters>>,
}

/// Seconds between the budget's looks at the source's CPU time. The
/// kdamond's comes in clock ticks (10 ms): at a 3% budget a 2 s window holds
/// about 6 of them, and a tick's noise crossed the halving threshold, so the
/// budget swung (27 changes in 3 minutes in a CI run, each a `commit`).
const BUDGET_EVERY_S: u32 = 6;

impl DamonSource {
    /// Loads and attaches the program, creates hotpage's kdamond (through
    /// `guard`) and starts it on the processes holding lower-tier memory
    /// (`lower`: the lower-tier nodes), if any yet.
    pub fn start(
        root: &Path,
        guard: &mut SettingsGuard,
        cfg: DamonConfig,
        opts: &LoadOptions,
        lower: &[u32],
        btf: &Btf,
    ) -> Result<(Self, RingBuf<MapData>, SourceCounters), DamonError> {
        let args = tracepoint::aggregated_args(btf)?;
        let bpf = |e: BpfError| DamonError::Tracepoint(e.to_string());
        let opts = LoadOptions { damon: DamonArgs::new(args, cfg.min_nr_accesses), ..*opts };
        let mut program = LoadedSource::load(SourceKind::Damon, &opts).map_err(bpf)?;
        let ring = program.take_ring().map_err(bpf)?;
        let counters = program.take_counters().map_err(bpf)?;
        program.attach_damon().map_err(bpf)?;
        let kdamond = Kdamond::create(root, guard, cfg)?;
        let status = Arc::new(DamonStatus::default());
        status.sample_us.store(cfg.sample_us, Relaxed);
        status.aggr_us.store(cfg.aggr_us, Relaxed);
        let mut me = Self {
            root: root.to_owned(),
            program,
            kdamond,
            lower: lower.to_vec(),
            monitored: Vec::new(),
            status,
            cpu_done_ns: 0,
            cpu_now_ns: 0,
            budget: cfg.cpu_budget(),
            sample_us: cfg.sample_us,
            budget_mark: None,
            quiet_windows: 0,
            expansion: None,
        };
        me.retarget()?;
        Ok((me, ring, counters))
    }

    pub fn status(&self) -> Arc<DamonStatus> {
        self.status.clone()
    }

    pub fn config(&self) -> &DamonConfig {
        self.kdamond.config()
    }

    /// The resolver's region counters: their CPU time counts against the
    /// budget with the kdamond's (as the sample source's consumer does).
    pub fn count_expansion(&mut self, regions: Arc<RegionCounters>) {
        self.expansion = Some(regions);
    }

    /// Follows processes that came or went (and a kdamond that stopped
    /// because its targets exited); counts the kdamond's CPU time.
    pub fn retarget(&mut self) -> Result<(), DamonError> {
        let cfg = *self.kdamond.config();
        let min_pages = (cfg.target_min_mib << 20) / hotpage_common::PAGE_SIZE;
        let users = lower_tier_users(&self.root, &self.lower, min_pages, cfg.max_targets);
        let mut pids: Vec<u32> = users.iter().map(|u| u.0).collect();
        pids.sort_unstable();
        self.status.target_pages.store(users.iter().map(|u| u.1).sum(), Relaxed);
        let pid = self.read_cpu();
        let running = self.kdamond.running();
        if (running && pids == self.monitored) || (pids.is_empty() && !running) {
            // The same kdamond: its pid is the filter's (a start whose thread
            // had not shown its pid yet is caught up here).
            let now = if running { pid.unwrap_or(0) } else { 0 };
            if now != self.status.kdamond_pid.load(Relaxed) {
                self.follow(now, &self.monitored.clone());
            }
            self.publish_cpu();
            return Ok(());
        }
        // A new kdamond thread: its predecessor's time is done.
        self.cpu_done_ns += std::mem::take(&mut self.cpu_now_ns);
        let monitored = if pids.is_empty() {
            self.kdamond.stop();
            Vec::new()
        } else {
            self.kdamond.monitor(&pids)?
        };
        let kpid =
            if monitored.is_empty() { 0 } else { self.kdamond.wait_pid(Duration::from_secs(1)).unwrap_or(0) };
        self.follow(kpid, &monitored);
        if !monitored.is_empty() {
            self.status.starts.fetch_add(1, Relaxed);
            tracing::info!("DAMON: kdamond {kpid} monitors {} process(es): {monitored:?}", monitored.len());
        }
        self.status.targets.store(monitored.len() as u32, Relaxed);
        self.monitored = monitored;
        self.publish_cpu();
        Ok(())
    }

    /// Points the BPF program at kdamond `kpid` and its targets' pids.
    fn follow(&mut self, kpid: u32, monitored: &[u32]) {
        if let Err(e) = self.program.set_damon_targets(monitored) {
            tracing::warn!("DAMON source: setting the targets' pids in the BPF map: {e}");
        }
        if let Err(e) = self.program.set_damon_owner(kpid) {
            tracing::warn!("DAMON source: setting the kdamond's pid in the BPF filter: {e}");
        }
        self.status.kdamond_pid.store(kpid, Relaxed);
    }

    /// Reads the running kdamond's CPU time; returns its pid.
    fn read_cpu(&mut self) -> Option<u32> {
        let pid = self.kdamond.pid();
        if let Some(p) = pid
            && let Some((user, system)) = stat_cpu_times(&self.root.join(format!("proc/{p}/stat")))
        {
            self.cpu_now_ns = (user + system).as_nanos() as u64;
        }
        self.publish_cpu();
        pid
    }

    /// The CPU budget: the source's share of a core since the last look (its
    /// kdamond's and hotpage's region expansion) sets how much less work the
    /// kdamond does: how much wider its intervals are.
    fn keep_to_budget(&mut self) {
        let Some(budget) = self.budget else { return };
        let expansion = self.expansion.as_ref().map_or(0, |r| r.snapshot().cpu_ns);
        let total = self.cpu_done_ns + self.cpu_now_ns + expansion;
        let now = Instant::now();
        let Some((then, before)) = self.budget_mark.replace((now, total)) else { return };
        let wall = now.duration_since(then).as_nanos() as f64;
        if wall <= 0.0 || !self.kdamond.running() {
            return;
        }
        let share = total.saturating_sub(before) as f64 / wall;
        self.status.cpu_share_ppm.store((share * 1e6).round() as u64, Relaxed);
        let mut next = budget.next_period_at(self.sample_us, share);
        // Sample more often again only after two quiet windows in a row: a
        // single low reading is as likely noise as a change of load.
        if next < self.sample_us {
            self.quiet_windows += 1;
            if self.quiet_windows < 2 {
                next = self.sample_us;
            } else {
                self.quiet_windows = 0;
            }
        } else {
            self.quiet_windows = 0;
        }
        if next == self.sample_us {
            return;
        }
        let attrs = self.kdamond.config().attrs_for(next);
        match self.kdamond.set_attrs(&attrs) {
            Ok(()) => {
                tracing::info!(
                    "DAMON source at {:.1}% of a core (budget {:.1}%): sampling every {} µs, aggregating every {} ms",
                    share * 100.0,
                    budget.budget * 100.0,
                    attrs.sample_us,
                    attrs.aggr_us / 1000
                );
                self.sample_us = next;
                self.status.sample_us.store(attrs.sample_us, Relaxed);
                self.status.aggr_us.store(attrs.aggr_us, Relaxed);
                self.status.interval_changes.fetch_add(1, Relaxed);
            }
            Err(e) => {
                tracing::warn!(
                    "DAMON source: the kdamond did not take new intervals ({e}); its CPU budget is off from now on"
                );
                self.budget = None;
            }
        }
    }

    fn publish_cpu(&self) {
        self.status.kdamond_cpu_ns.store(self.cpu_done_ns + self.cpu_now_ns, Relaxed);
    }

    /// Every `retarget_s`: [`Self::retarget`] (while nothing is monitored: no
    /// process holds lower-tier memory yet, or they all exited: every second);
    /// every [`BUDGET_EVERY_S`]: the CPU budget. Owns the source: dropping
    /// the future stops the kdamond and detaches the program.
    pub async fn run(mut self) {
        let every = self.kdamond.config().retarget_s;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let (mut since, mut budget_ticks) = (0, 0);
        loop {
            tick.tick().await;
            since += 1;
            if since < every && !self.monitored.is_empty() && self.kdamond.running() {
                self.read_cpu();
            } else {
                since = 0;
                if let Err(e) = self.retarget() {
                    tracing::warn!("DAMON source: {e}");
                }
            }
            budget_ticks += 1;
            if budget_ticks >= BUDGET_EVERY_S {
                budget_ticks = 0;
                self.keep_to_budget();
            }
        }
    }
}

/// [`DamonSource::run`] on its own thread (`damon`): reading `numa_maps` and
/// restarting the kdamond (up to a second's wait for its pid) do not hold up
/// the collector's thread. [`DamonThread::stop`] ends it: the source drops
/// there, stopping its kdamond and detaching its program.
pub struct DamonThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DamonSource {
    pub fn spawn(self) -> std::io::Result<DamonThread> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("damon".into()).spawn(move || {
            rt.block_on(async move {
                tokio::select! {
                    () = self.run() => {}
                    _ = stopped => {}
                }
            });
        })?;
        Ok(DamonThread { stop: Some(stop), thread: Some(thread) })
    }
}

impl DamonThread {
    /// Ends the loop and waits for the thread (the source, its kdamond and
    /// its program are gone when this returns).
    pub fn stop(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::warn!("the DAMON source's thread panicked");
        }
    }
}

impl Drop for DamonThread {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Drop for DamonSource {
    fn drop(&mut self) {
        // The settings guard removes the kdamond afterwards.
        self.kdamond.stop();
    }
}
