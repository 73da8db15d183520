//! The running DAMON source: its BPF program (attached to
//! `damon:damon_aggregated`), its kdamond and the loop that keeps the
//! kdamond on the processes holding lower-tier memory.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use serde::{Deserialize, Serialize};

use super::{DamonConfig, DamonError, Kdamond, targets::lower_tier_users, tracepoint};
use crate::{
    kernel::settings::SettingsGuard,
    sources::{BpfError, DamonArgs, LoadOptions, LoadedSource, SourceCounters, SourceKind},
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
}

impl DamonStatus {
    pub fn report(&self, cfg: &DamonConfig) -> DamonReport {
        DamonReport {
            kdamond_pid: self.kdamond_pid.load(Relaxed),
            targets: self.targets.load(Relaxed),
            target_pages: self.target_pages.load(Relaxed),
            kdamond_cpu_ns: self.kdamond_cpu_ns.load(Relaxed),
            starts: self.starts.load(Relaxed),
            sample_us: cfg.sample_us,
            aggr_us: cfg.aggr_us,
            pages_per_second: cfg.pages_per_second,
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
}

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
    ) -> Result<(Self, RingBuf<MapData>, SourceCounters), DamonError> {
        let btf = crate::kernel::kernel_btf(root).map_err(|e| DamonError::Tracepoint(e.to_string()))?;
        let args = tracepoint::aggregated_args(&btf)?;
        drop(btf);
        let bpf = |e: BpfError| DamonError::Tracepoint(e.to_string());
        let opts = LoadOptions { damon: DamonArgs::new(args, cfg.min_nr_accesses), ..*opts };
        let mut program = LoadedSource::load(SourceKind::Damon, &opts).map_err(bpf)?;
        let ring = program.take_ring().map_err(bpf)?;
        let counters = program.take_counters().map_err(bpf)?;
        program.attach_damon().map_err(bpf)?;
        let kdamond = Kdamond::create(root, guard, cfg)?;
        let mut me = Self {
            root: root.to_owned(),
            program,
            kdamond,
            lower: lower.to_vec(),
            monitored: Vec::new(),
            status: Arc::default(),
            cpu_done_ns: 0,
            cpu_now_ns: 0,
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

    /// Follows processes that came or went (and a kdamond that stopped
    /// because its targets exited); counts the kdamond's CPU time.
    pub fn retarget(&mut self) -> Result<(), DamonError> {
        let cfg = *self.kdamond.config();
        let min_pages = (cfg.target_min_mib << 20) / hotpage_common::PAGE_SIZE;
        let users = lower_tier_users(&self.root, &self.lower, min_pages, cfg.max_targets);
        let mut pids: Vec<u32> = users.iter().map(|u| u.0).collect();
        pids.sort_unstable();
        self.status.target_pages.store(users.iter().map(|u| u.1).sum(), Relaxed);
        let pid = self.kdamond.pid();
        if let Some(p) = pid
            && let Some((user, system)) = stat_cpu_times(&self.root.join(format!("proc/{p}/stat")))
        {
            self.cpu_now_ns = (user + system).as_nanos() as u64;
        }
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

    fn publish_cpu(&self) {
        self.status.kdamond_cpu_ns.store(self.cpu_done_ns + self.cpu_now_ns, Relaxed);
    }

    /// Every `retarget_s`: [`Self::retarget`]. Owns the source: aborting
    /// the task stops the kdamond and detaches the program.
    /// While nothing is monitored (no process holds lower-tier memory yet,
    /// or they all exited), every second.
    pub async fn run(mut self) {
        let every = self.kdamond.config().retarget_s;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let mut since = 0;
        loop {
            tick.tick().await;
            since += 1;
            if since < every && !self.monitored.is_empty() && self.kdamond.running() {
                continue;
            }
            since = 0;
            if let Err(e) = self.retarget() {
                tracing::warn!("DAMON source: {e}");
            }
        }
    }
}

impl Drop for DamonSource {
    fn drop(&mut self) {
        // The settings guard removes the kdamond afterwards.
        self.kdamond.stop();
    }
}
