//! hotpage: finds hot pages on lower-tier (CXL) memory nodes and promotes them.
//!
//! Data flows one way: kernel (eBPF) → ring buffer → collector → hot map →
//! promoter → stats.

pub mod cli;
pub mod collector;
pub mod config;
pub mod control;
pub mod counters;
pub mod hotmap;
pub mod kernel;
pub mod metrics_export;
pub mod page_migration;
pub mod promoter;
pub mod sources;
pub mod stats;
pub mod sys;

#[cfg(test)]
pub(crate) mod test_fixtures;
