//! How much a page's faults say it is hot: a log-likelihood ratio per fault,
//! from the latencies the node's fast and slow pages show now, summed per
//! page and held to the odds a precise choice needs.
//!
//! Two fast faults in a row and a fast mean are plenty when hot pages are
//! tens of times as hot as cold ones, and too little when the two modes lie
//! close: with a hot set 9× as hot as the rest, 28-40% of the cold pages'
//! faults fell under the fault bar and a tenth of the pages qualified were
//! cold (docs/rule.md). The evidence a fault carries is how much likelier
//! its latency class is among the fast pages' faults than among the slow
//! ones'; where the modes overlap each fault says less, and a page needs
//! more of them.

use super::latency::CLASSES;

/// Log-likelihood ratios are kept in quarter nats.
pub const STEPS_PER_NAT: f64 = 4.0;
/// One fault says at most this much either way (quarter nats): a class
/// seen in one group only would otherwise decide alone.
const MAX_FAULT_STEPS: i16 = 12;
const MIN_FAULT_STEPS: i16 = -16;
/// A page's sum stays between these (quarter nats). The floor bounds how much
/// a page's slow past counts against it (a hot set that moves shows fast
/// faults on pages that were cold); the ceiling keeps the sum in its byte.
pub const FLOOR_STEPS: i16 = -8;
pub const CEILING_STEPS: i16 = 40;
/// Faults each group needs before its figures count: the fast pages'
/// fewer (a hot set of a few hundred pages must still be judged within a
/// few passes).
const MIN_FAST_FAULTS: u64 = 256;
const MIN_SLOW_FAULTS: u64 = 1024;
/// The share of qualified pages that should be hot: the posterior odds a
/// page's evidence must reach are `TARGET / (1 - TARGET)`.
const TARGET_PRECISION: f64 = 0.9;

/// Whose fault it was, by the page's mean before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// The page's mean is at or under the split.
    Fast,
    /// Beyond the valley.
    Slow,
}

/// The latency classes of the fast and the slow pages' faults on one node.
/// They forget as the node's pages are scanned again (halved each time two
/// passes' worth have come in), since the slow mode moves faster once the
/// workload's hot set is on the fast node.
#[derive(Clone, Debug)]
pub struct FaultModel {
    fast: [u64; CLASSES],
    slow: [u64; CLASSES],
    n_fast: u64,
    n_slow: u64,
    /// Per fault class, in quarter nats; None until both groups have enough
    /// faults.
    table: Option<[i16; CLASSES]>,
}

impl Default for FaultModel {
    fn default() -> Self {
        Self { fast: [0; CLASSES], slow: [0; CLASSES], n_fast: 0, n_slow: 0, table: None }
    }
}

impl FaultModel {
    /// One fault of class `class` of a page in `group`. `pass`: the node's
    /// pages with a mean, one pass's faults.
    pub fn add(&mut self, class: u8, group: Group, pass: u64) {
        let c = usize::from(class).min(CLASSES - 1);
        match group {
            Group::Fast => (self.fast[c] += 1, self.n_fast += 1),
            Group::Slow => (self.slow[c] += 1, self.n_slow += 1),
        };
        if self.n_fast + self.n_slow >= (2 * pass).max(16 * MIN_SLOW_FAULTS) {
            for w in self.fast.iter_mut().chain(self.slow.iter_mut()) {
                *w /= 2;
            }
            self.n_fast = self.fast.iter().sum();
            self.n_slow = self.slow.iter().sum();
        }
    }

