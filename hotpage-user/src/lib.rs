//! hotpage: finds hot pages on lower-tier (CXL) memory nodes and promotes them.
//!
//! Data flows one way: kernel (eBPF) → ring buffer → collector → hot map →
//! promoter → stats.

pub mod bpf;
pub mod cli;
pub mod clock;
pub mod collector;
pub mod competition;
pub mod config;
pub mod control;
pub mod hotmap;
pub mod kernel;
pub mod kernel_settings;
pub mod kpageflags;
pub mod metrics_export;
pub mod node_meminfo;
pub mod page_migration;
pub mod pagemap;
pub mod perf_event;
pub mod promoter;
pub mod sampling;
pub mod stats;
pub mod sysfs;
pub mod thread_counter;
pub mod thread_time;
pub mod topology;
pub mod vmstat;
pub mod zoneinfo;

#[cfg(test)]
pub(crate) mod test_fixtures;
