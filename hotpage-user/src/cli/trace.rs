//! `hotpage trace`: the hint-fault source end to end, printed.

use std::{
    io::{self, BufWriter, Write},
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::Args;
use hotpage_common::{HotpageEvent, event_flags, source};
use serde::Serialize;
use tokio::sync::Notify;

use crate::{
    collector::{Collector, EventConsumer, FeedStats, HotMapFeeder},
    daemon::{
        Shutdown,
        preflight::{Preflight, kernel_settings, preflight, tokio_runtime},
    },
    hotmap::{DEFAULT_HINT_CAPACITY, HotMap, HotMapConfig, HotMapCounters, MemoryLayout},
    sources::{CounterSnapshot, LoadOptions, LoadedSource, SourceCounters, SourceKind},
};

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// One JSON object per line (events and summaries) instead of text.
    #[arg(long)]
    json: bool,
    /// Only events of this process.
    #[arg(long)]
    pid: Option<u32>,
    /// Print only the per-second summaries.
    #[arg(long)]
    summary_only: bool,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Stop after this many printed events.
    #[arg(long)]
    count: Option<u64>,
    /// Events per CPU between consumer wake-ups (1 = every event).
    #[arg(long, default_value_t = LoadOptions::DEFAULT_WAKEUP_EVERY, value_parser = clap::value_parser!(u32).range(1..))]
    wakeup_every: u32,
    /// Longest time a tail of events waits in the ring, in ms.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    drain_interval_ms: u64,
    /// While tracing, get hint faults on lower-tier pages without the kernel's
    /// own promotion (NUMA balancing memory tiering on, promote rate limit 0);
    /// the previous values come back when the trace ends, or at the next start
    /// after a crash.
    #[arg(long)]
    set_tiering: bool,
}

pub fn run(root: &Path, run_dir: &Path, args: TraceArgs) -> Result<()> {
    let rt = tokio_runtime()?;
    rt.block_on(trace(root, run_dir, args))
}

async fn trace(root: &Path, run_dir: &Path, args: TraceArgs) -> Result<()> {
    // Before anything changes: a signal from here on means a clean stop.
    let shutdown = Shutdown::install()?;
    let Preflight { topo, ranges, hook, .. } = preflight(root, "hotpage trace", true)?;
    let hook = hook.context("no hint-fault hook")?;

    // Restored when `_settings` drops, after the programs are gone.
    let _settings = kernel_settings(root, run_dir, args.set_tiering)?;

    let opts = LoadOptions { wakeup_every: args.wakeup_every, ..LoadOptions::default() };
    let (src, ring, counters) = LoadedSource::hint_faults(&opts, &ranges, &hook)?;
    tracing::info!(hook = hook.function, ranges = ranges.len(), "hint-fault program attached");

    // The events also feed a hot map, as in `hotpage run`, so its counters show
    // what the promoter would see. Nothing walks it here.
    let map = HotMap::new(&MemoryLayout::from(&topo), HotMapConfig::default(), DEFAULT_HINT_CAPACITY)?;
    map.start();
    let feeder = HotMapFeeder::new(Arc::new(map));

    let mut collector = Collector::new(vec![ring], Duration::from_millis(args.drain_interval_ms))?;
    let done = Arc::new(Notify::new());
    let mut printer = Printer::new(&args, vec![(SourceKind::HintFault, counters)], feeder, done.clone());
    printer.header()?;
    let limit = args.duration.map(|s| Duration::from_secs_f64(s.max(0.0)));
    let stop = shutdown.wait(limit, async move { done.notified().await });
    collector.run(&mut printer, stop).await?;
    printer.finish()?;
    drop(src);
    Ok(())
}

fn source_name(id: u16) -> &'static str {
    match id {
        source::HINT_FAULT => "hint_faults",
        source::HW_SAMPLE => "samples",
        source::PGTABLE_SCAN => "pgtable_scan",
        _ => "unknown",
    }
}

