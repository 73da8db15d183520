//! `bench replay`: what a recording costs and how fast it replays. Two
//! GUPS-like streams of hint faults (90% of the accesses to an eighth of a
//! region, two processes, a latency on a third of them): the end-to-end
//! benchmark's workload (512 MiB, hot 64 MiB) and a large one (64 GiB, hot
//! 8 GiB). Each is written as a recording; the bench reports the file's bytes
//! per event, how fast it is written, and how fast it replays: through the hot
//! map (the recording's takes put back, none here), and with the simulated
//! promoter. Beside it, the same accesses through `record_batch()` directly:
//! the hot map's own cost.

use std::{hint::black_box, time::Instant};

use anyhow::Result;
use hotpage::{
    daemon::config::FileConfig,
    hotmap::{Access, HotMap, HotMapConfig, MemoryLayout},
    recording::{Header, NodeMemoryAtStart, PromoterKnobs, Reader, ReplayOptions, Trailer, Writer, replay},
    sys::topology::{MemoryTier, NumaNode, TierTopology},
};
use hotpage_common::{HotpageEvent, event_flags, source};
use serde::Serialize;

use crate::{bench::median, workload::Rng};

/// 16 GiB of top tier, then 64 GiB (2^24 pages) of lower tier, as `bench hotmap`.
const TOP_PAGES: u64 = 4 << 20;
const LOWER_PAGES: u64 = 16 << 20;

fn topology() -> TierTopology {
    let node = |id: u32, top_tier: bool, cpus: Vec<u32>, range: (u64, u64)| NumaNode {
        id,
        cpus,
        tier: Some(if top_tier { 4 } else { 56 }),
        top_tier,
        distances: vec![(0, if id == 0 { 10 } else { 20 }), (1, if id == 1 { 10 } else { 20 })],
        pfn_ranges: vec![range],
    };
    TierTopology {
        nodes: vec![
            node(0, true, vec![0, 1], (0, TOP_PAGES)),
            node(1, false, Vec::new(), (TOP_PAGES, TOP_PAGES + LOWER_PAGES)),
        ],
        tiers: vec![MemoryTier { id: 4, nodes: vec![0] }, MemoryTier { id: 56, nodes: vec![1] }],
        tiering: true,
        block_size: 128 << 20,
    }
}

fn header(changes: bool) -> Header {
    Header {
        hotpage: env!("CARGO_PKG_VERSION").into(),
        kernel: crate::bench::kernel_release(),
        topology: topology(),
        memory: vec![NodeMemoryAtStart { node: 0, total: TOP_PAGES, free: TOP_PAGES / 2, low: 16_384 }],
        hotmap: HotMapConfig::default(),
        hint_capacity: 1 << 18,
        promoter: PromoterKnobs { rate_limit_mbps: Some(1024), ..PromoterKnobs::default() },
        pid: None,
        changes,
        start_ns: 1_000_000_000,
        sources_at_start: Vec::new(),
        policy: None,
    }
}

/// The stream: 20 µs apart, alternating between two processes, each with a
/// region of `region` pages (a power of two), its first eighth hot.
fn stream(n: usize, region: u64, rng: &mut Rng) -> Vec<HotpageEvent> {
    (0..n)
        .map(|i| {
            let pid = 1000 + (i as u32 & 1);
            let page = if rng.below(10) < 9 { rng.below(region / 8) } else { rng.below(region) };
            // The two processes' physical pages interleave, scattered over
            // as much of the node as they fill.
            let frame = page * 2 + u64::from(pid & 1);
            let scattered = frame.wrapping_mul(0x9e37_79b9_7f4a_7c15) & (2 * region - 1);
            let latency = rng.below(3) == 0;
            HotpageEvent {
                pfn: TOP_PAGES + scattered,
                vaddr: 0x7f00_0000_0000 + page * 4096,
                time_ns: 1_000_000_000 + i as u64 * 20_000,
                pid,
                nid: 0,
                page_nid: 1,
                source: source::HINT_FAULT,
                flags: if latency { event_flags::LATENCY } else { 0 },
                latency_ms: if latency { rng.below(2000) as u32 } else { 0 },
                ..HotpageEvent::default()
            }
        })
        .collect()
}

fn write(events: &[HotpageEvent], changes: bool) -> Result<Vec<u8>> {
    let mut w = Writer::new(Vec::with_capacity(events.len() * 12), &header(changes))?;
    for e in events {
        w.event(e)?;
    }
    Ok(w.finish(Trailer::default())?)
}

#[derive(Clone, Debug, Serialize)]
pub struct ReplayBench {
    pub bench: &'static str,
    pub events: usize,
    pub rounds: usize,
    pub streams: Vec<StreamResult>,
}

