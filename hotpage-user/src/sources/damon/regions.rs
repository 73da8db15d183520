//! From DAMON regions to the pages to look up, at a bounded cost: each
//! region gives at most `region_max_pages` pages per aggregation (a bigger
//! region is covered a window at a time, the window moving on every
//! aggregation), and all regions together at most `pages_per_second`,
//! hottest regions first. A region's `nr_accesses` (accesses seen in N
//! samples) becomes the mean time between accesses it implies, in ms: the
//! figure the hotness rule ranks, as it ranks scan-to-fault latencies.

use hotpage_common::{HotpageEvent, PAGE_SHIFT, PAGE_SIZE};

use std::sync::{Arc, atomic::Ordering::Relaxed};

use super::{DamonConfig, DamonStatus};

crate::counter_set! {
    /// What became of DAMON's regions.
    pub struct RegionStats, ids RegionCounter, shared RegionCounters {
        regions: "accessed regions DAMON reported",
        windowed: "regions larger than damon.region_max_pages, expanded a window at a time",
        over_budget: "regions left out (or cut short) by damon.pages_per_second",
        pages: "pages of regions looked up in pagemap",
        cpu_ns: "CPU time hotpage spent turning regions into pages (planning, pagemap, folios), ns",
    }
}

/// A run of pages of one process to look up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub pid: u32,
    /// Page-aligned start address.
    pub start: u64,
    pub pages: u64,
    /// The region's mean time between accesses, ms (see [`RegionPlanner::interval_ms`]).
    pub interval_ms: u32,
    pub time_ns: u64,
    /// The accessing node the event carried (the kdamond's CPU's).
    pub nid: i32,
}

pub struct RegionPlanner {
    cfg: DamonConfig,
    /// The source's status, whose sampling interval the CPU budget moves
    /// (none: `cfg.sample_us` throughout).
    status: Option<Arc<DamonStatus>>,
    /// Pages that may still be looked up (refilled at pages_per_second, one second's worth at most).
    tokens: f64,
    last_ns: Option<u64>,
    order: Vec<usize>,
}

impl RegionPlanner {
    pub fn new(cfg: DamonConfig) -> Self {
        Self { cfg, status: None, tokens: cfg.pages_per_second as f64, last_ns: None, order: Vec::new() }
    }

    /// Reads the sampling interval from the running source's status, so
    /// `nr_accesses` is priced at the interval the kdamond counts in.
    pub fn following(mut self, status: Arc<DamonStatus>) -> Self {
        self.status = Some(status);
        self
    }

    fn sample_us(&self) -> u64 {
        self.status
            .as_ref()
            .map(|s| s.sample_us.load(Relaxed))
            .filter(|&us| us > 0)
            .unwrap_or(self.cfg.sample_us)
    }

    pub fn config(&self) -> &DamonConfig {
        &self.cfg
    }

    /// The mean time between accesses, ms, that `nr_accesses` of N samples
    /// taken `sample_us` apart imply: a page accessed at rate λ is seen
    /// accessed in a sample with probability p = 1 - e^(-λ·s), so
    /// 1/λ = -s / ln(1 - p), with p estimated as n / (N + 1).
    pub fn interval_ms(&self, nr_accesses: u32) -> u32 {
        let n = nr_accesses as f64;
        if n <= 0.0 {
            return u32::MAX;
        }
        let samples = self.cfg.samples_per_aggregation() as f64;
        let p = (n / (samples + 1.0)).min(samples / (samples + 1.0));
        let s_ms = self.sample_us() as f64 / 1000.0;
        let ms = -s_ms / (1.0 - p).ln();
        ms.clamp(1.0, u32::MAX as f64 / 2.0).round() as u32
    }

