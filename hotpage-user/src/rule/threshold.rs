//! Where "fast" ends, per node: a decayed histogram of pages' mean latency
//! classes, split in two by Otsu's method when it is clearly bimodal.
//!
//! Hot pages fault soon after each scan and cold ones late, so the pages' mean
//! latencies form two modes whose positions depend on the machine (TCG slows
//! everything 10-20×), the scan rate and the workload: a threshold found in
//! the data travels where a fixed number does not.

use super::latency::{CLASSES, class_of};

/// Mean classes (weight) the histogram holds before it halves: the threshold
/// follows the last few scans, not the whole run.
const DECAY_AT: u64 = 1 << 16;
/// Weight below which no threshold is drawn yet.
const MIN_WEIGHT: u64 = 512;
/// Each mode must hold at least 1/`MIN_MODE_SHARE` of the weight…
const MIN_MODE_SHARE: u64 = 200;
/// …and their means be this many classes (one octave) apart.
const MIN_SEPARATION: f64 = 2.0;
/// Without two modes yet, the fastest this share of pages counts as hot (and
/// the rule lets at most this share of the node's pages qualify so).
pub const FALLBACK_QUANTILE: f64 = 0.1;
/// Never hotter than the kernel's own default `hot_threshold_ms` allows.
pub const CEILING_MS: u32 = 1000;
/// Without a split now, the fast mode counts as drained once the share of
/// the weight at or under the last split is below 1/`DRAINED_AT` of what it
/// was at that split; until then the split stands as a split (a broad fast
/// mode loses its valley now and then while its pages are still there).
const DRAINED_AT: f64 = 4.0;

/// Where a split goes between the fast mode's peak and the valley, by what
/// one figure is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Placement {
    /// Halfway from the fast peak to the valley: one hint fault's latency is
    /// exponential, so the (much larger) cold mode's fast tail reaches into
    /// the valley.
    #[default]
    HalfwayToValley,
    /// At the valley: a DAMON region's figure is already a mean over an
    /// aggregation's samples, so the cold mode has no such tail, and a
    /// threshold short of the valley cuts off the hot set's slower half (in
    /// the box test, 20% of the hot set was still rejected after 3 minutes).
    Valley,
}

/// How the current threshold was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThresholdSource {
    /// Too few latencies yet: nothing qualifies.
    Learning,
    /// Two modes, split by Otsu's method.
    Split,
    /// Two modes were seen, and the fast one is gone now (its share under
    /// the split a quarter of what it was at the split: mostly promoted):
    /// the last split stands, but the rule asks for more evidence, since
    /// what still passes is the hot set's stragglers or a cold page's luck,
    /// and promoting the latter would make precision decay with time.
    Drained,
    /// No second mode seen yet: the fastest pages.
    Quantile,
}

impl ThresholdSource {
    pub fn name(self) -> &'static str {
        match self {
            Self::Learning => "learning",
            Self::Split => "split",
            Self::Drained => "drained",
            Self::Quantile => "quantile",
        }
    }
}

/// A node's threshold: pages whose mean class is at most `class` are fast,
/// and a fault counts toward a streak when its class is at most
/// `fault_class`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Threshold {
    pub class: Option<u8>,
    /// The bar for one figure. While a split stands, the valley itself: the
    /// page's mean is held to `class`, short of the valley, so one figure
    /// need not be; a hot page's single latencies spread over an octave or
    /// more, and a bar short of the valley broke their streaks (at 900/112
    /// MiB only 73% of the hot set arrived in 40 s). Elsewhere `class`.
    pub fault_class: Option<u8>,
    pub source: ThresholdSource,
}

impl Threshold {
    const LEARNING: Self = Self { class: None, fault_class: None, source: ThresholdSource::Learning };
}

/// The last split: where the mean's bar and the valley were, and the share
/// of the weight at or under the split then.
#[derive(Clone, Copy, Debug)]
struct LastSplit {
    class: u8,
    valley: u8,
    share: f64,
}

#[derive(Clone, Debug)]
pub struct ClassHistogram {
    weights: [u64; CLASSES],
    total: u64,
    threshold: Threshold,
    last_split: Option<LastSplit>,
    placement: Placement,
}

impl Default for ClassHistogram {
    fn default() -> Self {
        Self {
            weights: [0; CLASSES],
            total: 0,
            threshold: Threshold::LEARNING,
            last_split: None,
            placement: Placement::default(),
        }
    }
}

impl ClassHistogram {
    pub fn add(&mut self, class: u8) {
        self.weights[usize::from(class).min(CLASSES - 1)] += 1;
        self.total += 1;
        if self.total >= DECAY_AT {
            self.total = 0;
            for w in &mut self.weights {
                *w /= 2;
                self.total += *w;
            }
        }
    }

