//! `bench promote` (in the box): hotpage's promotion path against a raw loop
//! of `move_pages(2)` with the same batch size, on the same pages, in the same
//! run. hotpage's path is everything after detection: taking READY records
//! from the hot map, re-verifying each page in pagemap and kpageflags,
//! grouping, rate and headroom checks, `move_pages`, and the accounting. Also
//! the raw call's throughput by batch size.

use std::{sync::Arc, time::Instant};

use hotpage::{
    hotmap::{Access, HotMap, HotMapConfig, MemoryLayout, RecordMode},
    promoter::move_pages::{MPOL_MF_MOVE_ALL, move_pages},
    promoter::{LiveSystem, NodeWorker, PromoterConfig, RateLimit, TargetLedger, Targets},
    sys::pagemap::Pagemap,
    sys::topology::TierTopology,
};
use hotpage_common::source;
use serde::Serialize;

use crate::{
    bench::median,
    memory::Region,
    thread_time::thread_cpu_time,
    workload::{nodes_of, place_on_node, share_on},
};

#[derive(Clone, Debug, Serialize)]
pub struct Measure {
    pub pages: u64,
    pub seconds: f64,
    pub cpu_seconds: f64,
}

impl Measure {
    pub fn pages_per_s(&self) -> f64 {
        self.pages as f64 / self.seconds
    }

    pub fn mb_per_s(&self) -> f64 {
        self.pages_per_s() * 4096.0 / 1e6
    }

