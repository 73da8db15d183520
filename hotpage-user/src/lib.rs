//! hotpage: finds hot pages on lower-tier (CXL) memory nodes and promotes them.
//!
//! Data flows one way: kernel (eBPF) → ring buffer → collector → hot map →
//! promoter → stats.

pub mod cli;
pub mod collector;
pub mod counters;
pub mod daemon;
pub mod hotmap;
pub mod kernel;
pub mod promoter;
pub mod report;
pub mod sources;
pub mod sys;

#[cfg(test)]
pub(crate) mod test_fixtures;
