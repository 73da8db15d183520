//! The system interfaces underneath everything: readers of /proc and /sys
//! (each takes a root path, so tests run on fixture trees) and the clocks.

pub mod clock;
pub mod kpageflags;
pub mod node_meminfo;
pub mod pagemap;
pub mod sysfs;
pub mod thread_time;
pub mod topology;
pub mod vmstat;
pub mod zoneinfo;

#[cfg(test)]
mod garbled_inputs;