    pub fn cpu_s_per_gib(&self) -> f64 {
        self.cpu_seconds / (self.pages as f64 * 4096.0 / (1u64 << 30) as f64)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct SweepPoint {
    pub batch: usize,
    pub pages_per_s: f64,
    pub mb_per_s: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct PromoteReport {
    pub bench: &'static str,
    pub kernel: String,
    pub region_mib: usize,
    pub batch: usize,
    pub rounds: usize,
    pub hotpage_pages_per_s: f64,
    pub hotpage_mb_per_s: f64,
    pub hotpage_cpu_s_per_gib: f64,
    pub raw_pages_per_s: f64,
    pub raw_mb_per_s: f64,
    pub raw_cpu_s_per_gib: f64,
    /// hotpage ÷ raw throughput (goal ≥ 0.95).
    pub ratio: f64,
    pub sweep: Vec<SweepPoint>,
    pub hotpage_rounds: Vec<Measure>,
    pub raw_rounds: Vec<Measure>,
}

fn addrs(region: &Region) -> Vec<u64> {
    (0..region.pages()).map(|i| region.page_addr(i)).collect()
}

/// Moves every page of the region to `node` in batches of `batch`; returns the measure.
fn raw_move(pages: &[u64], node: i32, batch: usize) -> anyhow::Result<Measure> {
    let nodes = vec![node; batch];
    let mut status = vec![0; batch];
    let (t, c) = (Instant::now(), thread_cpu_time());
    for chunk in pages.chunks(batch) {
        move_pages(0, chunk, Some(&nodes[..chunk.len()]), &mut status[..chunk.len()], MPOL_MF_MOVE_ALL)?;
    }
    Ok(Measure {
        pages: pages.len() as u64,
        seconds: t.elapsed().as_secs_f64(),
        cpu_seconds: (thread_cpu_time() - c).as_secs_f64(),
    })
}

/// Makes every page of the region READY in a fresh hot map (detection is not
/// what this measures), then lets one node worker promote them all.
fn hotpage_move(topo: &TierTopology, region: &Region, batch: usize) -> anyhow::Result<Measure> {
    let map = Arc::new(HotMap::new(&MemoryLayout::from(topo), HotMapConfig::default(), 1 << 20)?);
    map.start();
    let pagemap = Pagemap::open(std::path::Path::new("/"), std::process::id())?;
    let pid = std::process::id();
    for i in 0..region.pages() {
        let vaddr = region.page_addr(i);
        let pfn = pagemap.entry(vaddr)?.pfn().ok_or_else(|| anyhow::anyhow!("page {i} not present"))?;
        let access = Access::new(pfn, 0, 0, source::HINT_FAULT, 10).mapped(pid, vaddr);
        map.record(&access)?;
        map.record(&Access { now: 11, ..access })?;
    }
    let config =
        PromoterConfig { batch_pages: batch, rate_limit: RateLimit::Unlimited, ..PromoterConfig::default() };
    let mut worker = NodeWorker::new(
        1,
        map.clone(),
        Arc::new(Targets::new(topo, RecordMode::Default, None)),
        config,
        LiveSystem::new(std::path::Path::new("/")),
        TargetLedger::new(&config),
        Arc::default(),
    );
    let (t, c) = (Instant::now(), thread_cpu_time());
    let mut moved = 0;
    loop {
        let end = worker.round(true);
        moved += end.moved;
        if end.moved == 0 {
            break;
        }
    }
    Ok(Measure {
        pages: moved,
        seconds: t.elapsed().as_secs_f64(),
        cpu_seconds: (thread_cpu_time() - c).as_secs_f64(),
    })
}

pub fn run(region_mib: usize, batch: usize, rounds: usize) -> anyhow::Result<PromoteReport> {
    let topo = TierTopology::read(std::path::Path::new("/"))?;
    topo.require_lower_tier(std::path::Path::new("/"))?;
    let region = Region::map(region_mib << 20)?;
    region.no_huge_pages()?;
    place_on_node(&region, 1)?;
    let pages = addrs(&region);
    let back = |region: &Region| -> anyhow::Result<()> {
        raw_move(&pages, 1, 512)?;
        anyhow::ensure!(share_on(&nodes_of(region)?, 1) == 1.0, "pages did not all return to node 1");
        Ok(())
    };
    let (mut h, mut r) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Which one goes first changes its speed by ~5% here: alternate.
        if round % 2 == 1 {
            r.push(raw_move(&pages, 0, batch)?);
            back(&region)?;
        }
        let m = hotpage_move(&topo, &region, batch)?;
        anyhow::ensure!(m.pages == pages.len() as u64, "hotpage moved {} of {} pages", m.pages, pages.len());
        anyhow::ensure!(share_on(&nodes_of(&region)?, 0) == 1.0, "hotpage left pages behind");
        h.push(m);
        back(&region)?;
        if round % 2 == 0 {
            r.push(raw_move(&pages, 0, batch)?);
            back(&region)?;
        }
    }
    let mut sweep = Vec::new();
    for b in [64, 256, 512, 1024, 4096, pages.len()] {
        let m = median(
            (0..rounds)
                .map(|_| raw_move(&pages, 0, b).and_then(|m| back(&region).map(|_| m.pages_per_s())))
                .collect::<anyhow::Result<Vec<_>>>()?,
        );
        sweep.push(SweepPoint { batch: b, pages_per_s: m, mb_per_s: m * 4096.0 / 1e6 });
    }
    let hp = median(h.iter().map(Measure::pages_per_s).collect());
    let rp = median(r.iter().map(Measure::pages_per_s).collect());
    Ok(PromoteReport {
        bench: "promote",
        kernel: super::kernel_release(),
        region_mib,
        batch,
        rounds,
        hotpage_pages_per_s: hp,
        hotpage_mb_per_s: hp * 4096.0 / 1e6,
        hotpage_cpu_s_per_gib: median(h.iter().map(Measure::cpu_s_per_gib).collect()),
        raw_pages_per_s: rp,
        raw_mb_per_s: rp * 4096.0 / 1e6,
        raw_cpu_s_per_gib: median(r.iter().map(Measure::cpu_s_per_gib).collect()),
        ratio: hp / rp,
        sweep,
        hotpage_rounds: h,
        raw_rounds: r,
    })
}

pub fn print(r: &PromoteReport) {
    println!(
        "promote: {} MiB on node 1 → node 0, batches of {}, {} rounds, medians (kernel {})",
        r.region_mib, r.batch, r.rounds, r.kernel
    );
    println!("{:<30} {:>12} {:>10} {:>16}", "path", "pages/s", "MB/s", "CPU s per GiB");
    println!(
        "{:<30} {:>12.0} {:>10.1} {:>16.2}",
        "hotpage promoter", r.hotpage_pages_per_s, r.hotpage_mb_per_s, r.hotpage_cpu_s_per_gib
    );
    println!(
        "{:<30} {:>12.0} {:>10.1} {:>16.2}",
        "raw move_pages loop", r.raw_pages_per_s, r.raw_mb_per_s, r.raw_cpu_s_per_gib
    );
    println!("hotpage ÷ raw: {:.3} (goal ≥ 0.95)", r.ratio);
    println!("raw move_pages by batch size:");
    for p in &r.sweep {
        println!("  {:>8} pages/call: {:>10.0} pages/s {:>8.1} MB/s", p.batch, p.pages_per_s, p.mb_per_s);
    }
}