    pub fn threshold(&self) -> Threshold {
        self.threshold
    }

    /// Where splits go from the next refresh on.
    pub fn set_placement(&mut self, placement: Placement) {
        self.placement = placement;
    }

    /// The share of the weight in classes up to `class`.
    fn share_up_to(&self, class: u8) -> f64 {
        let under: u64 = self.weights[..=usize::from(class).min(CLASSES - 1)].iter().sum();
        under as f64 / self.total.max(1) as f64
    }

    /// Redraws the threshold from the histogram as it is now.
    /// `drain_is_recent`: the node drained a pass or two ago at most, so a
    /// drained split may still come back without a valley (see `compute`).
    pub fn refresh(&mut self, drain_is_recent: bool) {
        self.threshold = self.compute(drain_is_recent);
    }

    fn compute(&mut self, drain_is_recent: bool) -> Threshold {
        if self.total < MIN_WEIGHT {
            return Threshold::LEARNING;
        }
        let ceiling = class_of(CEILING_MS);
        let split = |s: LastSplit| Threshold {
            class: Some(s.class.min(ceiling)),
            fault_class: Some(s.valley.min(ceiling)),
            source: ThresholdSource::Split,
        };
        // What passes once the fast mode has drained is the hot set's
        // stragglers or a cold page's luck, and the latter adds up over a
        // long run: half an octave stricter than the split, for the mean and
        // each figure (replayed on the e2e recordings: precision after the
        // drain 94.6 → 97.7% with two processes, the hot set's recall the same).
        let drained = |s: LastSplit| {
            let c = Some(s.class.min(ceiling).saturating_sub(1));
            Threshold { class: c, fault_class: c, source: ThresholdSource::Drained }
        };
        if let Some((class, valley)) = otsu(&self.weights, self.placement) {
            let share = self.share_up_to(class);
            let now = LastSplit { class, valley, share };
            return match (self.threshold.source, self.last_split) {
                // Once the fast mode drained, a valley inside what is left
                // (the cold pages' own spread) is no new hot set: it must
                // hold as much of the weight as the drained mode still
                // counted as present.
                (ThresholdSource::Drained, Some(last)) if !still_there(share, last.share) => drained(last),
                _ => {
                    self.last_split = Some(now);
                    split(now)
                }
            };
        }
        if let Some(last) = self.last_split {
            // No valley this time. Measured on DAMON's region figures: the hot
            // mode is broad, lost its valley a second after the first split
            // while 95% of it was still unpromoted, and three-in-a-row under a
            // too-tight split held 30% of the hot set back for 25 s.
            // …but only soon after a drain. A drain called while the mode's
            // stragglers still fault is undone within a pass or two (at
            // 900/112 MiB the split came back so until the whole hot set was
            // in); later, what rises under the old split without a valley is
            // the cold pages' own spread shifting (a 150 s run flickered back
            // to the split from 55 s on and let 100k cold pages through).
            let revive = (self.threshold.source != ThresholdSource::Drained || drain_is_recent)
                && still_there(self.share_up_to(last.class), last.share);
            return if revive { split(last) } else { drained(last) };
        }
        let want = (self.total as f64 * FALLBACK_QUANTILE).ceil() as u64;
        let mut seen = 0;
        for (c, w) in self.weights.iter().enumerate() {
            seen += w;
            if seen >= want {
                let c = Some((c as u8).min(ceiling));
                return Threshold { class: c, fault_class: c, source: ThresholdSource::Quantile };
            }
        }
        Threshold::LEARNING
    }
}

/// Whether a fast mode holding share `now` of the weight is still the one
/// that held `then` at its split: at least 1/[`DRAINED_AT`] of it. The bar
/// for "drained" and for a split after a drain to count as a new hot set.
fn still_there(now: f64, then: f64) -> bool {
    now * DRAINED_AT >= then
}