    /// Redraws the per-class ratios from the faults as they are now.
    pub fn refresh(&mut self, valley: Option<u8>) {
        if self.n_fast < MIN_FAST_FAULTS || self.n_slow < MIN_SLOW_FAULTS {
            self.table = None;
            return;
        }
        let mut table = [0i16; CLASSES];
        for (c, t) in table.iter_mut().enumerate() {
            *t =
                self.ratio_steps(self.fast[c], self.slow[c], CLASSES).clamp(MIN_FAULT_STEPS, MAX_FAULT_STEPS);
        }
        // A fault beyond the valley never counts for a page: the fast
        // pages' rare stalled faults would otherwise make a slow class say
        // "hot" where the slow mode thins out.
        if let Some(v) = valley {
            for t in &mut table[usize::from(v).min(CLASSES - 1) + 1..] {
                *t = (*t).min(0);
            }
        }
        self.table = Some(table);
    }

    /// What a fast page's fault says on average (nats): the fast group's
    /// classes weighted by how often they come, the divergence of the two
    /// groups as the page sums see it (clamped, beyond-valley classes at
    /// most 0). None until ready. Near 0 when the fast group's pages fault
    /// no sooner than the rest: the split put pages of one kind apart.
    pub fn fast_fault_nats(&self) -> Option<f64> {
        let table = self.table?;
        let sum: f64 = (0..CLASSES).map(|c| self.fast[c] as f64 * f64::from(table[c])).sum();
        Some(sum / self.n_fast.max(1) as f64 / STEPS_PER_NAT)
    }

    /// Whether both groups have faults enough for the figures to count.
    pub fn ready(&self) -> bool {
        self.table.is_some()
    }

    /// What a fault of class `class` says, in quarter nats; None while the
    /// groups have too few faults.
    pub fn steps(&self, class: u8) -> Option<i16> {
        self.table.map(|t| t[usize::from(class).min(CLASSES - 1)])
    }

    /// What `n` fast faults (under `fault_class`) say, in quarter nats: the
    /// evidence a page's streak carries from before the model was ready.
    pub fn streak_steps(&self, fault_class: u8, n: u8) -> Option<i16> {
        self.table?;
        let upto = usize::from(fault_class).min(CLASSES - 1) + 1;
        let f: u64 = self.fast[..upto].iter().sum();
        let s: u64 = self.slow[..upto].iter().sum();
        let one = self.ratio_steps(f, s, 2).clamp(0, MAX_FAULT_STEPS);
        Some((one * i16::from(n)).clamp(FLOOR_STEPS, CEILING_STEPS))
    }

    /// `ln(P_fast / P_slow)` of an outcome the fast group showed `f` times
    /// and the slow one `s` times, among `outcomes`, in quarter nats. Half a
    /// count per outcome is added to both (a Jeffreys prior): an outcome
    /// neither group showed says nothing, one that one group alone showed
    /// says a bounded amount.
    fn ratio_steps(&self, f: u64, s: u64, outcomes: usize) -> i16 {
        let k = outcomes as f64 / 2.0;
        let p_fast = (f as f64 + 0.5) / (self.n_fast as f64 + k);
        let p_slow = (s as f64 + 0.5) / (self.n_slow as f64 + k);
        ((p_fast / p_slow).ln() * STEPS_PER_NAT).round() as i16
    }
}

