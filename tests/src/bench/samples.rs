//! `bench samples`: what the sample source costs, as a share of one core, at
//! 1k, 10k and 100k samples/s, against its CPU budget (3% of a core). The
//! host has no PMU, so software page-fault samples stand in: a paced workload
//! thread faults fresh pages at the given rate, one system-wide event per CPU
//! samples every fault (period 1), and the daemon's path consumes them (ring,
//! collector, pagemap lookup, hot map). Beside it, the empty BPF program on the
//! same events (the floor), and the same rate with the budget controller on.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use hotpage::{
    collector::Collector,
    collector::HotMapFeeder,
    hotmap::{HotMap, HotMapConfig},
    sources::AddressResolver,
    sources::samples::perf_event::PerfEventFd,
    sources::samples::{DEFAULT_BUDGET, SampleSource, Sampler},
    sources::{LoadOptions, enable_run_time_stats},
};
use serde::Serialize;

use crate::{bench::median, memory::Region, thread_time::thread_cpu_time};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Variant {
    /// The empty BPF program on the same per-CPU events: the floor.
    EmptyProgram,
    /// hotpage's path, every fault sampled (period 1), no budget.
    Fixed,
    /// hotpage's path with the budget controller moving the period.
    Budgeted,
}

#[derive(Clone, Debug, Serialize)]
pub struct Round {
    pub faults_per_s: f64,
    pub samples_per_s: f64,
    pub bpf_share: f64,
    pub consumer_share: f64,
    /// bpf + consumer, share of one core.
    pub share: f64,
    pub bpf_ns_per_sample: f64,
    pub consumer_ns_per_sample: f64,
    /// Period at the end (Budgeted moves it; the others stay at 1).
    pub final_period: u64,
    /// Share in the last one-second interval: where the budget controller settled.
    pub last_second_share: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub rate: u64,
    pub variant: Variant,
    pub median: Round,
    pub rounds: Vec<Round>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SamplesReport {
    pub bench: &'static str,
    pub kernel: String,
    pub cpus: usize,
    pub seconds_per_round: f64,
    pub budget: f64,
    pub rows: Vec<Row>,
}

/// Faults fresh pages at `rate` per second until `stop`, in 1 ms steps.
fn paced_faults(rate: u64, stop: Arc<AtomicBool>) -> u64 {
    const REGION_PAGES: usize = 16384;
    let per_ms = rate as f64 / 1000.0;
    let start = Instant::now();
    let mut done = 0u64;
    let mut region: Option<(Region, usize)> = None;
    while !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * 1000.0 * per_ms) as u64;
        while done < due {
            let (r, next) = match region.take() {
                Some((r, n)) if n < r.pages() => (r, n),
                _ => {
                    let Ok(r) = Region::map(REGION_PAGES * 4096) else { return done };
                    let _ = r.no_huge_pages();
                    (r, 0)
                }
            };
            r.touch(next, 1);
            region = Some((r, next + 1));
            done += 1;
        }
        thread::sleep(Duration::from_micros(500));
    }
    done
}

fn online_cpus() -> anyhow::Result<Vec<u32>> {
    Ok(hotpage::sources::samples::online_cpus(Path::new("/"))?)
}

fn round(variant: Variant, rate: u64, secs: f64) -> anyhow::Result<Round> {
    let stop = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let _guard = rt.enter();
    let wall = Duration::from_secs_f64(secs);
    match variant {
        Variant::EmptyProgram => {
            let ebpf = crate::bench::load_baseline()?;
            let prog = crate::bench::baseline_program(&ebpf)?;
            let attr = Sampler::software().attr(1);
            let mut fds = Vec::new();
            for cpu in online_cpus()? {
                let fd = PerfEventFd::open(&attr, -1, cpu as i32)?;
                fd.attach_bpf(prog.fd()?)?;
                fd.enable()?;
                fds.push(fd);
            }
            let before = prog.info()?;
            let s2 = stop.clone();
            let w = thread::spawn(move || paced_faults(rate, s2));
            let t0 = Instant::now();
            thread::sleep(wall);
            stop.store(true, Ordering::Relaxed);
            let faults = w.join().map_err(|_| anyhow::anyhow!("workload panicked"))?;
            let el = t0.elapsed().as_secs_f64();
            let after = prog.info()?;
            let runs = after.run_count() - before.run_count();
            let bpf = (after.run_time() - before.run_time()).as_nanos() as f64;
            Ok(Round {
                faults_per_s: faults as f64 / el,
                samples_per_s: runs as f64 / el,
                bpf_share: bpf / 1e9 / el,
                consumer_share: 0.0,
                share: bpf / 1e9 / el,
                bpf_ns_per_sample: bpf / runs.max(1) as f64,
                consumer_ns_per_sample: 0.0,
                final_period: 1,
                last_second_share: bpf / 1e9 / el,
            })
        }
        Variant::Fixed | Variant::Budgeted => {
            let (layout, ranges) = crate::host_tier::host_memory_as_lower_tier()?;
            let map = Arc::new(HotMap::new(&layout, HotMapConfig::default(), 1 << 18)?);
            map.start();
            let mut consumer = AddressResolver::new(HotMapFeeder::new(map), Path::new("/"), &ranges);
            let opts = LoadOptions { ring_bytes: 16 << 20, ..LoadOptions::default() };
            let (mut src, ring, counters) = SampleSource::start(
                Path::new("/"),
                Sampler::software(),
                &opts,
                &ranges,
                DEFAULT_BUDGET,
                Some(1),
            )?;
            let mut collector = Collector::new(vec![ring], Duration::from_millis(100))?;
            // The whole run measured (the source itself takes statistics only
            // 1 s in 10): the bench's own hold keeps them on throughout.
            let _run_stats = enable_run_time_stats().ok();
            src.tick(0);
            let s2 = stop.clone();
            let w = thread::spawn(move || paced_faults(rate, s2));
            let (t0, cpu0, e0) = (Instant::now(), thread_cpu_time(), counters.read()?.emitted);
            let bpf0 = src.source_run_time();
            // One-second intervals, as the daemon's budget loop.
            let mut last_cpu = cpu0;
            let mut last_share = 0.0;
            while t0.elapsed() < wall {
                rt.block_on(collector.run(&mut consumer, tokio::time::sleep(Duration::from_secs(1))))?;
                let cpu = thread_cpu_time();
                let consumer_ns = (cpu - last_cpu).as_nanos() as u64;
                // Fixed measures the same way but leaves the period alone.
                last_share = if variant == Variant::Budgeted {
                    src.tick(consumer_ns).share()
                } else {
                    src.measure(consumer_ns).share()
                };
                last_cpu = cpu;
            }
            stop.store(true, Ordering::Relaxed);
            let faults = w.join().map_err(|_| anyhow::anyhow!("workload panicked"))?;
            collector.drain(&mut consumer);
            let el = t0.elapsed().as_secs_f64();
            let consumer_ns = (thread_cpu_time() - cpu0).as_nanos() as f64;
            let bpf = (src.source_run_time() - bpf0).as_nanos() as f64;
            let samples = counters.read()?.emitted - e0;
            Ok(Round {
                faults_per_s: faults as f64 / el,
                samples_per_s: samples as f64 / el,
                bpf_share: bpf / 1e9 / el,
                consumer_share: consumer_ns / 1e9 / el,
                share: (bpf + consumer_ns) / 1e9 / el,
                bpf_ns_per_sample: bpf / samples.max(1) as f64,
                consumer_ns_per_sample: consumer_ns / samples.max(1) as f64,
                final_period: src.events().period(),
                last_second_share: last_share,
            })
        }
    }
}