#[derive(Clone, Debug, Serialize)]
pub struct StreamResult {
    pub stream: &'static str,
    pub file_bytes: usize,
    /// Goal ≤ 16.
    pub bytes_per_event: f64,
    pub write_events_per_s: f64,
    /// Decoding alone.
    pub decode_events_per_s: f64,
    /// Decode + hot map, the recorded takes put back: goal ≥ 20 M/s on one core.
    pub replay_events_per_s: f64,
    /// Decode + hot map + the simulated promoter.
    pub simulated_events_per_s: f64,
    /// The hot map alone on the same accesses (`record_batch`, 256 at a time).
    pub hotmap_events_per_s: f64,
    pub hotmap_ns_per_event: f64,
    pub replay_ns_per_event: f64,
}

pub fn run(events: usize, rounds: usize) -> Result<ReplayBench> {
    let streams = [("512 MiB / 64 MiB (the e2e workload)", 512 << 8), ("64 GiB / 8 GiB", LOWER_PAGES / 2)];
    let mut out = Vec::new();
    let only = std::env::var("HOTPAGE_BENCH_STREAM").ok();
    for (name, region) in streams.into_iter().filter(|(n, _)| only.as_deref().is_none_or(|o| n.contains(o))) {
        out.push(run_stream(name, region, events, rounds)?);
    }
    Ok(ReplayBench { bench: "replay", events, rounds, streams: out })
}

fn run_stream(name: &'static str, region: u64, events: usize, rounds: usize) -> Result<StreamResult> {
    let mut rng = Rng::new(0x5eed);
    let evs = stream(events, region, &mut rng);
    let cfg = FileConfig::of_recording(&header(true)).resolve(std::path::Path::new("bench"))?;
    let opts = ReplayOptions::new(&cfg);
    let (mut write_rate, mut replay_rate, mut sim_rate, mut map_rate) = (vec![], vec![], vec![], vec![]);
    let mut decode_rate = vec![];
    let mut file_bytes = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        let data = write(&evs, true)?;
        write_rate.push(events as f64 / t.elapsed().as_secs_f64());
        file_bytes = data.len();

        let t = Instant::now();
        let mut reader = Reader::new(&data)?;
        let (mut n, mut batch, mut changes) = (0, Vec::with_capacity(16_384), Vec::new());
        while reader.next_events(&mut batch, &mut changes, 16_384)? {
            n += black_box(&batch).len();
            batch.clear();
        }
        n += batch.len();
        decode_rate.push(n as f64 / t.elapsed().as_secs_f64());

        let t = Instant::now();
        let r = replay(&data, &ReplayOptions { as_recorded: true, ..opts.clone() }, &[])?;
        replay_rate.push(events as f64 / t.elapsed().as_secs_f64());
        anyhow::ensure!(r.events == events as u64, "replayed {} of {events} events", r.events);

        let t = Instant::now();
        let r = black_box(replay(&data, &opts, &[])?);
        sim_rate.push(events as f64 / t.elapsed().as_secs_f64());
        anyhow::ensure!(r.promoted_pages > 0, "the simulated promoter moved nothing");

        let map = HotMap::new(&MemoryLayout::from(&topology()), HotMapConfig::default(), 1 << 18)?;
        map.start();
        let accesses: Vec<Access> = evs
            .iter()
            .map(|e| {
                Access::new(e.pfn, e.order, e.nid, e.source, e.time_ns / 1_000_000).mapped(e.pid, e.vaddr)
            })
            .collect();
        let t = Instant::now();
        for chunk in accesses.chunks(256) {
            map.record_batch(chunk, |_, r| {
                black_box(r.ok());
            });
        }
        map_rate.push(events as f64 / t.elapsed().as_secs_f64());
    }
    let (replay_rate, map_rate) = (median(replay_rate), median(map_rate));
    Ok(StreamResult {
        stream: name,
        file_bytes,
        bytes_per_event: file_bytes as f64 / events as f64,
        write_events_per_s: median(write_rate),
        decode_events_per_s: median(decode_rate),
        replay_events_per_s: replay_rate,
        simulated_events_per_s: median(sim_rate),
        hotmap_events_per_s: map_rate,
        hotmap_ns_per_event: 1e9 / map_rate,
        replay_ns_per_event: 1e9 / replay_rate,
    })
}

pub fn print(r: &ReplayBench) {
    println!("replay: {} GUPS-like hint faults per stream, {} rounds, medians, one core", r.events, r.rounds);
    for st in &r.streams {
        println!(
            "\nstream {}: {:.2} bytes/event (goal ≤ 16), {} bytes",
            st.stream, st.bytes_per_event, st.file_bytes
        );
        println!("{:<46} {:>14} {:>10}", "path", "events/s", "ns/event");
        for (what, rate) in [
            ("write the recording", st.write_events_per_s),
            ("decode the recording", st.decode_events_per_s),
            ("replay: decode + hot map (goal ≥ 20 M/s)", st.replay_events_per_s),
            ("replay: decode + hot map + simulated promoter", st.simulated_events_per_s),
            ("hot map alone (record_batch)", st.hotmap_events_per_s),
        ] {
            println!("{what:<46} {:>14.0} {:>10.1}", rate, 1e9 / rate);
        }
        println!(
            "replay ÷ hot map alone: {:.2} (the rest is decoding and the feeder)",
            st.replay_events_per_s / st.hotmap_events_per_s
        );
    }
}