/// Otsu's split of a class histogram, moved toward the valley between the
/// two modes' peaks (where by `placement`), and the valley itself: the last
/// class of the fast mode. None unless the modes are
/// both substantial, at least an octave apart, and a real valley (at most
/// 4/5 of the smaller peak) lies between them: a wide single mode, which Otsu
/// would happily cut in two, has none.
fn otsu(w: &[u64; CLASSES], placement: Placement) -> Option<(u8, u8)> {
    let total: u64 = w.iter().sum();
    let sum: f64 = w.iter().enumerate().map(|(c, &n)| c as f64 * n as f64).sum();
    let (mut w0, mut s0) = (0u64, 0f64);
    let mut best: Option<(f64, usize, f64, f64, u64)> = None;
    for (t, &n) in w.iter().enumerate().take(CLASSES - 1) {
        w0 += n;
        s0 += t as f64 * n as f64;
        let w1 = total - w0;
        if w0 == 0 || w1 == 0 {
            continue;
        }
        let (m0, m1) = (s0 / w0 as f64, (sum - s0) / w1 as f64);
        let between = w0 as f64 * w1 as f64 * (m1 - m0) * (m1 - m0);
        if best.is_none_or(|b| between > b.0) {
            best = Some((between, t, m0, m1, w0.min(w1)));
        }
    }
    let (_, t, m0, m1, smaller) = best?;
    if smaller * MIN_MODE_SHARE < total || m1 - m0 < MIN_SEPARATION {
        return None;
    }
    let peak = |r: std::ops::Range<usize>| r.max_by_key(|&c| (w[c], std::cmp::Reverse(c)));
    let (p0, p1) = (peak(0..t + 1)?, peak(t + 1..CLASSES)?);
    let valley = (p0..=p1).min_by_key(|&c| (w[c], c))?;
    if w[valley] * 5 > w[p0].min(w[p1]) * 4 {
        return None;
    }
    let split = match placement {
        // The cold mode's fast tail reaches into the valley, and there are
        // many more cold pages than hot.
        Placement::HalfwayToValley => (p0 + valley) / 2,
        Placement::Valley => valley,
    };
    Some((split as u8, valley as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a drained split asks: half an octave stricter, mean and figure.
    fn drained(split: Option<u8>) -> Threshold {
        let c = split.map(|c| c - 1);
        Threshold { class: c, fault_class: c, source: ThresholdSource::Drained }
    }

    fn histogram(parts: &[(u8, u64)]) -> ClassHistogram {
        let mut h = ClassHistogram::default();
        for &(c, n) in parts {
            for _ in 0..n {
                h.add(c);
            }
        }
        h.refresh(true);
        h
    }

    /// A split (800 hot latencies at class 11 among 7000 cold at 18), then
    /// the hot pages leave (promoted): drained. The histogram, and the split.
    fn drained_split() -> (ClassHistogram, Threshold) {
        let mut h = histogram(&[(11, 800), (18, 7000)]);
        let split = h.threshold();
        assert_eq!(split.source, ThresholdSource::Split);
        for _ in 0..200_000 {
            h.add(18);
        }
        h.refresh(true);
        assert_eq!(h.threshold(), drained(split.class));
        (h, split)
    }

    #[test]
    fn a_shallow_valley_measured_in_the_box_still_splits() {
        // Page means early in a CI run (GUPS 64/8 MiB, fast scans): the cold
        // mode's tail fills the valley to 3/4 of the hot peak. At "half the
        // smaller peak" this found no split, and the fastest-tenth fallback
        // promoted cold pages (precision 18%); the replay of that run splits
        // at class 8 and keeps 97%.
        let h = histogram(&[
            (4, 10),
            (5, 177),
            (6, 1072),
            (7, 1701),
            (8, 1455),
            (9, 1284),
            (10, 3240),
            (11, 5019),
            (12, 5208),
            (13, 1284),
            (14, 30),
        ]);
        assert_eq!(
            h.threshold(),
            Threshold { class: Some(8), fault_class: Some(9), source: ThresholdSource::Split },
            "the mean halfway from the fast peak (7) to the valley (9), one figure at the valley"
        );
        // A single wide mode still has no valley.
        let wide =
            histogram(&[(8, 500), (9, 1500), (10, 3000), (11, 4000), (12, 3000), (13, 1500), (14, 500)]);
        assert_ne!(wide.threshold().source, ThresholdSource::Split);
    }

    #[test]
    fn two_modes_split_between_them() {
        // Hot pages around class 11-12 (45-64 ms), cold ones at 17-19.
        let h = histogram(&[(11, 300), (12, 500), (13, 20), (14, 60), (17, 2000), (18, 3000), (19, 2000)]);
        let t = h.threshold();
        assert_eq!(t.source, ThresholdSource::Split);
        let c = t.class.unwrap();
        assert!((12..17).contains(&c), "split at {c}");
        assert_eq!(c, 13, "halfway from the fast peak (12) to the valley (15)");
        assert_eq!(t.fault_class, Some(15), "one fault at the valley");
    }

    #[test]
    fn aggregated_figures_split_at_the_valley() {
        let parts = [(11, 300), (12, 500), (13, 20), (14, 60), (17, 2000), (18, 3000), (19, 2000)];
        let mut h = histogram(&parts);
        assert_eq!(h.threshold().class, Some(13), "one fault's latency: halfway");
        h.set_placement(Placement::Valley);
        h.refresh(true);
        assert_eq!(
            h.threshold(),
            Threshold { class: Some(15), fault_class: Some(15), source: ThresholdSource::Split }
        );
    }

    #[test]
    fn one_mode_takes_the_fastest_tenth_until_a_split_was_seen() {
        let h = histogram(&[(15, 1000), (16, 3000), (17, 1000)]);
        assert_eq!(
            h.threshold(),
            Threshold { class: Some(15), fault_class: Some(15), source: ThresholdSource::Quantile }
        );
        // A split, then the hot mode leaves (promoted): the split stands, drained.
        drained_split();
    }

    #[test]
    fn a_fast_mode_that_loses_its_valley_is_not_drained_until_its_pages_go() {
        // Two modes, split; then the valley fills (a broad fast mode, as
        // DAMON's region figures give) while the fast pages are still there.
        let mut h = histogram(&[(8, 2000), (9, 1000), (14, 7000)]);
        let split = h.threshold();
        assert_eq!(split.source, ThresholdSource::Split);
        for c in 9..14 {
            for _ in 0..1800 {
                h.add(c);
            }
        }
        h.refresh(true);
        assert_eq!(h.threshold(), split, "no valley now, but the fast mode is still there");
        // Its pages leave (promoted): the share under the split falls below a quarter.
        for _ in 0..400_000 {
            h.add(14);
        }
        h.refresh(true);
        assert_eq!(h.threshold(), drained(split.class));
    }

    #[test]
    fn after_a_drain_only_a_mode_of_the_old_size_splits_again() {
        let (mut h, split) = drained_split();
        // The cold pages' own spread grows a small fast shoulder with a
        // valley (DAMON's region figures did): no new hot set, still drained.
        for _ in 0..400 {
            h.add(14);
        }
        assert!(otsu(&h.weights, h.placement).is_some(), "the shoulder has a valley");
        h.refresh(true);
        assert_eq!(h.threshold(), drained(split.class));
        // A new hot set as big as the old one (it moved): a split again.
        for _ in 0..6000 {
            h.add(11);
        }
        h.refresh(true);
        assert_eq!(h.threshold().source, ThresholdSource::Split);
    }

    #[test]
    fn long_after_a_drain_the_cold_spread_rising_under_the_split_does_not_bring_it_back() {
        let (h, split) = drained_split();
        // The cold pages' spread widens toward the split, one mode without a
        // valley, its tail under the split above a quarter of the old share.
        let mut spread = h.clone();
        for (c, n) in [
            (9, 1000),
            (10, 2000),
            (11, 3000),
            (12, 4000),
            (13, 5000),
            (14, 6000),
            (15, 7000),
            (16, 8000),
            (17, 9000),
        ] {
            for _ in 0..n {
                spread.add(c);
            }
        }
        assert!(otsu(&spread.weights, spread.placement).is_none(), "no valley");
        let last = spread.last_split.unwrap();
        assert!(still_there(spread.share_up_to(last.class), last.share), "above a quarter");
        // Soon after the drain that is the mode's stragglers: the split stands again.
        let mut soon = spread.clone();
        soon.refresh(true);
        assert_eq!(soon.threshold(), split);
        // Passes later it is the cold spread: still drained.
        spread.refresh(false);
        assert_eq!(spread.threshold(), drained(split.class));
    }

    #[test]
    fn one_wide_mode_has_no_valley_to_split_at() {
        // Cold pages alone, once the hot ones were promoted (a recording's shape).
        let h = histogram(&[(15, 20), (16, 400), (17, 3000), (18, 9000), (19, 11000), (20, 4000), (21, 500)]);
        assert_ne!(h.threshold().source, ThresholdSource::Split);
    }

    #[test]
    fn modes_closer_than_an_octave_or_a_tiny_one_do_not_split() {
        assert_ne!(histogram(&[(14, 4000), (15, 4000)]).threshold().source, ThresholdSource::Split);
        assert_ne!(histogram(&[(8, 10), (18, 8000)]).threshold().source, ThresholdSource::Split);
        assert_eq!(histogram(&[(8, 100)]).threshold().source, ThresholdSource::Learning);
    }

    #[test]
    fn the_threshold_never_passes_the_kernels_default() {
        // Both modes slow: the split would sit above 1 s.
        let h = histogram(&[(22, 3000), (30, 3000)]);
        assert_eq!(h.threshold().class, Some(class_of(CEILING_MS)));
    }

    #[test]
    fn old_weight_decays() {
        let mut h = ClassHistogram::default();
        for _ in 0..DECAY_AT - 1 {
            h.add(10);
        }
        h.add(10);
        assert_eq!(h.total, DECAY_AT / 2);
    }
}
