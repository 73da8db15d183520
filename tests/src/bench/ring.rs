//! `bench ring`: what one event costs in the BPF program and in the consumer,
//! with batched against per-event wake-ups, beside an empty program and a bare
//! workload. The host cannot run fentry, so the sample program on this
//! thread's software page faults stands in for the hook; the ring buffer,
//! emit path and collector are the ones the daemon uses.

use std::{
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use hotpage::{
    collector::{Collector, EventConsumer},
    sources::samples::perf_event::{
        PerfEventAttr, PerfEventFd, attr_flags, perf_type, sample_type, sw_event,
    },
    sources::{LoadOptions, LoadedSource, SourceKind, enable_run_time_stats},
};
use hotpage_common::HotpageEvent;
use serde::Serialize;

use crate::{bench::median, memory::Region, thread_time::thread_cpu_time};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Variant {
    /// No perf event: the workload alone.
    Bare,
    /// The baseline: an empty BPF program on the same event.
    EmptyProgram,
    /// hotpage's program, consumer woken every N events per CPU.
    Hotpage { wakeup_every: u32 },
}

impl Variant {
    fn label(self) -> String {
        match self {
            Self::Bare => "no program (workload alone)".into(),
            Self::EmptyProgram => "empty BPF program (baseline)".into(),
            Self::Hotpage { wakeup_every: 1 } => "hotpage, wake-up every event".into(),
            Self::Hotpage { wakeup_every: DEFAULT_WAKEUP } => {
                format!("hotpage, wake-up every {DEFAULT_WAKEUP} (default)")
            }
            Self::Hotpage { wakeup_every } => format!("hotpage, wake-up every {wakeup_every}"),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct RoundResult {
    pub events: u64,
    /// Mean BPF program run time per invocation (kernel run-time stats).
    pub bpf_ns_per_event: Option<f64>,
    /// Consumer thread CPU time per event consumed.
    pub consumer_ns_per_event: Option<f64>,
    pub consumer_wakeups: u64,
    /// Workload thread CPU time per page fault (user + kernel).
    pub workload_ns_per_fault: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct VariantSummary {
    pub variant: Variant,
    pub label: String,
    pub events_per_round: f64,
    pub bpf_ns_per_event: Option<f64>,
    pub consumer_ns_per_event: Option<f64>,
    pub consumer_wakeups_per_round: f64,
    pub workload_ns_per_fault: f64,
    pub rounds: Vec<RoundResult>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RingReport {
    pub bench: &'static str,
    pub kernel: String,
    pub pages_per_round: usize,
    pub rounds: usize,
    pub variants: Vec<VariantSummary>,
    /// per-event wake-ups ÷ batched, BPF side.
    pub bpf_per_event_over_batched: f64,
    /// per-event wake-ups ÷ batched, consumer side.
    pub consumer_per_event_over_batched: f64,
    /// hotpage (batched) minus the empty program, ns per event.
    pub bpf_ns_over_empty: f64,
}

const CHUNK_PAGES: usize = 8192;
const DEFAULT_WAKEUP: u32 = LoadOptions::DEFAULT_WAKEUP_EVERY;

/// Touches `pages` fresh pages in 32 MiB chunks: one minor fault each.
fn workload(pages: usize) -> u64 {
    let mut faults = 0;
    while (faults as usize) < pages {
        let n = CHUNK_PAGES.min(pages - faults as usize);
        let Ok(region) = Region::map(n * 4096) else { break };
        let _ = region.no_huge_pages();
        for i in 0..n {
            region.touch(i, 1);
        }
        faults += n as u64;
    }
    faults
}

fn page_fault_attr() -> PerfEventAttr {
    let mut attr = PerfEventAttr::new(perf_type::SOFTWARE, sw_event::PAGE_FAULTS);
    attr.sample_period = 1;
    attr.sample_type = sample_type::ADDR;
    attr.flags = attr_flags::DISABLED | attr_flags::EXCLUDE_KERNEL | attr_flags::EXCLUDE_HV;
    attr
}

/// Counts events and folds their pfns, like a minimal real consumer.
struct Counting {
    events: u64,
    fold: u64,
}

impl EventConsumer for Counting {
    fn consume(&mut self, ev: &HotpageEvent) {
        self.events += 1;
        self.fold ^= ev.vaddr.rotate_left((self.events & 63) as u32);
    }
}

fn run_round(variant: Variant, pages: usize) -> anyhow::Result<RoundResult> {
    let measure = |perf: Option<&PerfEventFd>| -> anyhow::Result<(u64, f64)> {
        if let Some(p) = perf {
            p.enable()?;
        }
        let t0 = thread_cpu_time();
        let faults = workload(pages);
        let cpu = thread_cpu_time() - t0;
        if let Some(p) = perf {
            p.disable()?;
        }
        Ok((faults, cpu.as_nanos() as f64 / faults.max(1) as f64))
    };

    match variant {
        Variant::Bare => {
            let (_, workload_ns) = measure(None)?;
            Ok(RoundResult {
                events: 0,
                bpf_ns_per_event: None,
                consumer_ns_per_event: None,
                consumer_wakeups: 0,
                workload_ns_per_fault: workload_ns,
            })
        }
        Variant::EmptyProgram => {
            let ebpf = crate::bench::load_baseline()?;
            let prog = crate::bench::baseline_program(&ebpf)?;
            let perf = PerfEventFd::open(&page_fault_attr(), 0, -1)?;
            perf.attach_bpf(prog.fd()?)?;
            let before = prog.info()?;
            let (_, workload_ns) = measure(Some(&perf))?;
            let after = prog.info()?;
            let runs = after.run_count() - before.run_count();
            let time = after.run_time() - before.run_time();
            Ok(RoundResult {
                events: runs,
                bpf_ns_per_event: Some(time.as_nanos() as f64 / runs.max(1) as f64),
                consumer_ns_per_event: None,
                consumer_wakeups: 0,
                workload_ns_per_fault: workload_ns,
            })
        }
        Variant::Hotpage { wakeup_every } => {
            let opts = LoadOptions { wakeup_every, ring_bytes: 64 << 20, ..LoadOptions::default() };
            let mut src = LoadedSource::load(SourceKind::HwSample, &opts)?;
            let prog = src.load_perf_program()?;
            let perf = PerfEventFd::open(&page_fault_attr(), 0, -1)?;
            perf.attach_bpf(prog.fd()?)?;
            let ring = src.take_ring()?;

            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let (ready_tx, ready_rx) = mpsc::channel();
            let consumer = thread::spawn(move || -> anyhow::Result<(u64, Duration, u64)> {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                rt.block_on(async move {
                    let mut collector = Collector::new(vec![ring], Duration::from_millis(100))?;
                    let mut c = Counting { events: 0, fold: 0 };
                    let t0 = thread_cpu_time();
                    let _ = ready_tx.send(());
                    let stats = collector
                        .run(&mut c, async {
                            let _ = stop_rx.await;
                        })
                        .await?;
                    std::hint::black_box(c.fold);
                    Ok((c.events, thread_cpu_time() - t0, stats.wakeups))
                })
            });
            let _ = ready_rx.recv_timeout(Duration::from_secs(10));
            let before = src.run_stats()?;
            let (_, workload_ns) = measure(Some(&perf))?;
            let after = src.run_stats()?;
            // Let the last wake-up land before stopping.
            let settle = Instant::now();
            while settle.elapsed() < Duration::from_millis(150) {
                thread::sleep(Duration::from_millis(10));
            }
            let _ = stop_tx.send(());
            let (events, consumer_cpu, wakeups) =
                consumer.join().map_err(|_| anyhow::anyhow!("consumer thread panicked"))??;
            let runs = after.run_count - before.run_count;
            Ok(RoundResult {
                events,
                bpf_ns_per_event: Some(
                    (after.run_time - before.run_time).as_nanos() as f64 / runs.max(1) as f64,
                ),
                consumer_ns_per_event: Some(consumer_cpu.as_nanos() as f64 / events.max(1) as f64),
                consumer_wakeups: wakeups,
                workload_ns_per_fault: workload_ns,
            })
        }
    }
}

pub fn run(pages: usize, rounds: usize) -> anyhow::Result<RingReport> {
    let _stats = enable_run_time_stats()?;
    let variants = [
        Variant::Bare,
        Variant::EmptyProgram,
        Variant::Hotpage { wakeup_every: DEFAULT_WAKEUP },
        Variant::Hotpage { wakeup_every: 1 },
        // The sweep behind the default.
        Variant::Hotpage { wakeup_every: 64 },
        Variant::Hotpage { wakeup_every: 256 },
        Variant::Hotpage { wakeup_every: 2048 },
    ];
    // Warm the page allocator and caches once, then interleave the variants
    // round by round so drift on a noisy machine hits them all alike.
    workload(pages.min(CHUNK_PAGES * 4));
    let mut results: Vec<Vec<RoundResult>> = vec![Vec::new(); variants.len()];
    for _ in 0..rounds {
        for (i, v) in variants.iter().enumerate() {
            results[i].push(run_round(*v, pages)?);
        }
    }

    let summaries: Vec<VariantSummary> = variants
        .iter()
        .zip(results)
        .map(|(v, rounds)| {
            let opt = |f: &dyn Fn(&RoundResult) -> Option<f64>| {
                let xs: Vec<f64> = rounds.iter().filter_map(f).collect();
                (!xs.is_empty()).then(|| median(xs))
            };
            VariantSummary {
                variant: *v,
                label: v.label(),
                events_per_round: median(rounds.iter().map(|r| r.events as f64).collect()),
                bpf_ns_per_event: opt(&|r| r.bpf_ns_per_event),
                consumer_ns_per_event: opt(&|r| r.consumer_ns_per_event),
                consumer_wakeups_per_round: median(
                    rounds.iter().map(|r| r.consumer_wakeups as f64).collect(),
                ),
                workload_ns_per_fault: median(rounds.iter().map(|r| r.workload_ns_per_fault).collect()),
                rounds,
            }
        })
        .collect();
    let get = |v: Variant, f: fn(&VariantSummary) -> Option<f64>| {
        summaries.iter().find(|s| s.variant == v).and_then(f).unwrap_or(f64::NAN)
    };
    let batched = Variant::Hotpage { wakeup_every: DEFAULT_WAKEUP };
    let per_event = Variant::Hotpage { wakeup_every: 1 };
    let report = RingReport {
        bench: "ring",
        kernel: super::kernel_release(),
        pages_per_round: pages,
        rounds,
        bpf_per_event_over_batched: get(per_event, |s| s.bpf_ns_per_event)
            / get(batched, |s| s.bpf_ns_per_event),
        consumer_per_event_over_batched: get(per_event, |s| s.consumer_ns_per_event)
            / get(batched, |s| s.consumer_ns_per_event),
        bpf_ns_over_empty: get(batched, |s| s.bpf_ns_per_event)
            - get(Variant::EmptyProgram, |s| s.bpf_ns_per_event),
        variants: summaries,
    };
    Ok(report)
}

pub fn print(r: &RingReport) {
    let fmt = |x: Option<f64>| x.map_or("-".to_owned(), |v| format!("{v:.0}"));
    println!(
        "ring buffer cost per event: {} pages touched per round, {} rounds, medians (kernel {})",
        r.pages_per_round, r.rounds, r.kernel
    );
    println!(
        "{:<32} {:>12} {:>14} {:>16} {:>14} {:>16}",
        "variant", "events/round", "BPF ns/event", "consumer ns/ev", "wakeups/round", "workload ns/flt"
    );
    for v in &r.variants {
        println!(
            "{:<32} {:>12.0} {:>14} {:>16} {:>14.0} {:>16.0}",
            v.label,
            v.events_per_round,
            fmt(v.bpf_ns_per_event),
            fmt(v.consumer_ns_per_event),
            v.consumer_wakeups_per_round,
            v.workload_ns_per_fault
        );
    }
    println!(
        "per-event ÷ batched ({DEFAULT_WAKEUP}) wake-ups: BPF ×{:.1}, consumer ×{:.1}; hotpage BPF cost over the empty program: {:.0} ns/event",
        r.bpf_per_event_over_batched, r.consumer_per_event_over_batched, r.bpf_ns_over_empty
    );
    println!("goals with batching: BPF ≤ 300 ns/event, consumer ≤ 100 ns/event");
}
