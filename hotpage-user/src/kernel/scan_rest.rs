//! When nothing is left to find, NUMA balancing's scanner rests.
//!
//! hotpage sets the scan pace its rule needs to find a hot set (docs/rule.md,
//! "The scan rate"). Once the rule knows where fast ends on every lower-tier
//! node and no fault has qualified for a while (the hot set is in, or what is
//! left will not qualify), each pass only finds the cold pages left on the
//! lower tier again, and the workload pays for every hint fault in
//! system time. The one switch a running task obeys at once is
//! `kernel.numa_balancing`: a task's scan period is fixed when it starts, and
//! a smaller `scan_size_mb` is undone by the kernel's overhead cap. So the
//! scanner rests with it off and probes with it on, each fruitless probe
//! doubling the next rest up to a bound, as the kernel's own period backs off
//! when its scans find nothing to move. New memory on the lower tier (a job
//! that starts, pages demoted there) ends a rest at once: the scanner does not
//! reach a task's pages while it rests.

use serde::{Deserialize, Serialize};

/// When to rest, for how long, and how long each probe scans (ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestConfig {
    /// Quiet time (every node settled, nothing qualified) before the first
    /// rest; 0 never rests.
    pub after_ms: u64,
    /// How long the scanner runs between rests; also the first rest's length.
    pub probe_ms: u64,
    /// The longest rest.
    pub max_rest_ms: u64,
}

/// What `rest_after_s = 20` gives: several passes of quiet under TCG (a pass
/// over 512 MiB took 3-6 s there) before resting, probes of 10 s, and rests
/// of at most 40 s, so a long quiet stretch costs a fifth of the hint faults.
pub const REST_20_S: RestConfig = RestConfig { after_ms: 20_000, probe_ms: 10_000, max_rest_ms: 40_000 };

/// The default: never rest. A hot set that moves soon after the last one
/// was found is hunted in probes only (docs/rule.md, "The scanner rests").
/// The kernel does take a task's scan up again when `kernel.numa_balancing`
/// comes back on (a box test asserts it); the runs that seemed to show
/// otherwise had nothing left on the lower tier to scan (docs/operations.md).
pub const DEFAULT_REST: RestConfig = RestConfig { after_ms: 0, ..REST_20_S };

impl RestConfig {
    pub fn enabled(&self) -> bool {
        self.after_ms > 0
    }
}

/// What the scanner is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Hunting: a hot set is being found, or was until recently.
    Scanning,
    /// Off until `until` (ms).
    Resting { until: u64 },
    /// On again until `until`, to see whether anything changed.
    Probing { until: u64 },
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Self::Scanning => "scanning",
            Self::Resting { .. } => "resting",
            Self::Probing { .. } => "probing",
        }
    }
}

/// What the hotness rule shows at a tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleView {
    /// Every lower-tier node with latencies knows where fast ends: a split
    /// stands or has drained, or the fastest-tenth fallback is spent (while
    /// it learns or takes its tenth, the scanner runs).
    pub settled: bool,
    /// Hint faults qualified so far (a running count).
    pub qualified: u64,
    /// Pages in use on the lower-tier nodes (MemTotal - MemFree).
    pub lower_used: u64,
}

/// Growth of the lower tier's used pages that counts as new memory to learn:
/// 64 MiB, or a 32nd of what was in use if more.
fn grew(then: u64, now: u64) -> bool {
    now > then + (then / 32).max(16_384)
}

/// The scanner's state as `stats` and the metrics show it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScanRestReport {
    /// "scanning", "resting" or "probing".
    pub phase: String,
    /// Rests begun so far.
    pub rests: u64,
    /// Time the scanner has rested, s.
    pub rested_s: f64,
    /// The current or next rest's length, s.
    pub rest_s: f64,
}

/// Decides, tick by tick, whether NUMA balancing should scan.
#[derive(Clone, Debug)]
pub struct ScanRest {
    config: RestConfig,
    phase: Phase,
    quiet_since: u64,
    qualified: u64,
    rest_ms: u64,
    rests: u64,
    rested_ms: u64,
    rest_began: u64,
    /// The lower tier's used pages when the scanner last had news (the
    /// least since, if memory was freed).
    used: Option<u64>,
}