/// The evidence (quarter nats) a page needs when a share `prior` of the
/// node's pages is fast: enough to turn the prior odds into those of
/// [`TARGET_PRECISION`], at most what the page's sum can hold.
pub fn bar_steps(prior: f64) -> i16 {
    let p = prior.clamp(1.0 / 1024.0, 0.5);
    let nats = (TARGET_PRECISION / (1.0 - TARGET_PRECISION)).ln() - (p / (1.0 - p)).ln();
    ((nats * STEPS_PER_NAT).ceil() as i16).clamp(0, CEILING_STEPS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::latency::class_of;

    /// Exponential latencies of a page touched `per_s` times a second, plus
    /// a fixed delay, from a fixed sequence.
    fn latencies(per_s: f64, delay_ms: f64, n: usize, seed: u64) -> impl Iterator<Item = u32> {
        let mut x = seed;
        (0..n).map(move |_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            (-(1.0 - u).ln() / per_s * 1000.0 + delay_ms) as u32
        })
    }

    fn model(fast_per_s: f64, slow_per_s: f64) -> FaultModel {
        let mut m = FaultModel::default();
        for ms in latencies(fast_per_s, 20.0, 8192, 0x9e37_79b9_7f4a_7c15) {
            m.add(class_of(ms), Group::Fast, 1 << 20);
        }
        for ms in latencies(slow_per_s, 20.0, 8192 * 7, 0x2545_f491_4f6c_dd1d) {
            m.add(class_of(ms), Group::Slow, 1 << 20);
        }
        m.refresh(None);
        m
    }

    #[test]
    fn nothing_is_said_until_both_groups_have_faults_enough() {
        let mut m = FaultModel::default();
        for ms in latencies(50.0, 20.0, 8192, 7) {
            m.add(class_of(ms), Group::Fast, 1 << 20);
        }
        m.refresh(None);
        assert_eq!(m.steps(class_of(30)), None, "no slow faults yet");
        assert_eq!(m.streak_steps(class_of(100), 2), None);
    }

    /// A fast fault says much where hot pages are 25× as hot as cold ones,
    /// little where they are 3× as hot; a slow fault counts against.
    #[test]
    fn a_fault_says_more_where_the_modes_lie_apart() {
        let (apart, close) = (model(50.0, 2.0), model(6.0, 2.0));
        let fast = class_of(30);
        let (a, c) = (apart.steps(fast).unwrap(), close.steps(fast).unwrap());
        assert!(a >= 8 && c > 0 && c < a / 2, "30 ms: {a} quarter nats apart, {c} close");
        assert!(apart.steps(class_of(1500)).unwrap() < 0 && close.steps(class_of(1500)).unwrap() < 0);
        // Two fast faults of a streak say twice what one says, bounded.
        let one = apart.streak_steps(class_of(100), 1).unwrap();
        assert!(one > 0 && apart.streak_steps(class_of(100), 2) == Some((2 * one).min(CEILING_STEPS)));
    }

    /// Beyond the valley a class never counts for a page, however the
    /// fast group's rare slow faults fall.
    #[test]
    fn a_fault_beyond_the_valley_never_counts_for_a_page() {
        let mut m = FaultModel::default();
        for ms in latencies(50.0, 20.0, 8192, 3) {
            m.add(class_of(ms), Group::Fast, 1 << 20);
        }
        // Stalled faults of fast pages at ~3 s, where slow pages seldom are.
        for _ in 0..200 {
            m.add(class_of(3000), Group::Fast, 1 << 20);
        }
        for ms in latencies(2.0, 20.0, 8192, 5) {
            m.add(class_of(ms), Group::Slow, 1 << 20);
        }
        m.refresh(None);
        assert!(m.steps(class_of(3000)).unwrap() > 0, "without the valley the stall counts for the page");
        m.refresh(Some(class_of(300)));
        assert!(m.steps(class_of(3000)).unwrap() <= 0);
        assert!(m.steps(class_of(30)).unwrap() > 0);
    }

    #[test]
    fn the_bar_rises_as_fast_pages_grow_rare() {
        // ln(0.9 / 0.1) - ln(1/8 / 7/8) = 4.14 nats: 17 quarter nats.
        assert_eq!(bar_steps(0.125), 17);
        assert_eq!(bar_steps(0.5), 9);
        assert!(bar_steps(0.01) > bar_steps(0.125));
        assert_eq!(bar_steps(0.0), bar_steps(1.0 / 1024.0));
        assert!(bar_steps(0.0) <= CEILING_STEPS);
    }

    /// The model forgets: the slow mode moves faster once the hot set left.
    #[test]
    fn the_faults_are_halved_every_two_passes() {
        let mut m = FaultModel::default();
        for ms in latencies(2.0, 20.0, 40_000, 11) {
            m.add(class_of(ms), Group::Slow, 10_000);
        }
        assert!(m.n_slow < 20_000, "{} slow faults kept", m.n_slow);
    }
}
