//! The memory-sample source (`hwhints` in pghot's terms): IBS op or PEBS
//! load-latency samples, or software page-fault samples where no PMU samples
//! memory, through the `hw_sample` perf_event program into the same ring,
//! collector and hot map as hint faults. Samples without a physical address
//! get their pfn from pagemap ([`crate::sources::AddressResolver`]); a CPU budget moves the sample
//! period ([`CpuBudget`]).

pub mod events;
pub mod perf_event;
pub mod pmu;

use std::{
    os::fd::{AsFd, OwnedFd},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use hotpage_common::PfnRange;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use super::cpu_budget::{CpuBudget, DEFAULT_BUDGET, IntervalCost};
pub use events::{CpuEvents, EventsError, online_cpus};
pub use pmu::{PmuError, Sampler, SamplerKind};

use crate::{
    sources::{BpfError, LoadOptions, LoadedSource, SourceCounters, SourceKind, enable_run_time_stats},
    sys::sysfs::read_u64,
};

/// `[sources] samples`: which sampler, if any.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplesMode {
    /// The PMU's memory sampling when the machine has it; otherwise none.
    #[default]
    Auto,
    /// The PMU's memory sampling, or refuse to start.
    Hardware,
    /// Software page-fault samples (no PMU needed; what the box tests use).
    Software,
    Off,
}

impl SamplesMode {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "hardware" => Ok(Self::Hardware),
            "software" => Ok(Self::Software),
            "off" => Ok(Self::Off),
            _ => Err(format!("samples {s:?}: want auto, hardware, software or off")),
        }
    }

    /// The sampler this mode picks on the machine under `root`; None: no sampling.
    pub fn pick(self, root: &Path) -> Result<Option<Sampler>, PmuError> {
        match self {
            Self::Off => Ok(None),
            Self::Software => Ok(Some(Sampler::software())),
            Self::Hardware => Sampler::detect(root).map(Some),
            Self::Auto => match Sampler::detect(root) {
                Ok(s) => Ok(Some(s)),
                Err(PmuError::None(_)) => Ok(None),
                Err(e) => Err(e),
            },
        }
    }
}