impl ScanRest {
    pub fn new(config: RestConfig, now: u64) -> Self {
        Self {
            config,
            phase: Phase::Scanning,
            quiet_since: now,
            qualified: 0,
            rest_ms: config.probe_ms,
            rests: 0,
            rested_ms: 0,
            rest_began: now,
            used: None,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Takes the rule's view at `now` (ms). Returns `Some(true)` when the
    /// scanner must be switched on, `Some(false)` off, None to leave it.
    pub fn tick(&mut self, now: u64, view: RuleView) -> Option<bool> {
        let used = *self.used.get_or_insert(view.lower_used);
        let found = view.qualified != self.qualified || !view.settled || grew(used, view.lower_used);
        self.qualified = view.qualified;
        self.used = Some(if found { view.lower_used } else { used.min(view.lower_used) });
        if found || !self.config.enabled() {
            // Something to find (a fault qualified, or a fast mode stands):
            // scan at full pace, and start the backoff over.
            self.quiet_since = now;
            self.rest_ms = self.config.probe_ms;
            let was_resting = matches!(self.phase, Phase::Resting { .. });
            if was_resting {
                self.rested_ms += now.saturating_sub(self.rest_began);
            }
            self.phase = Phase::Scanning;
            return was_resting.then_some(true);
        }
        match self.phase {
            Phase::Scanning if now.saturating_sub(self.quiet_since) >= self.config.after_ms => {
                Some(self.rest(now))
            }
            Phase::Resting { until } if now >= until => {
                self.rested_ms += now.saturating_sub(self.rest_began);
                self.phase = Phase::Probing { until: now + self.config.probe_ms };
                Some(true)
            }
            Phase::Probing { until } if now >= until => {
                self.rest_ms = (self.rest_ms * 2).min(self.config.max_rest_ms.max(self.config.probe_ms));
                Some(self.rest(now))
            }
            _ => None,
        }
    }

    fn rest(&mut self, now: u64) -> bool {
        self.rests += 1;
        self.rest_began = now;
        self.phase = Phase::Resting { until: now + self.rest_ms };
        false
    }

    pub fn report(&self, now: u64) -> ScanRestReport {
        let current = match self.phase {
            Phase::Resting { .. } => now.saturating_sub(self.rest_began),
            _ => 0,
        };
        ScanRestReport {
            phase: self.phase.name().into(),
            rests: self.rests,
            rested_s: (self.rested_ms + current) as f64 / 1000.0,
            rest_s: self.rest_ms as f64 / 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET: RuleView = RuleView { settled: true, qualified: 100, lower_used: 200_000 };

    fn rest() -> ScanRest {
        let mut r = ScanRest::new(REST_20_S, 0);
        assert_eq!(r.tick(0, QUIET), None, "the first view only sets the count");
        r
    }

    /// Ticks every second from `from` to `to` (ms) with `view`; the switches made.
    fn run(r: &mut ScanRest, from: u64, to: u64, view: RuleView) -> Vec<(u64, bool)> {
        (from..=to).step_by(1000).filter_map(|t| r.tick(t, view).map(|on| (t, on))).collect()
    }

    #[test]
    fn a_quiet_settled_node_rests_then_probes_with_longer_rests() {
        let mut r = rest();
        // 20 s of quiet, then 10 s off, 10 s on, 20 s off, 10 s on, 40 s off (the bound), ...
        let switches = run(&mut r, 1000, 200_000, QUIET);
        assert_eq!(
            switches[..8],
            [
                (20_000, false),
                (30_000, true),
                (40_000, false),
                (60_000, true),
                (70_000, false),
                (110_000, true),
                (120_000, false),
                (160_000, true)
            ]
        );
        assert_eq!(r.report(200_000).rest_s, 40.0, "never longer than the bound");
        // Off 10 + 20 + 40 + 40 s, and 30 s into the fifth rest.
        let rep = r.report(200_000);
        assert_eq!((rep.phase.as_str(), rep.rests, rep.rested_s), ("resting", 5, 140.0));
    }

    #[test]
    fn a_fault_that_qualifies_or_a_new_split_ends_the_rest_and_the_backoff() {
        let mut r = rest();
        run(&mut r, 1000, 75_000, QUIET);
        assert!(matches!(r.phase(), Phase::Resting { .. }));
        // A probe's faults qualify a page: scan on at once, full pace.
        assert_eq!(r.tick(76_000, RuleView { qualified: 101, ..QUIET }), Some(true));
        assert_eq!(r.phase(), Phase::Scanning);
        // Quiet again: the first rest is short again.
        let s = run(&mut r, 77_000, 120_000, RuleView { qualified: 101, ..QUIET });
        assert_eq!(s[..2], [(96_000, false), (106_000, true)]);
        // Resting again from 116 s; a node learning again (its histogram
        // lost the split) ends it, whatever the count.
        assert!(matches!(r.phase(), Phase::Resting { .. }));
        assert_eq!(r.tick(121_000, RuleView { settled: false, qualified: 101, ..QUIET }), Some(true));
        assert_eq!(r.phase(), Phase::Scanning);
        assert_eq!(r.tick(122_000, RuleView { settled: false, qualified: 101, ..QUIET }), None);
    }

    #[test]
    fn new_memory_on_the_lower_tier_ends_a_rest() {
        let mut r = rest();
        run(&mut r, 1000, 25_000, QUIET);
        assert!(matches!(r.phase(), Phase::Resting { .. }));
        // Memory freed (a job exits) is no news, nor is a little growth back.
        let less = RuleView { lower_used: 150_000, ..QUIET };
        assert_eq!(r.tick(26_000, less), None);
        assert_eq!(r.tick(27_000, RuleView { lower_used: 160_000, ..QUIET }), None);
        // A job starts: 100 MiB more in use than the least seen.
        assert_eq!(r.tick(28_000, RuleView { lower_used: 150_000 + 25_600, ..QUIET }), Some(true));
        assert_eq!(r.phase(), Phase::Scanning);
        // Its memory stays: quiet again from here, a rest 20 s later.
        let s = run(&mut r, 29_000, 60_000, RuleView { lower_used: 175_600, ..QUIET });
        assert_eq!(s[0], (48_000, false));
    }

    #[test]
    fn a_hunt_never_rests() {
        let mut r = rest();
        // Pages qualify every few seconds, or a split stands: no switch at all.
        for t in (1..300).map(|s| s * 1000) {
            let view = RuleView { settled: t % 5000 != 0, qualified: 100 + t / 7000, ..QUIET };
            assert_eq!(r.tick(t, view), None, "at {t} ms");
        }
        let mut off = ScanRest::new(DEFAULT_REST, 0);
        assert!(run(&mut off, 0, 300_000, QUIET).is_empty(), "after 0 never rests");
    }
}