    /// Windows for the region events among `events` (hottest first, within
    /// the budget), appended to `out`.
    pub fn plan(&mut self, events: &[HotpageEvent], stats: &mut RegionStats, out: &mut Vec<Window>) {
        let regions = |i: &usize| events[*i].flags & hotpage_common::event_flags::REGION != 0;
        self.order.clear();
        self.order.extend((0..events.len()).filter(|i| regions(i)));
        if self.order.is_empty() {
            return;
        }
        // Hottest first: the budget goes to the regions accessed most.
        self.order.sort_by_key(|&i| std::cmp::Reverse(events[i].latency_ms));
        let now = events[self.order[0]].time_ns;
        if let Some(last) = self.last_ns {
            let dt = now.saturating_sub(last) as f64 / 1e9;
            self.tokens =
                (self.tokens + dt * self.cfg.pages_per_second as f64).min(self.cfg.pages_per_second as f64);
        }
        self.last_ns = Some(now);
        let aggr_us = self.cfg.aggr_us_for(self.sample_us());
        let aggregation = now / (aggr_us.max(1) * 1000);
        for k in 0..self.order.len() {
            let ev = &events[self.order[k]];
            stats.regions += 1;
            let start = ev.vaddr & !(PAGE_SIZE - 1);
            let end = ev.pfn;
            if end <= start {
                continue;
            }
            let total = (end - start).div_ceil(PAGE_SIZE);
            let cap = self.cfg.region_max_pages;
            let (mut first, mut pages) = (0, total);
            if total > cap {
                stats.windowed += 1;
                let windows = total.div_ceil(cap);
                first = (aggregation % windows) * cap;
                pages = cap.min(total - first);
            }
            let allowed = self.tokens.floor() as u64;
            if allowed < pages {
                stats.over_budget += 1;
                pages = allowed;
            }
            if pages == 0 {
                continue;
            }
            self.tokens -= pages as f64;
            stats.pages += pages;
            out.push(Window {
                pid: ev.pid,
                start: start + (first << PAGE_SHIFT),
                pages,
                interval_ms: self.interval_ms(ev.latency_ms),
                time_ns: ev.time_ns,
                nid: ev.nid,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use hotpage_common::event_flags;

    use super::*;

    fn region(pid: u32, start: u64, pages: u64, nr_accesses: u32, ms: u64) -> HotpageEvent {
        HotpageEvent {
            pid,
            vaddr: start,
            pfn: start + pages * PAGE_SIZE,
            latency_ms: nr_accesses,
            time_ns: ms * 1_000_000,
            flags: event_flags::REGION | event_flags::NEED_PFN,
            ..HotpageEvent::default()
        }
    }

    #[test]
    fn more_accesses_mean_a_shorter_interval() {
        let p = RegionPlanner::new(DamonConfig { aggr_us: 100_000, ..DamonConfig::default() });
        let ms: Vec<u32> = (1..=20).map(|n| p.interval_ms(n)).collect();
        assert!(ms.windows(2).all(|w| w[0] >= w[1]), "{ms:?}");
        // 1 of 20 samples 5 ms apart: about 100 ms between accesses; 20 of 20: under a sample.
        assert!((95..=110).contains(&ms[0]), "{ms:?}");
        assert!(ms[19] <= 5, "{ms:?}");
        assert_eq!(p.interval_ms(0), u32::MAX);
        // The default's 80 samples: 1 of 80 is about 400 ms, 20 of 80 about 17 ms.
        let p = RegionPlanner::new(DamonConfig::default());
        assert!((380..=420).contains(&p.interval_ms(1)), "{}", p.interval_ms(1));
        assert!((16..=19).contains(&p.interval_ms(20)), "{}", p.interval_ms(20));
    }

    #[test]
    fn a_wider_sampling_interval_prices_the_same_count_slower() {
        let status = Arc::new(DamonStatus::default());
        let p = RegionPlanner::new(DamonConfig::default()).following(status.clone());
        // Nothing published yet: the configured interval.
        let at_5ms = p.interval_ms(4);
        status.sample_us.store(80_000, Relaxed);
        let at_80ms = p.interval_ms(4);
        // 4 of 20 samples is the same share of samples; 16× the time between them.
        assert!((15 * at_5ms..=17 * at_5ms).contains(&at_80ms), "{at_5ms} {at_80ms}");
    }

    #[test]
    fn hottest_first_within_the_budget_and_the_region_cap() {
        let cfg = DamonConfig { region_max_pages: 100, pages_per_second: 250, ..DamonConfig::default() };
        let mut p = RegionPlanner::new(cfg);
        let (mut stats, mut out) = (RegionStats::default(), Vec::new());
        let evs = [
            region(1, 0x10_0000, 50, 2, 1000),
            region(1, 0x20_0000, 1000, 9, 1000),
            region(2, 0x30_0000, 80, 5, 1000),
            // Not a region: ignored here.
            HotpageEvent { pfn: 7, ..HotpageEvent::default() },
        ];
        p.plan(&evs, &mut stats, &mut out);
        let got: Vec<(u32, u64)> = out.iter().map(|w| (w.pid, w.pages)).collect();
        // 9 accesses first (capped to 100 pages), then 5 (80), then 2 (the 70 left of 250).
        assert_eq!(got, vec![(1, 100), (2, 80), (1, 50)]);
        assert_eq!((stats.regions, stats.windowed, stats.over_budget, stats.pages), (3, 1, 0, 230));
        assert!(out[0].interval_ms < out[1].interval_ms && out[1].interval_ms < out[2].interval_ms);
        // The same regions 100 ms later: 25 pages' budget came back.
        out.clear();
        p.plan(
            &[region(1, 0x20_0000, 1000, 9, 1100), region(2, 0x30_0000, 80, 5, 1100)],
            &mut stats,
            &mut out,
        );
        let total: u64 = out.iter().map(|w| w.pages).sum();
        assert_eq!(total, 45, "{out:?}");
        assert!(stats.over_budget >= 1);
    }

    #[test]
    fn a_big_region_is_covered_a_window_at_a_time() {
        let cfg = DamonConfig {
            region_max_pages: 64,
            pages_per_second: 1_000_000,
            aggr_us: 100_000,
            ..DamonConfig::default()
        };
        let mut p = RegionPlanner::new(cfg);
        let mut starts = std::collections::BTreeSet::new();
        for agg in 0..10u64 {
            let (mut stats, mut out) = (RegionStats::default(), Vec::new());
            p.plan(&[region(1, 0x40_0000, 200, 3, 1000 + agg * 100)], &mut stats, &mut out);
            assert_eq!(out.len(), 1);
            assert!(out[0].pages <= 64);
            starts.insert(out[0].start);
        }
        // 200 pages in windows of 64: four windows, every page covered.
        assert_eq!(starts.len(), 4);
        assert!(starts.contains(&0x40_0000) && starts.contains(&(0x40_0000 + 192 * PAGE_SIZE)));
    }

    /// Whatever DAMON reports, a second's lookups stay within the budget.
    #[test]
    fn the_cost_per_second_is_bounded_whatever_damon_reports() {
        let cfg = DamonConfig::default();
        let mut p = RegionPlanner::new(cfg);
        let mut looked_up = 0;
        for agg in 0..10u64 {
            // A thousand huge, hot regions per aggregation.
            let evs: Vec<HotpageEvent> =
                (0..1000u64).map(|i| region(1, (i + 1) << 32, 1 << 20, 20, 1000 + agg * 100)).collect();
            let (mut stats, mut out) = (RegionStats::default(), Vec::new());
            p.plan(&evs, &mut stats, &mut out);
            looked_up += out.iter().map(|w| w.pages).sum::<u64>();
        }
        // One second: the initial second's worth plus 0.9 s of refill.
        assert!(looked_up <= 2 * cfg.pages_per_second, "{looked_up}");
    }
}
