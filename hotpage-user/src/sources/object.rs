//! One loaded eBPF object: a single source of page accesses.

use std::io;

use aya::{
    Btf, Ebpf, EbpfError, EbpfLoader, Pod,
    maps::{Array, MapData, MapError, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, FEntry, PerfEvent, ProgramError},
};
use hotpage_common::{PfnRange, StampLayout, TierMap, source};
use thiserror::Error;

use super::SourceCounters;
use crate::kernel::HintFaultHook;

/// The sources hotpage can load, one object each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceKind {
    HintFault,
    HwSample,
    Damon,
}

impl SourceKind {
    pub fn id(self) -> u16 {
        match self {
            Self::HintFault => source::HINT_FAULT,
            Self::HwSample => source::HW_SAMPLE,
            Self::Damon => source::PGTABLE_SCAN,
        }
    }

    /// Name used in logs, metrics and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Self::HintFault => "hint_faults",
            Self::HwSample => "samples",
            Self::Damon => "damon",
        }
    }

    fn object(self) -> &'static [u8] {
        match self {
            Self::HintFault => hotpage_ebpf::HINT_FAULT,
            Self::HwSample => hotpage_ebpf::HW_SAMPLE,
            Self::Damon => hotpage_ebpf::DAMON,
        }
    }

    pub fn program(self) -> &'static str {
        match self {
            Self::HintFault => hotpage_ebpf::program::HINT_FAULT,
            Self::HwSample => hotpage_ebpf::program::HW_SAMPLE,
            Self::Damon => hotpage_ebpf::program::DAMON,
        }
    }
}

