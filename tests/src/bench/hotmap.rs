//! `bench hotmap`: `record_access()` cost on a uniform random stream over a
//! 64 GiB lower tier and on a zipfian stream, beside a bare byte array (the
//! floor: one read-modify-write per access) and a HashMap (the naive map);
//! memory per tracked page in both record modes; walk cost per section.

use std::{collections::HashMap, hint::black_box, time::Instant};

use hotpage::hotmap::{
    Access, DEFAULT_HINT_CAPACITY, HintTable, HotMap, HotMapConfig, LayoutNode, MemoryLayout, RecordMode,
    WalkControl,
};
use hotpage_common::{PAGES_PER_SECTION, source};
use serde::Serialize;

use crate::{bench::median, workload::Rng};

/// 16 GiB of top tier, then 64 GiB (2^24 pages) of lower tier.
const TOP_PAGES: u64 = 4 << 20;
const LOWER_PAGES: u64 = 16 << 20;

fn layout() -> MemoryLayout {
    MemoryLayout {
        nodes: vec![
            LayoutNode { id: 0, top_tier: true, ranges: vec![(0, TOP_PAGES)] },
            LayoutNode { id: 1, top_tier: false, ranges: vec![(TOP_PAGES, TOP_PAGES + LOWER_PAGES)] },
        ],
    }
}