#[derive(Debug, Error)]
pub enum SamplingError {
    #[error(transparent)]
    Bpf(#[from] BpfError),
    #[error(transparent)]
    Events(#[from] EventsError),
}

/// What the sample source is doing now, for stats (written by its owner).
#[derive(Debug)]
pub struct SamplerStatus {
    pub description: String,
    pub kind: SamplerKind,
    pub budget: f64,
    period: AtomicU64,
    cpus: AtomicU64,
    /// Share of one core in the last interval, in millionths.
    share_ppm: AtomicU64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SamplerSnapshot {
    pub description: String,
    pub kind: Option<SamplerKind>,
    pub period: u64,
    pub cpus: u64,
    /// Share of one core the source cost in the last interval.
    pub cpu_share: f64,
    pub cpu_budget: f64,
}

impl SamplerStatus {
    pub fn snapshot(&self) -> SamplerSnapshot {
        SamplerSnapshot {
            description: self.description.clone(),
            kind: Some(self.kind),
            period: self.period.load(Relaxed),
            cpus: self.cpus.load(Relaxed),
            cpu_share: self.share_ppm.load(Relaxed) as f64 / 1e6,
            cpu_budget: self.budget,
        }
    }
}

/// The loaded sample program, its per-CPU events and its budget.
pub struct SampleSource {
    // Field order is drop order: the events go before the program.
    events: CpuEvents,
    source: LoadedSource,
    budget: CpuBudget,
    status: Arc<SamplerStatus>,
    counters: Arc<SourceCounters>,
    last: Option<(Instant, u64)>,
    run_stats: RunTimeSampling,
}

/// BPF run-time statistics make every BPF program on the machine read the
/// clock twice per run while they are on, so the sample source takes them for
/// one interval in every `RUN_STATS_EVERY` and prices the others at the last
/// measured cost per run (the program's `seen` counter says how many runs).
/// If the operator has them on anyway (`kernel.bpf_stats_enabled`), every
/// interval is measured.
const RUN_STATS_EVERY: u64 = 10;

struct RunTimeSampling {
    /// The operator's sysctl has them on: measure all the time, hold nothing.
    always_on: bool,
    /// Held while a measured interval is open.
    fd: Option<OwnedFd>,
    /// (run time, run count) when the open interval began.
    opened_at: Option<(Duration, u64)>,
    ns_per_run: Option<f64>,
    intervals: u64,
}

impl SampleSource {
    /// Loads the program, fills its tier filter, opens and enables one event
    /// per online CPU. Returns the source with its ring and counters.
    pub fn start(
        root: &Path,
        sampler: Sampler,
        opts: &LoadOptions,
        ranges: &[PfnRange],
        budget: f64,
        period: Option<u64>,
    ) -> Result<(Self, RingBuf<MapData>, Arc<SourceCounters>), SamplingError> {
        let opts = LoadOptions { sample_phys_addr: sampler.phys_addr, ..*opts };
        let mut source = LoadedSource::load(SourceKind::HwSample, &opts)?;
        source.set_lower_tier(ranges)?;
        let ring = source.take_ring()?;
        let counters = source.take_counters()?;
        // The kernel counts program run time only while someone asks it to.
        let always_on = read_u64(&root.join("proc/sys/kernel/bpf_stats_enabled")).is_ok_and(|v| v == 1);
        if always_on {
            tracing::info!(
                "kernel.bpf_stats_enabled is on: the CPU budget measures the sample program all the time"
            );
        } else {
            tracing::info!(
                "BPF run-time statistics go on for 1 s in every {RUN_STATS_EVERY} while the sample source runs \
                 (system-wide: every BPF program pays two clock reads per run then); the CPU budget prices the \
                 other seconds at the measured cost per run"
            );
        }
        let counters = Arc::new(counters);
        let mut sampler = sampler;
        if let Some(p) = period {
            sampler.default_period = p;
        }
        let min_period = sampler.align(sampler.default_period);
        let prog = source.load_perf_program()?;
        let prog_fd = prog.fd().map_err(|e| BpfError::Program {
            program: SourceKind::HwSample.program(),
            target: "perf_event".into(),
            error: Box::new(e),
            hint: "",
        })?;
        let events = CpuEvents::open(root, sampler, prog_fd.as_fd())?;
        let status = Arc::new(SamplerStatus {
            description: events.sampler().describe(),
            kind: events.sampler().kind,
            budget,
            period: AtomicU64::new(events.period()),
            cpus: AtomicU64::new(events.cpus() as u64),
            share_ppm: AtomicU64::new(0),
        });
        let me = Self {
            events,
            source,
            budget: CpuBudget::new(budget, min_period),
            status,
            counters: counters.clone(),
            last: None,
            run_stats: RunTimeSampling {
                always_on,
                fd: None,
                opened_at: None,
                ns_per_run: None,
                intervals: 0,
            },
        };
        Ok((me, ring, counters))
    }

    /// New lower-tier ranges for the program's filter (memory hot-plug).
    pub fn set_lower_tier(&mut self, ranges: &[PfnRange]) -> Result<(), BpfError> {
        self.source.set_lower_tier(ranges)
    }

    pub fn status(&self) -> Arc<SamplerStatus> {
        self.status.clone()
    }

    pub fn events(&self) -> &CpuEvents {
        &self.events
    }

    /// Total run time of the sample program so far (kernel run-time statistics).
    pub fn source_run_time(&self) -> Duration {
        self.source.run_stats().map(|s| s.run_time).unwrap_or_default()
    }

    /// Once per interval: the cost since the last call (BPF run time plus
    /// `consumer_ns`, the consumer's CPU time spent on samples), a new period
    /// if the budget asks for one, and events for CPUs that came online.
    pub fn tick(&mut self, consumer_ns: u64) -> IntervalCost {
        let cost = self.measure(consumer_ns);
        if cost.wall_ns > 0 {
            let next = self.budget.next_period(self.events.period(), &cost);
            if let Err(e) = self.events.set_period(next) {
                tracing::warn!("setting the sample period to {next}: {e}");
            }
        }
        match self.events.refresh() {
            Ok(0) => {}
            Ok(n) => tracing::info!("sampling on {n} more CPU(s) that came online"),
            Err(e) => tracing::warn!("{e}"),
        }
        self.status.period.store(self.events.period(), Relaxed);
        self.status.cpus.store(self.events.cpus() as u64, Relaxed);
        cost
    }

    /// The cost since the last call, without acting on it.
    pub fn measure(&mut self, consumer_ns: u64) -> IntervalCost {
        let now = Instant::now();
        let seen = self.counters.read().map(|c| c.seen).unwrap_or(0);
        let bpf_ns = self.bpf_ns_since_last(seen);
        let cost = match self.last {
            Some((t, _)) => {
                IntervalCost { wall_ns: now.duration_since(t).as_nanos() as u64, bpf_ns, consumer_ns }
            }
            None => IntervalCost::default(),
        };
        self.last = Some((now, seen));
        if cost.wall_ns > 0 {
            self.status.share_ppm.store((cost.share() * 1e6) as u64, Relaxed);
        }
        self.schedule_run_stats();
        cost
    }

    /// The program's run time since the last call: measured when statistics
    /// were on for the interval, else runs × the last measured cost per run.
    fn bpf_ns_since_last(&mut self, seen: u64) -> u64 {
        let runs = self.last.map_or(0, |(_, s)| seen.saturating_sub(s));
        let r = &mut self.run_stats;
        let stats = self.source.run_stats().ok();
        if r.always_on {
            let now = stats.map_or(Duration::ZERO, |s| s.run_time);
            let before = r.opened_at.map_or(now, |(t, _)| t);
            r.opened_at = stats.map(|s| (s.run_time, s.run_count));
            return now.saturating_sub(before).as_nanos() as u64;
        }
        if r.fd.take().is_some()
            && let (Some((t0, c0)), Some(s)) = (r.opened_at.take(), stats)
        {
            let (dt, dc) = (s.run_time.saturating_sub(t0), s.run_count.saturating_sub(c0));
            if dc > 0 {
                r.ns_per_run = Some(dt.as_nanos() as f64 / dc as f64);
            }
            return dt.as_nanos() as u64;
        }
        (r.ns_per_run.unwrap_or(0.0) * runs as f64) as u64
    }

    /// Opens the next measured interval when its turn comes (the first one at once).
    fn schedule_run_stats(&mut self) {
        let r = &mut self.run_stats;
        if r.always_on {
            return;
        }
        r.intervals += 1;
        if r.intervals % RUN_STATS_EVERY != 1 {
            return;
        }
        match enable_run_time_stats() {
            Ok(fd) => {
                r.fd = Some(fd);
                r.opened_at = self.source.run_stats().ok().map(|s| (s.run_time, s.run_count));
            }
            Err(e) if r.intervals == 1 => {
                tracing::warn!(
                    "BPF run-time statistics unavailable ({e}): the CPU budget sees only the consumer"
                )
            }
            Err(_) => {}
        }
    }
}
