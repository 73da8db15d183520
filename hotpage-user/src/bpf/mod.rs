//! Loading hotpage's eBPF objects (one per source), configuring them and
//! reading their per-CPU counters. Attaching is per source: `fentry` for hint
//! faults here, perf events in [`crate::perf_event`].

mod counters;
mod source;

pub use counters::{CounterSnapshot, SourceCounters};
pub use source::{BpfError, LoadOptions, LoadedSource, ProgramRunStats, SourceKind, enable_run_time_stats};