/// Zipf(θ) ranks over `n` items (Gray et al., "Quickly generating billion-record
/// synthetic databases"), scattered over the pages by an odd multiplier (a
/// bijection modulo a power of two), so hot pages are not neighbours.
fn zipf_stream(n: u64, theta: f64, len: usize, rng: &mut Rng) -> Vec<u64> {
    let zeta = |k: u64| (1..=k).map(|i| 1.0 / (i as f64).powf(theta)).sum::<f64>();
    let (zetan, zeta2) = (zeta(n), zeta(2));
    let alpha = 1.0 / (1.0 - theta);
    let eta = (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
    (0..len)
        .map(|_| {
            let u = rng.next_u64() as f64 / u64::MAX as f64;
            let uz = u * zetan;
            let rank = if uz < 1.0 {
                0
            } else if uz < 1.0 + 0.5f64.powf(theta) {
                1
            } else {
                ((n as f64) * (eta * u - eta + 1.0).powf(alpha)) as u64 % n
            };
            TOP_PAGES + (rank.wrapping_mul(0x9e37_79b9_7f4a_7c15) & (n - 1))
        })
        .collect()
}

fn uniform_stream(len: usize, rng: &mut Rng) -> Vec<u64> {
    (0..len).map(|_| TOP_PAGES + rng.below(LOWER_PAGES)).collect()
}

/// ns per access of `f` over the stream; the tick advances 1 ms per 10k accesses.
fn time_stream(stream: &[u64], mut f: impl FnMut(u64, u64)) -> f64 {
    let t = Instant::now();
    for (i, &pfn) in stream.iter().enumerate() {
        f(pfn, 1_000 + i as u64 / 10_000);
    }
    t.elapsed().as_nanos() as f64 / stream.len() as f64
}

#[derive(Clone, Debug, Serialize)]
pub struct StreamResult {
    pub stream: &'static str,
    /// `record_batch()` in batches of 256, as the collector feeds the map.
    pub hotpage_default_ns: f64,
    pub hotpage_precise_ns: f64,
    /// One `record_access()` call at a time, no prefetch.
    pub hotpage_default_single_ns: f64,
    pub byte_array_ns: f64,
    pub hashmap_ns: f64,
    pub default_over_array: f64,
    pub hashmap_over_default: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct MemoryResult {
    pub mode: RecordMode,
    pub tracked_pages: u64,
    pub record_bytes_per_page: f64,
    pub overhead_bytes_per_page: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct WalkResult {
    pub sections: u64,
    pub ready_per_section: u64,
    pub ns_per_walked_section: f64,
    pub ns_per_skipped_section: f64,
    pub ns_per_taken_page: f64,
}

/// What a `stats` call or a Prometheus scrape pays for the node's ready
/// count: one load of the kept count, against the scan of every record it
/// replaced (both on the same map).
#[derive(Clone, Debug, Serialize)]
pub struct ScrapeResult {
    pub ready_pages: u64,
    pub kept_count_ns: f64,
    pub full_scan_ns: f64,
    pub scan_over_kept: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct HotMapReport {
    pub bench: &'static str,
    pub lower_tier_gib: u64,
    pub accesses_per_stream: usize,
    pub rounds: usize,
    pub streams: Vec<StreamResult>,
    pub memory: Vec<MemoryResult>,
    pub hint_capacity: usize,
    pub hint_table_max_bytes: usize,
    pub walk: WalkResult,
    pub scrape: ScrapeResult,
}

fn fresh_map(mode: RecordMode) -> HotMap {
    let m = HotMap::new(&layout(), HotMapConfig::defaults(mode), 16).expect("valid map");
    m.start();
    m
}

/// ns per access fed through `record_batch()` 256 at a time (the collector's batch).
fn time_batched(map: &HotMap, stream: &[u64]) -> f64 {
    let mut batch = Vec::with_capacity(256);
    let t = Instant::now();
    for (c, chunk) in stream.chunks(256).enumerate() {
        batch.clear();
        let now = 1_000 + (c * 256) as u64 / 10_000;
        batch.extend(chunk.iter().map(|&pfn| Access::new(pfn, 0, 0, source::HINT_FAULT, now)));
        map.record_batch(&batch, |_, r| {
            black_box(r.ok());
        });
    }
    t.elapsed().as_nanos() as f64 / stream.len() as f64
}

fn stream_result(name: &'static str, stream: &[u64], rounds: usize) -> StreamResult {
    let (mut d, mut p, mut d1, mut a, mut h) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let map = fresh_map(RecordMode::Default);
        d.push(time_batched(&map, stream));
        drop(map);
        let map = fresh_map(RecordMode::Precise);
        p.push(time_batched(&map, stream));
        drop(map);
        let map = fresh_map(RecordMode::Default);
        d1.push(time_stream(stream, |pfn, now| {
            black_box(map.record_access(pfn, 0, 0, source::HINT_FAULT, now).ok());
        }));
        drop(map);
        let mut arr = vec![0u8; LOWER_PAGES as usize];
        a.push(time_stream(stream, |pfn, _| {
            let b = &mut arr[(pfn - TOP_PAGES) as usize];
            *b = b.wrapping_add(1);
        }));
        black_box(&arr);
        drop(arr);
        let mut hm: HashMap<u64, u8> = HashMap::new();
        h.push(time_stream(stream, |pfn, _| {
            let e = hm.entry(pfn).or_insert(0);
            *e = e.wrapping_add(1);
        }));
        black_box(&hm);
    }
    let (d, p, d1, a, h) = (median(d), median(p), median(d1), median(a), median(h));
    StreamResult {
        stream: name,
        hotpage_default_ns: d,
        hotpage_precise_ns: p,
        hotpage_default_single_ns: d1,
        byte_array_ns: a,
        hashmap_ns: h,
        default_over_array: d / a,
        hashmap_over_default: h / d,
    }
}

const READY_PER_SECTION: u64 = 64;

/// A map with 64 ready pages spread over every section.
fn map_with_ready_pages() -> HotMap {
    let map = fresh_map(RecordMode::Default);
    for s in 0..LOWER_PAGES / PAGES_PER_SECTION {
        for k in 0..READY_PER_SECTION {
            let pfn = TOP_PAGES + s * PAGES_PER_SECTION + k * (PAGES_PER_SECTION / READY_PER_SECTION);
            let _ = map.record_access(pfn, 0, 0, source::HINT_FAULT, 10);
            let _ = map.record_access(pfn, 0, 0, source::HINT_FAULT, 11);
        }
    }
    map
}

fn scrape_result(rounds: usize) -> ScrapeResult {
    let map = map_with_ready_pages();
    let (mut kept, mut scan) = (Vec::new(), Vec::new());
    let ready = map.ready_pages(1);
    assert_eq!(ready, map.ready_pages_by_scan(1), "the kept count is the scan's");
    for _ in 0..rounds.max(3) {
        // Interleaved, so both see the same machine state.
        let t = Instant::now();
        black_box(map.ready_pages(black_box(1)));
        kept.push(t.elapsed().as_nanos() as f64);
        let t = Instant::now();
        black_box(map.ready_pages_by_scan(black_box(1)));
        scan.push(t.elapsed().as_nanos() as f64);
    }
    let (kept, scan) = (median(kept), median(scan));
    ScrapeResult {
        ready_pages: ready,
        kept_count_ns: kept,
        full_scan_ns: scan,
        scan_over_kept: scan / kept.max(1.0),
    }
}

fn walk_result(rounds: usize) -> WalkResult {
    let (mut walked, mut skipped, mut per_page) = (Vec::new(), Vec::new(), Vec::new());
    let sections = LOWER_PAGES / PAGES_PER_SECTION;
    for _ in 0..rounds {
        let map = map_with_ready_pages();
        let t = Instant::now();
        let stats = map.walk_node(1, |p| {
            black_box(p);
            WalkControl::Continue
        });
        let ns = t.elapsed().as_nanos() as f64;
        walked.push(ns / stats.sections_walked.max(1) as f64);
        per_page.push(ns / stats.pages_taken.max(1) as f64);
        let t = Instant::now();
        let empty = map.walk_node(1, |_| WalkControl::Continue);
        skipped.push(t.elapsed().as_nanos() as f64 / empty.sections_skipped.max(1) as f64);
    }
    WalkResult {
        sections,
        ready_per_section: READY_PER_SECTION,
        ns_per_walked_section: median(walked),
        ns_per_skipped_section: median(skipped),
        ns_per_taken_page: median(per_page),
    }
}

pub fn run(accesses: usize, rounds: usize) -> HotMapReport {
    let mut rng = Rng::new(0x00c0_ffee);
    let uniform = uniform_stream(accesses, &mut rng);
    let zipf = zipf_stream(LOWER_PAGES, 0.99, accesses, &mut rng);
    // 4096 pages that stay in cache: the CPU cost of an access without misses.
    let cached: Vec<u64> = (0..accesses).map(|_| TOP_PAGES + rng.below(4096) * 4099 % LOWER_PAGES).collect();
    let streams = vec![
        stream_result("uniform", &uniform, rounds),
        stream_result("zipf 0.99", &zipf, rounds),
        stream_result("in cache", &cached, rounds),
    ];
    let memory = [RecordMode::Default, RecordMode::Precise]
        .into_iter()
        .map(|mode| {
            let m = fresh_map(mode).memory();
            MemoryResult {
                mode,
                tracked_pages: m.tracked_pages,
                record_bytes_per_page: m.record_bytes as f64 / m.tracked_pages as f64,
                overhead_bytes_per_page: m.overhead_bytes as f64 / m.tracked_pages as f64,
            }
        })
        .collect();
    let hints = HintTable::new(DEFAULT_HINT_CAPACITY);
    HotMapReport {
        bench: "hotmap",
        lower_tier_gib: (LOWER_PAGES * 4096) >> 30,
        accesses_per_stream: accesses,
        rounds,
        streams,
        memory,
        hint_capacity: hints.capacity(),
        hint_table_max_bytes: hints.max_bytes(),
        walk: walk_result(rounds),
        scrape: scrape_result(rounds),
    }
}

pub fn print(r: &HotMapReport) {
    println!(
        "hot map: {} GiB lower tier, {} accesses per stream, {} rounds, medians",
        r.lower_tier_gib, r.accesses_per_stream, r.rounds
    );
    println!(
        "{:<12} {:>14} {:>14} {:>16} {:>11} {:>9} {:>14} {:>16}",
        "stream",
        "default ns/op",
        "precise ns/op",
        "unbatched ns/op",
        "byte array",
        "HashMap",
        "default÷array",
        "HashMap÷default"
    );
    for s in &r.streams {
        println!(
            "{:<12} {:>14.1} {:>14.1} {:>16.1} {:>11.1} {:>9.1} {:>14.2} {:>16.2}",
            s.stream,
            s.hotpage_default_ns,
            s.hotpage_precise_ns,
            s.hotpage_default_single_ns,
            s.byte_array_ns,
            s.hashmap_ns,
            s.default_over_array,
            s.hashmap_over_default
        );
    }
    for m in &r.memory {
        println!(
            "memory {:?}: {:.3} record bytes/page + {:.4} overhead bytes/page over {} pages",
            m.mode, m.record_bytes_per_page, m.overhead_bytes_per_page, m.tracked_pages
        );
    }
    println!(
        "hint table: at most {} hints, at most {:.1} MiB",
        r.hint_capacity,
        r.hint_table_max_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "walk: {:.0} ns per flagged section ({} ready pages each, {:.0} ns per page taken), {:.0} ns per unflagged section",
        r.walk.ns_per_walked_section,
        r.walk.ready_per_section,
        r.walk.ns_per_taken_page,
        r.walk.ns_per_skipped_section
    );
    println!(
        "scrape: the ready count of {} pages in {:.0} ns (kept count) against {:.1} ms (scan of every record), {:.0}×",
        r.scrape.ready_pages,
        r.scrape.kept_count_ns,
        r.scrape.full_scan_ns / 1e6,
        r.scrape.scan_over_kept
    );
    println!("goals: ≤ 20 ns/op, 1.0 B/page default, 4.0 B/page precise, bounded hints, O(1) ready counts");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_is_skewed_and_in_range() {
        let mut rng = Rng::new(3);
        let s = zipf_stream(1 << 16, 0.99, 50_000, &mut rng);
        assert!(s.iter().all(|&p| (TOP_PAGES..TOP_PAGES + (1 << 16)).contains(&p)));
        let mut counts: HashMap<u64, u32> = HashMap::new();
        for p in &s {
            *counts.entry(*p).or_default() += 1;
        }
        let mut c: Vec<u32> = counts.into_values().collect();
        c.sort_unstable_by(|a, b| b.cmp(a));
        // The hottest page alone takes several percent of a zipf(0.99) stream.
        assert!(c[0] as usize > s.len() / 50, "{}", c[0]);
    }
}