fn latency_of(ev: &HotpageEvent) -> Option<u32> {
    (ev.flags & event_flags::LATENCY != 0).then_some(ev.latency_ms)
}

fn flag_names(flags: u8) -> Vec<&'static str> {
    let mut v = Vec::new();
    if flags & event_flags::PMD != 0 {
        v.push("pmd");
    }
    if flags & event_flags::WRITE != 0 {
        v.push("write");
    }
    if flags & event_flags::NEED_PFN != 0 {
        v.push("need_pfn");
    }
    v
}

#[derive(Serialize)]
struct EventLine {
    r#type: &'static str,
    time_ns: u64,
    pid: u32,
    vaddr: u64,
    pfn: u64,
    node: i32,
    cpu_node: i32,
    source: &'static str,
    order: u8,
    flags: Vec<&'static str>,
    /// Scan-to-fault latency, when the hook read it.
    latency_ms: Option<u32>,
}

#[derive(Serialize)]
struct SummaryLine<'a> {
    r#type: &'static str,
    elapsed_s: f64,
    source: &'a str,
    events_per_s: f64,
    printed: u64,
    bpf: CounterSnapshot,
}

/// The hot map's side of a summary (cumulative).
#[derive(Serialize)]
struct HotMapLine {
    r#type: &'static str,
    elapsed_s: f64,
    counters: HotMapCounters,
    feed: FeedStats,
    hints: usize,
    hint_evictions: u64,
}

/// Prints events and, once a second, a summary per source.
struct Printer {
    out: BufWriter<io::Stdout>,
    json: bool,
    summary_only: bool,
    pid: Option<u32>,
    limit: Option<u64>,
    printed: u64,
    interval_events: u64,
    start: Instant,
    last_summary: Instant,
    sources: Vec<(SourceKind, SourceCounters, CounterSnapshot)>,
    feeder: HotMapFeeder,
    done: Arc<Notify>,
    broken: bool,
}

impl Printer {
    fn new(
        args: &TraceArgs,
        sources: Vec<(SourceKind, SourceCounters)>,
        feeder: HotMapFeeder,
        done: Arc<Notify>,
    ) -> Self {
        let now = Instant::now();
        let sources = sources
            .into_iter()
            .map(|(k, c)| {
                let base = c.read().unwrap_or_default();
                (k, c, base)
            })
            .collect();
        Self {
            out: BufWriter::new(io::stdout()),
            json: args.json,
            summary_only: args.summary_only,
            pid: args.pid,
            limit: args.count,
            printed: 0,
            interval_events: 0,
            start: now,
            last_summary: now,
            sources,
            feeder,
            done,
            broken: false,
        }
    }

    fn header(&mut self) -> io::Result<()> {
        if !self.json && !self.summary_only {
            writeln!(
                self.out,
                "{:>10} {:>8} {:>18} {:>12} {:>4} {:>4} {:<12} {:>7} FLAGS",
                "TIME(s)", "PID", "VADDR", "PFN", "NODE", "CPU", "SOURCE", "LAT(ms)"
            )?;
        }
        Ok(())
    }

    fn write_event(&mut self, ev: &HotpageEvent) -> io::Result<()> {
        let t = self.start.elapsed().as_secs_f64();
        if self.json {
            let line = EventLine {
                r#type: "event",
                time_ns: ev.time_ns,
                pid: ev.pid,
                vaddr: ev.vaddr,
                pfn: ev.pfn,
                node: ev.page_nid,
                cpu_node: ev.nid,
                source: source_name(ev.source),
                order: ev.order,
                flags: flag_names(ev.flags),
                latency_ms: latency_of(ev),
            };
            serde_json::to_writer(&mut self.out, &line)?;
            writeln!(self.out)
        } else {
            writeln!(
                self.out,
                "{:>10.3} {:>8} {:>#18x} {:>#12x} {:>4} {:>4} {:<12} {:>7} {}",
                t,
                ev.pid,
                ev.vaddr,
                ev.pfn,
                ev.page_nid,
                ev.nid,
                source_name(ev.source),
                latency_of(ev).map_or("-".into(), |l| l.to_string()),
                flag_names(ev.flags).join(",")
            )
        }
    }

