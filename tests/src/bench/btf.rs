//! `bench btf` (on the host, and in the box with `cargo xtask vm bench btf`):
//! what hotpage's start spends on the kernel's BTF, the way it reads it
//! (`kernel::kernel_btf`: mapped, or on kernels whose sysfs file cannot be
//! mapped a memfd copy, mapped) against a full parse of the same file, side
//! by side in one run. Each round reads the BTF and probes the hint-fault
//! hook on it (the hook's prototype and the folio flags' stamp layout), as
//! `run` and `check` do; the two ways alternate which goes first.

use std::{path::Path, time::Instant};

use hotpage::kernel::{HintFaultHook, kernel_btf, release};
use serde::Serialize;

use crate::{bench::median, thread_time::thread_cpu_time};

#[derive(Clone, Debug, Serialize)]
pub struct Way {
    /// This thread's CPU seconds per round (read and probe).
    pub cpu_s: Vec<f64>,
    pub wall_s: Vec<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BtfReport {
    pub bench: &'static str,
    pub kernel: String,
    pub btf_bytes: u64,
    pub rounds: usize,
    /// hotpage's way (`kernel_btf`).
    pub mapped: Way,
    /// `btf_rs::Btf::from_file`: the whole file parsed up front.
    pub parsed: Way,
    /// Median CPU of the parse over the mapping's.
    pub cpu_ratio: f64,
}

fn round(
    read: impl Fn() -> anyhow::Result<btf_rs::Btf>,
    root: &Path,
    rel: &str,
    way: &mut Way,
) -> anyhow::Result<()> {
    let (t, c) = (Instant::now(), thread_cpu_time());
    let btf = read()?;
    // What the start asks of it; a kernel without the hook still reads it.
    let _ = HintFaultHook::probe(&btf, root, rel);
    way.cpu_s.push((thread_cpu_time() - c).as_secs_f64());
    way.wall_s.push(t.elapsed().as_secs_f64());
    Ok(())
}

pub fn run(rounds: usize) -> anyhow::Result<BtfReport> {
    let root = Path::new("/");
    let path = root.join("sys/kernel/btf/vmlinux");
    let rel = release(root);
    let btf_bytes = std::fs::metadata(&path)
        .map_err(|e| anyhow::anyhow!("{}: {e}: this kernel has no BTF to read", path.display()))?
        .len();
    let empty = || Way { cpu_s: Vec::new(), wall_s: Vec::new() };
    let (mut mapped, mut parsed) = (empty(), empty());
    let map = || Ok(kernel_btf(root)?);
    let parse = || Ok(btf_rs::Btf::from_file(&path)?);
    for r in 0..rounds.max(1) {
        if r % 2 == 0 {
            round(map, root, &rel, &mut mapped)?;
            round(parse, root, &rel, &mut parsed)?;
        } else {
            round(parse, root, &rel, &mut parsed)?;
            round(map, root, &rel, &mut mapped)?;
        }
    }
    let cpu_ratio = median(parsed.cpu_s.clone()) / median(mapped.cpu_s.clone());
    Ok(BtfReport {
        bench: "btf",
        kernel: crate::bench::kernel_release(),
        btf_bytes,
        rounds: rounds.max(1),
        mapped,
        parsed,
        cpu_ratio,
    })
}

pub fn print(r: &BtfReport) {
    println!(
        "bench btf: {} ({:.1} MB of BTF), {} rounds each, alternated; medians",
        r.kernel,
        r.btf_bytes as f64 / 1e6,
        r.rounds
    );
    println!("| way | CPU ms | wall ms |");
    println!("|---|---:|---:|");
    for (name, w) in
        [("hotpage (kernel_btf: mapped)", &r.mapped), ("full parse (btf_rs::Btf::from_file)", &r.parsed)]
    {
        println!("| {name} | {:.1} | {:.1} |", median(w.cpu_s.clone()) * 1e3, median(w.wall_s.clone()) * 1e3);
    }
    println!("parse / mapped CPU: {:.1}×", r.cpu_ratio);
}