#[derive(Debug, Error)]
pub enum BpfError {
    #[error("loading the {source_name} BPF object: {error}")]
    Load { source_name: &'static str, error: Box<EbpfError> },
    #[error("BPF program {0} missing from its object (build mismatch)")]
    MissingProgram(&'static str),
    #[error("BPF map {0} missing from its object (build mismatch)")]
    MissingMap(&'static str),
    #[error("BPF map: {0}")]
    Map(#[source] MapError),
    #[error("loading BPF program {program} for {target}: {error}{hint}")]
    Program { program: &'static str, target: String, error: Box<ProgramError>, hint: &'static str },
    #[error("reading kernel BTF for CO-RE: {0}")]
    Btf(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Knobs applied when an object is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Events per CPU between forced consumer wake-ups (`wakeup_every`); 1 wakes on every event.
    pub wakeup_every: u32,
    /// Ring buffer size in bytes (a power of two, at least one page).
    pub ring_bytes: u32,
    /// Sample source only: the perf events request PERF_SAMPLE_PHYS_ADDR, so
    /// the program reads the physical address (two probe reads per sample).
    pub sample_phys_addr: bool,
    /// Hint-fault source only: where the kernel keeps the scan stamp
    /// (`word` NONE: events carry no latency).
    pub stamp: StampLayout,
    /// DAMON source only: the tracepoint's argument positions and the
    /// fewest accesses a reported region has.
    pub damon: DamonArgs,
}

/// The DAMON program's load-time knobs: where the tracepoint's arguments
/// are ([`hotpage_ebpf::DAMON_NO_ARG`]: not passed) and the fewest accesses
/// a reported region has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DamonArgs {
    pub region_arg: u32,
    pub target_arg: u32,
    pub target_id_arg: u32,
    pub min_nr_accesses: u32,
}

impl DamonArgs {
    pub fn new(args: crate::sources::damon::tracepoint::AggregatedArgs, min_nr_accesses: u32) -> Self {
        let none = hotpage_ebpf::DAMON_NO_ARG;
        Self {
            region_arg: args.region,
            target_arg: args.target.unwrap_or(none),
            target_id_arg: args.target_id.unwrap_or(none),
            min_nr_accesses,
        }
    }
}

impl Default for DamonArgs {
    /// `(target_id, r, nr_regions)`, the prototype through 6.18; regions accessed at least once.
    fn default() -> Self {
        Self { region_arg: 1, target_arg: hotpage_ebpf::DAMON_NO_ARG, target_id_arg: 0, min_nr_accesses: 1 }
    }
}

impl LoadOptions {
    /// Chosen with `cargo xtask bench ring` (docs/benchmarks.md): each forced
    /// wake-up costs microseconds, so batching pays on both sides; the drain
    /// timer bounds how long a tail waits.
    pub const DEFAULT_WAKEUP_EVERY: u32 = 512;
    pub const DEFAULT_RING_BYTES: u32 = 4 << 20;
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            wakeup_every: Self::DEFAULT_WAKEUP_EVERY,
            ring_bytes: Self::DEFAULT_RING_BYTES,
            sample_phys_addr: false,
            stamp: StampLayout::default(),
            damon: DamonArgs::default(),
        }
    }
}

/// Wraps the shared tier map so aya can copy it into the BPF array.
#[derive(Clone, Copy)]
#[repr(transparent)]
struct PodTierMap(TierMap);
// SAFETY: TierMap is #[repr(C)] plain integers without padding (sizes asserted in hotpage-common).
unsafe impl Pod for PodTierMap {}

#[derive(Clone, Copy)]
#[repr(transparent)]
struct PodStampLayout(StampLayout);
// SAFETY: StampLayout is #[repr(C)] u32s without padding (size asserted in hotpage-common).
unsafe impl Pod for PodStampLayout {}

/// An object loaded into the kernel. Dropping it detaches its programs.
pub struct LoadedSource {
    kind: SourceKind,
    ebpf: Ebpf,
}

impl LoadedSource {
    /// Creates the object's maps and relocates it (CO-RE) against the running kernel.
    pub fn load(kind: SourceKind, opts: &LoadOptions) -> Result<Self, BpfError> {
        let ring = opts.ring_bytes.max(4096).next_power_of_two();
        let wakeup = opts.wakeup_every.max(1);
        let want_phys = u32::from(opts.sample_phys_addr);
        let mut loader = EbpfLoader::new();
        loader
            .override_global(hotpage_ebpf::global::WAKEUP_EVERY, &wakeup, true)
            .map_max_entries(hotpage_ebpf::map::EVENTS, ring);
        let stamp = PodStampLayout(opts.stamp);
        match kind {
            SourceKind::HwSample => {
                loader.override_global(hotpage_ebpf::global::WANT_PHYS_ADDR, &want_phys, true);
            }
            SourceKind::HintFault => {
                loader.override_global(hotpage_ebpf::global::STAMP_LAYOUT, &stamp, true);
            }
            SourceKind::Damon => {
                let d = &opts.damon;
                loader
                    .override_global(hotpage_ebpf::global::REGION_ARG, &d.region_arg, true)
                    .override_global(hotpage_ebpf::global::TARGET_ARG, &d.target_arg, true)
                    .override_global(hotpage_ebpf::global::TARGET_ID_ARG, &d.target_id_arg, true)
                    .override_global(hotpage_ebpf::global::MIN_NR_ACCESSES, &d.min_nr_accesses, true);
            }
        }
        let ebpf = loader
            .load(kind.object())
            .map_err(|error| BpfError::Load { source_name: kind.name(), error: Box::new(error) })?;
        Ok(Self { kind, ebpf })
    }

    pub fn kind(&self) -> SourceKind {
        self.kind
    }

    /// Writes the lower-tier pfn ranges the program filters on.
    pub fn set_lower_tier(&mut self, ranges: &[PfnRange]) -> Result<(), BpfError> {
        let mut map = TierMap::default();
        let n = ranges.len().min(map.ranges.len());
        map.ranges[..n].copy_from_slice(&ranges[..n]);
        map.nr_ranges = n as u32;
        let raw = self
            .ebpf
            .map_mut(hotpage_ebpf::map::TIER_MAP)
            .ok_or(BpfError::MissingMap(hotpage_ebpf::map::TIER_MAP))?;
        let mut array: Array<&mut MapData, PodTierMap> = Array::try_from(raw).map_err(BpfError::Map)?;
        array.set(0, PodTierMap(map), 0).map_err(BpfError::Map)
    }

    /// The hint-fault source as every user runs it: loaded with `opts` and
    /// the hook's stamp layout, filtered to the lower-tier `ranges`, attached
    /// (fentry) to the hook. The object (which detaches the program when
    /// dropped), its ring for the collector and its counters.
    pub fn hint_faults(
        opts: &LoadOptions,
        ranges: &[PfnRange],
        hook: &HintFaultHook,
    ) -> Result<(Self, RingBuf<MapData>, SourceCounters), BpfError> {
        let opts = LoadOptions { stamp: hook.stamp_layout(), ..*opts };
        let mut src = Self::load(SourceKind::HintFault, &opts)?;
        src.set_lower_tier(ranges)?;
        let ring = src.take_ring()?;
        let counters = src.take_counters()?;
        src.attach_fentry(hook.function)?;
        Ok((src, ring, counters))
    }

    /// Loads the hint-fault program against `hook` and attaches it (fentry).
    pub fn attach_fentry(&mut self, hook: &str) -> Result<(), BpfError> {
        let btf = Btf::from_sys_fs().map_err(|e| BpfError::Btf(e.to_string()))?;
        let name = self.kind.program();
        let program_err = |error: ProgramError| {
            let hint = if is_eperm(&error) {
                ": this kernel refuses fentry programs (lockdown, or a kernel without \
                 CONFIG_FUNCTION_TRACER/DYNAMIC_FTRACE_WITH_DIRECT_CALLS); the hint-fault source cannot run here"
            } else {
                ""
            };
            BpfError::Program { program: name, target: hook.to_owned(), error: Box::new(error), hint }
        };
        let prog: &mut FEntry = self
            .ebpf
            .program_mut(name)
            .ok_or(BpfError::MissingProgram(name))?
            .try_into()
            .map_err(program_err)?;
        prog.load(hook, &btf).map_err(program_err)?;
        prog.attach().map_err(program_err)?;
        Ok(())
    }

    /// Loads the DAMON program and attaches it to `damon:damon_aggregated` (tp_btf).
    pub fn attach_damon(&mut self) -> Result<(), BpfError> {
        let btf = Btf::from_sys_fs().map_err(|e| BpfError::Btf(e.to_string()))?;
        let name = self.kind.program();
        let program_err = |error: ProgramError| BpfError::Program {
            program: name,
            target: "tp_btf/damon_aggregated".into(),
            error: Box::new(error),
            hint: "",
        };
        let prog: &mut BtfTracePoint = self
            .ebpf
            .program_mut(name)
            .ok_or(BpfError::MissingProgram(name))?
            .try_into()
            .map_err(program_err)?;
        prog.load("damon_aggregated", &btf).map_err(program_err)?;
        prog.attach().map_err(program_err)?;
        Ok(())
    }

    /// The kdamond whose regions the DAMON program reports (0: none).
    pub fn set_damon_owner(&mut self, pid: u32) -> Result<(), BpfError> {
        let raw = self
            .ebpf
            .map_mut(hotpage_ebpf::map::DAMON_OWNER)
            .ok_or(BpfError::MissingMap(hotpage_ebpf::map::DAMON_OWNER))?;
        let mut array: Array<&mut MapData, u32> = Array::try_from(raw).map_err(BpfError::Map)?;
        array.set(0, pid, 0).map_err(BpfError::Map)
    }

    /// The processes of the kdamond's targets, in their sysfs order (the
    /// tracepoint's target index); the rest of the map cleared.
    pub fn set_damon_targets(&mut self, pids: &[u32]) -> Result<(), BpfError> {
        let raw = self
            .ebpf
            .map_mut(hotpage_ebpf::map::DAMON_TARGETS)
            .ok_or(BpfError::MissingMap(hotpage_ebpf::map::DAMON_TARGETS))?;
        let mut array: Array<&mut MapData, u32> = Array::try_from(raw).map_err(BpfError::Map)?;
        for i in 0..hotpage_ebpf::DAMON_MAX_TARGETS {
            array.set(i as u32, pids.get(i).copied().unwrap_or(0), 0).map_err(BpfError::Map)?;
        }
        Ok(())
    }

    /// Loads the sample program (perf_event); the caller attaches it to its
    /// own perf events with [`crate::sources::samples::perf_event::PerfEventFd::attach_bpf`].
    pub fn load_perf_program(&mut self) -> Result<&PerfEvent, BpfError> {
        let name = self.kind.program();
        let program_err = |error: ProgramError| BpfError::Program {
            program: name,
            target: "perf_event".into(),
            error: Box::new(error),
            hint: "",
        };
        let prog: &mut PerfEvent = self
            .ebpf
            .program_mut(name)
            .ok_or(BpfError::MissingProgram(name))?
            .try_into()
            .map_err(program_err)?;
        prog.load().map_err(program_err)?;
        Ok(prog)
    }

    /// How often the kernel ran the program and for how long in total. The
    /// kernel counts only while BPF run-time statistics are enabled
    /// ([`enable_run_time_stats`] or `kernel.bpf_stats_enabled`).
    pub fn run_stats(&self) -> Result<ProgramRunStats, BpfError> {
        let name = self.kind.program();
        let prog = self.ebpf.program(name).ok_or(BpfError::MissingProgram(name))?;
        let info = prog.info().map_err(|error| BpfError::Program {
            program: name,
            target: "info".into(),
            error: Box::new(error),
            hint: "",
        })?;
        Ok(ProgramRunStats { run_count: info.run_count(), run_time: info.run_time() })
    }

    /// Takes the ring buffer out of the object for the collector.
    pub fn take_ring(&mut self) -> Result<RingBuf<MapData>, BpfError> {
        let map = self
            .ebpf
            .take_map(hotpage_ebpf::map::EVENTS)
            .ok_or(BpfError::MissingMap(hotpage_ebpf::map::EVENTS))?;
        RingBuf::try_from(map).map_err(BpfError::Map)
    }

    /// Takes the counters map out of the object, for whoever reports them.
    pub fn take_counters(&mut self) -> Result<SourceCounters, BpfError> {
        let map = self
            .ebpf
            .take_map(hotpage_ebpf::map::COUNTERS)
            .ok_or(BpfError::MissingMap(hotpage_ebpf::map::COUNTERS))?;
        Ok(SourceCounters::new(PerCpuArray::try_from(map).map_err(BpfError::Map)?))
    }
}

/// Run count and total run time of a loaded program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgramRunStats {
    pub run_count: u64,
    pub run_time: std::time::Duration,
}

/// Turns on BPF run-time accounting while the returned fd stays open.
pub fn enable_run_time_stats() -> Result<std::os::fd::OwnedFd, BpfError> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| BpfError::Io(e.io_error))
}

fn is_eperm(error: &ProgramError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return io.raw_os_error() == Some(libc::EPERM);
        }
        source = e.source();
    }
    false
}