    fn write_summaries(&mut self, force: bool) -> io::Result<()> {
        let now = Instant::now();
        let secs = now.duration_since(self.last_summary).as_secs_f64();
        if !force && secs < 1.0 {
            return Ok(());
        }
        let elapsed = self.start.elapsed().as_secs_f64();
        let events = std::mem::take(&mut self.interval_events);
        for i in 0..self.sources.len() {
            let (kind, counters, base) = &self.sources[i];
            let Ok(now_counts) = counters.read() else { continue };
            let delta = now_counts.since(base);
            let line = SummaryLine {
                r#type: "summary",
                elapsed_s: elapsed,
                source: kind.name(),
                events_per_s: if secs > 0.0 { delta.emitted as f64 / secs } else { 0.0 },
                printed: events,
                bpf: delta,
            };
            self.sources[i].2 = now_counts;
            if self.json {
                serde_json::to_writer(&mut self.out, &line)?;
                writeln!(self.out)?;
            } else {
                writeln!(
                    self.out,
                    "-- {:>7.1}s {}: {:.0} events/s, printed {} (bpf: seen {}, filtered {}, no_pfn {}, emitted {}, dropped {})",
                    line.elapsed_s,
                    line.source,
                    line.events_per_s,
                    line.printed,
                    delta.seen,
                    delta.filtered,
                    delta.no_pfn,
                    delta.emitted,
                    delta.dropped
                )?;
            }
        }
        let map = self.feeder.map();
        let line = HotMapLine {
            r#type: "hotmap",
            elapsed_s: elapsed,
            counters: map.counters(),
            feed: self.feeder.stats(),
            hints: map.hints().len(),
            hint_evictions: map.hints().evictions(),
        };
        if self.json {
            serde_json::to_writer(&mut self.out, &line)?;
            writeln!(self.out)?;
        } else {
            writeln!(
                self.out,
                "-- {:>7.1}s hot map: recorded {} accesses ({} hint faults, {} hw hints), {} pages became ready, {} hints ({} evicted)",
                elapsed,
                line.counters.recorded_accesses,
                line.counters.recorded_hintfaults,
                line.counters.recorded_hwhints,
                line.feed.newly_ready,
                line.hints,
                line.hint_evictions
            )?;
        }
        self.last_summary = now;
        Ok(())
    }

    fn check(&mut self, r: io::Result<()>) {
        if let Err(e) = r {
            // A closed pipe (`| head`) ends the trace quietly; anything else is reported.
            if e.kind() != io::ErrorKind::BrokenPipe {
                tracing::error!("writing output: {e}");
            }
            self.broken = true;
            self.done.notify_one();
        }
    }

    fn finish(mut self) -> Result<()> {
        if !self.broken {
            let r = self.write_summaries(true).and_then(|_| self.out.flush());
            self.check(r);
        }
        Ok(())
    }
}

impl Printer {
    fn print(&mut self, ev: &HotpageEvent) {
        if self.broken || self.pid.is_some_and(|p| p != ev.pid) {
            return;
        }
        if self.limit.is_some_and(|l| self.printed >= l) {
            return;
        }
        self.printed += 1;
        self.interval_events += 1;
        if !self.summary_only {
            let r = self.write_event(ev);
            self.check(r);
        }
        if self.limit.is_some_and(|l| self.printed >= l) {
            self.done.notify_one();
        }
    }
}

impl EventConsumer for Printer {
    fn consume(&mut self, ev: &HotpageEvent) {
        self.feeder.consume(ev);
        self.print(ev);
    }

    fn consume_batch(&mut self, events: &[HotpageEvent]) {
        self.feeder.consume_batch(events);
        for ev in events {
            self.print(ev);
        }
    }

    fn drained(&mut self) {
        self.feeder.drained();
        if self.broken {
            return;
        }
        let r = self.write_summaries(false).and_then(|_| self.out.flush());
        self.check(r);
    }
}
