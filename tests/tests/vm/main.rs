//! Box tests: run as root inside the emulated CXL box (`cargo xtask vm test`),
//! where node 0 is DRAM with the CPUs and node 1 a CPU-less lower tier.
//! They fail, rather than skip, anywhere else. One binary, by area as aya's
//! integration tests are.

// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used)]

mod common;
mod daemon;
mod hint_faults;
mod promoter;
mod settings;
