//! Benchmarks behind `cargo xtask bench <name>`. Each measures hotpage and its
//! baseline side by side in one run, prints a table with ratios and writes
//! `target/bench/<name>.json`.

pub mod btf;
pub mod damon;
pub mod e2e;
pub mod hotmap;
pub mod promote;
pub mod replay;
pub mod ring;
pub mod samples;

use std::{fs, io, path::Path};

use serde::Serialize;

/// The empty BPF program (the collection-cost baseline), loaded: the caller
/// attaches it to its perf events.
pub fn load_baseline() -> anyhow::Result<aya::Ebpf> {
    let mut ebpf = aya::EbpfLoader::new().load(hotpage_ebpf::BASELINE)?;
    let prog: &mut aya::programs::PerfEvent = ebpf
        .program_mut(hotpage_ebpf::program::BASELINE)
        .ok_or_else(|| anyhow::anyhow!("baseline program missing"))?
        .try_into()?;
    prog.load()?;
    Ok(ebpf)
}

/// The loaded baseline program of [`load_baseline`].
pub fn baseline_program(ebpf: &aya::Ebpf) -> anyhow::Result<&aya::programs::PerfEvent> {
    Ok(ebpf
        .program(hotpage_ebpf::program::BASELINE)
        .ok_or_else(|| anyhow::anyhow!("baseline program missing"))?
        .try_into()?)
}

/// Median of a non-empty sample (the mean of the middle two for even sizes).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// Writes a benchmark's results as pretty JSON, creating the directory.
pub fn write_json(path: &Path, value: &impl Serialize) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(path, serde_json::to_vec_pretty(value)?)
}

/// `uname -r` of the machine the benchmark runs on.
pub fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }
}