fn median_round(rounds: &[Round]) -> Round {
    let m = |f: fn(&Round) -> f64| median(rounds.iter().map(f).collect());
    Round {
        faults_per_s: m(|r| r.faults_per_s),
        samples_per_s: m(|r| r.samples_per_s),
        bpf_share: m(|r| r.bpf_share),
        consumer_share: m(|r| r.consumer_share),
        share: m(|r| r.share),
        bpf_ns_per_sample: m(|r| r.bpf_ns_per_sample),
        consumer_ns_per_sample: m(|r| r.consumer_ns_per_sample),
        final_period: median(rounds.iter().map(|r| r.final_period as f64).collect()) as u64,
        last_second_share: m(|r| r.last_second_share),
    }
}

pub fn run(rates: &[u64], secs: f64, rounds: usize) -> anyhow::Result<SamplesReport> {
    let _stats = enable_run_time_stats()?;
    let variants = [Variant::EmptyProgram, Variant::Fixed, Variant::Budgeted];
    let mut rows = Vec::new();
    for &rate in rates {
        let mut per: Vec<Vec<Round>> = vec![Vec::new(); variants.len()];
        // Interleaved round by round, so drift hits every variant alike.
        for _ in 0..rounds {
            for (i, v) in variants.iter().enumerate() {
                per[i].push(round(*v, rate, secs)?);
            }
        }
        for (i, v) in variants.iter().enumerate() {
            rows.push(Row { rate, variant: *v, median: median_round(&per[i]), rounds: per[i].clone() });
        }
    }
    Ok(SamplesReport {
        bench: "samples",
        kernel: crate::bench::kernel_release(),
        cpus: online_cpus()?.len(),
        seconds_per_round: secs,
        budget: DEFAULT_BUDGET,
        rows,
    })
}

pub fn print(r: &SamplesReport) {
    println!(
        "bench samples: software page-fault samples on {} CPUs, {} s per round, medians; budget {:.0}% of one core",
        r.cpus,
        r.seconds_per_round,
        r.budget * 100.0
    );
    println!(
        "{:>8}  {:<28} {:>10} {:>10} {:>8} {:>9} {:>8} {:>7} {:>8} {:>8} {:>7} {:>11}",
        "rate/s",
        "variant",
        "faults/s",
        "samples/s",
        "BPF %",
        "consumer%",
        "total %",
        "BPF ns",
        "cons ns",
        "last 1s %",
        "period",
        "last÷budget"
    );
    for row in &r.rows {
        let m = &row.median;
        let label = match row.variant {
            Variant::EmptyProgram => "empty program (floor)",
            Variant::Fixed => "hotpage, every fault sampled",
            Variant::Budgeted => "hotpage, budget on",
        };
        println!(
            "{:>8}  {:<28} {:>10.0} {:>10.0} {:>8.3} {:>9.3} {:>8.3} {:>7.0} {:>8.0} {:>8.3} {:>7} {:>11.2}",
            row.rate,
            label,
            m.faults_per_s,
            m.samples_per_s,
            m.bpf_share * 100.0,
            m.consumer_share * 100.0,
            m.share * 100.0,
            m.bpf_ns_per_sample,
            m.consumer_ns_per_sample,
            m.last_second_share * 100.0,
            m.final_period,
            m.last_second_share / r.budget
        );
    }
}
