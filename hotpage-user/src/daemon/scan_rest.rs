//! The daemon's side of `kernel::scan_rest`: every second the hotness rule's
//! published state decides whether NUMA balancing scans. The switch is
//! `kernel.numa_balancing`, written through the settings guard, so a stop
//! or a crash (on the next start) puts the operator's value back.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use crate::{
    kernel::{
        scan_rest::{RuleView, ScanRest, ScanRestReport},
        settings::{NUMA_BALANCING, NUMA_BALANCING_NORMAL, SettingsGuard},
    },
    rule::RuleReport,
    sys::node_meminfo::read_node_meminfo,
};

const TICK: Duration = Duration::from_secs(1);

/// What the rule's report says for the scanner: every lower-tier node that
/// has seen latencies knows where fast ends (a split, drained or not, or the
/// fallback spent). A node without latencies (no workload memory there)
/// does not hold the others' rest back.
pub fn view_of(report: &RuleReport, lower_used: u64) -> RuleView {
    let seen: Vec<_> = report.nodes.iter().filter(|n| n.latency.count > 0).collect();
    RuleView {
        settled: !seen.is_empty() && seen.iter().all(|n| n.settled()),
        qualified: report.counters.qualified,
        lower_used,
    }
}

/// Pages in use on the lower-tier nodes (a node that cannot be read counts 0).
pub fn lower_used(root: &Path, lower: &[u32]) -> u64 {
    lower
        .iter()
        .filter_map(|&nid| {
            let m = read_node_meminfo(root, nid).ok()?;
            Some(m.get("MemTotal")?.saturating_sub(*m.get("MemFree")?) / 4)
        })
        .sum()
}

/// The value of `kernel.numa_balancing` while scanning, if the scanner may
/// rest at all: not with the normal mode's bit, which would stop the
/// scheduler's task placement too.
pub fn scanning_mode(guard: &SettingsGuard) -> Option<u64> {
    let mode = guard.read_u64(NUMA_BALANCING).ok()?;
    if mode & NUMA_BALANCING_NORMAL != 0 {
        tracing::info!(
            "NUMA balancing's scanner will not rest: its normal mode is on too (kernel.numa_balancing = {mode})"
        );
        return None;
    }
    Some(mode)
}

/// What the rest's task reads and writes.
pub struct RestTask {
    pub root: PathBuf,
    /// The lower-tier nodes, whose used memory is watched.
    pub lower: Vec<u32>,
    pub rest: ScanRest,
    pub rule: Arc<Mutex<RuleReport>>,
    pub guard: Arc<Mutex<SettingsGuard>>,
    /// `kernel.numa_balancing` while scanning.
    pub on: u64,
    pub started: Instant,
    pub out: Arc<Mutex<Option<ScanRestReport>>>,
}

impl RestTask {
    /// Ticks until aborted.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = self.started.elapsed().as_millis() as u64;
            let used = lower_used(&self.root, &self.lower);
            let view = view_of(&self.rule.lock().unwrap_or_else(PoisonError::into_inner), used);
            if let Some(scan) = self.rest.tick(now, view) {
                self.switch(scan, now);
            }
            *self.out.lock().unwrap_or_else(PoisonError::into_inner) = Some(self.rest.report(now));
        }
    }

    fn switch(&self, scan: bool, now: u64) {
        let value = if scan { self.on } else { 0 };
        let mut g = self.guard.lock().unwrap_or_else(PoisonError::into_inner);
        match g.set(NUMA_BALANCING, &value.to_string()) {
            Ok(()) if scan => tracing::info!("NUMA balancing scans again ({})", self.rest.phase().name()),
            Ok(()) => tracing::info!(
                "NUMA balancing rests for {:.0} s: nothing has qualified lately on any lower-tier node",
                self.rest.report(now).rest_s
            ),
            Err(e) => tracing::warn!("switching NUMA balancing's scanner: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::{LatencyHistogram, NodeRuleReport};

    fn node(nid: u32, source: &str, latencies: u64) -> NodeRuleReport {
        let mut n = NodeRuleReport {
            nid,
            threshold_source: source.into(),
            latency: LatencyHistogram::new(),
            ..NodeRuleReport::default()
        };
        for _ in 0..latencies {
            n.latency.add(100);
        }
        n
    }

    #[test]
    fn a_node_without_latencies_does_not_hold_the_rest_back() {
        let mut r =
            RuleReport { nodes: vec![node(1, "drained", 10), node(2, "learning", 0)], ..Default::default() };
        r.counters.qualified = 7;
        assert_eq!(view_of(&r, 9), RuleView { settled: true, qualified: 7, lower_used: 9 });
        r.nodes[1] = node(2, "split", 5);
        assert!(view_of(&r, 9).settled, "a split stands: quiet means nothing more qualifies");
        r.nodes[1] = node(2, "tenth taken", 5);
        assert!(view_of(&r, 9).settled);
        for hunting in ["learning", "quantile"] {
            r.nodes[1] = node(2, hunting, 5);
            assert!(!view_of(&r, 9).settled, "a node {hunting} keeps the scanner on");
        }
        r.nodes.clear();
        assert!(!view_of(&r, 9).settled, "nothing seen yet");
    }

    #[test]
    fn the_lower_tier_in_use_comes_from_node_meminfo() {
        // The box's node 1: MemTotal 1030832 kB, MemFree as captured.
        let used = lower_used(&crate::test_fixtures::cxl_box(), &[1]);
        let m = read_node_meminfo(&crate::test_fixtures::cxl_box(), 1).unwrap();
        assert_eq!(used, (m["MemTotal"] - m["MemFree"]) / 4);
        assert!(used > 0);
        assert_eq!(lower_used(&crate::test_fixtures::cxl_box(), &[7]), 0, "a node that is not there");
    }
}
