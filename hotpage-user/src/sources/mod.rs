//! The sources: kernel → events. Each source is one eBPF object (C, CO-RE)
//! with its own ring buffer, per-CPU counters and lower-tier filter: hint
//! faults (`fentry` on the kernel's hint-fault check) and memory samples
//! (IBS, PEBS or software events, through `perf_event`, in [`samples`]) and
//! DAMON's region reports (`tp_btf` on `damon:damon_aggregated`, in [`damon`]).
//! The [`resolver`] gives events without a pfn (and every sample) their
//! page and folio before the collector's consumer records them.

mod counters;
pub mod cpu_budget;
pub mod damon;
pub mod hook_check;
mod object;
pub mod resolver;
pub mod samples;

pub use counters::{CounterSnapshot, SourceCounters};
pub use hook_check::{HookCheck, HookReport, HookVerdict};
pub use object::{
    BpfError, DamonArgs, LoadOptions, LoadedSource, ProgramRunStats, SourceKind, enable_run_time_stats,
};
pub use resolver::{AddressResolver, ResolveCounters, ResolveStats};
