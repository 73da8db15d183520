//! Where "fast" ends, per node: a decayed histogram of pages' mean latency
//! classes, split in two by Otsu's method when it is clearly bimodal (or by
//! its peaks, or, where the fast mode is a shoulder, a mixture fit).
//!
//! Hot pages fault soon after each scan and cold ones late, so the pages' mean
//! latencies form two modes whose positions depend on the machine (TCG slows
//! everything 10-20×), the scan rate and the workload: a threshold found in
//! the data travels where a fixed number does not.

use super::{
    latency::{CLASSES, class_of},
    mixture,
};

/// Mean classes (weight) the histogram holds before it halves: the threshold
/// follows the last few scans, not the whole run.
const DECAY_AT: u64 = 1 << 16;
/// Weight below which no threshold is drawn yet.
const MIN_WEIGHT: u64 = 512;
/// Each mode must hold at least 1/`MIN_MODE_SHARE` of the weight…
const MIN_MODE_SHARE: u64 = 200;
/// …and their means be this many classes (one octave) apart.
const MIN_SEPARATION: f64 = 2.0;
/// Mean updates between two mixture fits from scratch (`shoulder`).
const FULL_FIT_EVERY: u64 = 8192;
/// Without two modes yet, the fastest this share of pages counts as hot (and
/// the rule lets at most this share of the node's pages qualify so).
pub const FALLBACK_QUANTILE: f64 = 0.1;
/// Never hotter than the kernel's own default `hot_threshold_ms` allows.
pub const CEILING_MS: u32 = 1000;
/// The fast mode counts as drained once a pass over the node finds under
/// 1/`DRAINED_AT` of the fast pages its busiest pass found, and the count
/// has stopped falling or is under 1/`DRAINED_AT`² (see [`FastFlow::gone`]).
const DRAINED_AT: u64 = 4;
/// One pass's shoulder counts when the components are this far apart
/// (Ashman's D; clean separation is D > 2).
const PASS_MIN_ASHMAN_D: f64 = 2.0;

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
    /// Two modes were seen, and the fast one is gone now (a pass over the
    /// node finds few of its pages fast: mostly promoted; see
    /// [`FastFlow::gone`]): the last split stands, but the rule asks for
    /// more evidence, since what still passes is the hot set's stragglers
    /// or a cold page's luck, and promoting the latter would make precision
    /// decay with time.
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

/// The last split: where the mean's bar and the valley were.
#[derive(Clone, Copy, Debug)]
struct LastSplit {
    class: u8,
    valley: u8,
    /// Found by the mixture fit (a shoulder), not a valley: fitted again at
    /// each refresh until a valley shows.
    fitted: bool,
}

/// The fast mode as a flow: how many mean updates of the last pass over the
/// node were at or under the last split, and the most of any pass. A page's
/// mean updates once a scan, so a pass's count is the pages that are fast now;
/// the histogram, which holds the run's history, still shows a promoted hot
/// set long after it left.
#[derive(Clone, Copy, Debug)]
struct FastFlow {
    /// Mean updates per pass (the node's pages with a mean).
    pass: u64,
    seen: u64,
    fast: u64,
    last: Option<u64>,
    before: Option<u64>,
    peak: u64,
    /// Mean classes of the pass under way, and of the last one: the node's
    /// pages as they are now, without the histogram's history.
    classes: [u64; CLASSES],
    last_classes: [u64; CLASSES],
    /// The last pass's fast mode ([`pass_modes`]), found when it closed: a
    /// mixture fit is too dear for every redraw (0.3 ms here, 10-20× that
    /// under TCG, 30 redraws a second).
    last_modes: Option<(u8, u8)>,
}

impl Default for FastFlow {
    fn default() -> Self {
        Self {
            pass: 0,
            seen: 0,
            fast: 0,
            last: None,
            before: None,
            peak: 0,
            classes: [0; CLASSES],
            last_classes: [0; CLASSES],
            last_modes: None,
        }
    }
}

impl FastFlow {
    /// Counts one mean update; true when it closed a pass. `taken`: faults
    /// qualified since the split. Once they reach the peak, the fast mode
    /// was taken, and a busier pass after it is the cold spread moving
    /// under the split, not more fast pages: the peak stays.
    fn add(&mut self, class: u8, fast: bool, taken: u64, placement: Placement) -> bool {
        self.classes[usize::from(class).min(CLASSES - 1)] += 1;
        self.seen += 1;
        self.fast += u64::from(fast);
        if self.seen < self.pass.max(1) {
            return false;
        }
        self.before = self.last;
        self.last = Some(self.fast);
        if taken < self.peak || self.peak == 0 {
            self.peak = self.peak.max(self.fast);
        }
        (self.seen, self.fast) = (0, 0);
        self.last_classes = std::mem::replace(&mut self.classes, [0; CLASSES]);
        self.last_modes = pass_modes(&self.last_classes, placement);
        true
    }

    /// Whether the fast mode's pages have left (promoted): the last pass
    /// found under 1/[`DRAINED_AT`] of the fast pages the busiest pass did,
    /// and either the count has stopped falling (by under a quarter over the
    /// pass: what is left is the cold pages' steady luck, not stragglers
    /// still being promoted) or it is under 1/[`DRAINED_AT`]² (what is left
    /// no longer matters; the drained bars still take consistently fast
    /// pages); or once the node has qualified as many faults since its
    /// split as the busiest pass held fast pages (`taken`): the fast mode
    /// was taken, and a count still falling is the cold pages' spread
    /// shifting, not stragglers.
    ///
    /// Once the fast mode was taken, the node is drained too as soon as the
    /// last pass on its own shows no fast mode ([`pass_modes`]), whether or
    /// not its count fell: what is under the split now is the cold spread,
    /// moving there as the workload, its hot set on the fast node, touches
    /// its cold pages more often. A box run of "small" (64/16 MiB) stood at
    /// its split while the pass's fast means went from 2149 (half its peak,
    /// right after the hot set was taken) to 11522 of 16384 pages, the bar's
    /// prior rising with them, and let 2000 cold pages through (precision
    /// 66.6%).
    /// Asked of a node that is not drained; a drained one stays so until
    /// [`Self::back`].
    fn gone(&self, taken: u64) -> bool {
        let Some(last) = self.last else { return false };
        let stopped = self.before.is_some_and(|b| last * 4 >= b * 3);
        let falling_gone = last * DRAINED_AT < self.peak
            && (stopped || last * DRAINED_AT * DRAINED_AT < self.peak || taken >= self.peak);
        falling_gone || (taken >= self.peak && self.last_modes.is_none())
    }

    /// Fast pages back on a drained node: a fast mode of its own in the
    /// last pass (two modes or a clear shoulder, [`pass_modes`]), with at
    /// least 1/[`DRAINED_AT`] of the busiest pass's fast pages under the
    /// last split or under its own split. A new hot set need not come back
    /// under the old split (in a moving box run the
    /// split had tightened to 127 ms on the first set's stragglers, and the
    /// new set's means stood a clear mode at 90-250 ms beside seven times as
    /// many cold pages, 915 of them under 127 ms: the node stayed drained to
    /// the end of the run). Under its own split, a mode counts only up to
    /// twice the busiest pass's fast pages: where the two modes of a pass
    /// are the pages left and a few slow ones, the faster is everything (a
    /// DAMON run of a small region once the hot set had left: 15000 pages
    /// under 10 ms beside 477 at 180 ms, against a peak of 3076). The counts
    /// then start over under the new split, so that the next redraw does
    /// not take the old split's count of the same pass for a drain.
    fn back(&mut self) -> Option<(u8, u8)> {
        let found = self.last_modes?;
        if self.last.is_some_and(|last| last * DRAINED_AT >= self.peak) {
            return Some(found);
        }
        let under = |classes: &[u64; CLASSES]| classes[..=usize::from(found.0)].iter().sum::<u64>();
        let last = under(&self.last_classes);
        if last * DRAINED_AT < self.peak || last > 2 * self.peak {
            return None;
        }
        (self.last, self.before, self.fast) = (Some(last), None, under(&self.classes));
        Some(found)
    }
}

#[derive(Clone, Debug)]
pub struct ClassHistogram {
    weights: [u64; CLASSES],
    total: u64,
    threshold: Threshold,
    last_split: Option<LastSplit>,
    placement: Placement,
    flow: FastFlow,
    /// Faults qualified since the node last came to a split from anything
    /// else (the first split, or a new hot set after a drain).
    taken: u64,
    /// Mean updates counted, and the count before which no shoulder is
    /// fitted (one was dropped: [`Self::drop_shoulder`]).
    updates: u64,
    no_fit_before: u64,
    /// The last mixture fit, and the count from which the next fit starts
    /// afresh rather than from it.
    last_fit: Option<mixture::Mixture>,
    next_full_fit: u64,
    /// The standing shoulder was judged ([`Self::judge_shoulder`]).
    shoulder_judged: bool,
}

impl Default for ClassHistogram {
    fn default() -> Self {
        Self {
            weights: [0; CLASSES],
            total: 0,
            threshold: Threshold::LEARNING,
            last_split: None,
            placement: Placement::default(),
            flow: FastFlow::default(),
            taken: 0,
            updates: 0,
            no_fit_before: 0,
            last_fit: None,
            next_full_fit: 0,
            shoulder_judged: false,
        }
    }
}

impl ClassHistogram {
    pub fn add(&mut self, class: u8) {
        let taken = self.taken;
        let closed = self
            .last_split
            .is_some_and(|last| self.flow.add(class, class <= last.class, taken, self.placement));
        self.weights[usize::from(class).min(CLASSES - 1)] += 1;
        self.total += 1;
        self.updates += 1;
        if self.total >= DECAY_AT {
            self.total = 0;
            for w in &mut self.weights {
                *w /= 2;
                self.total += *w;
            }
        }
        // A pass's end is news: the fast pages are gone, or back (a hot set
        // that moved is followed a refresh sooner).
        if closed {
            self.threshold = self.compute();
        }
    }

    pub fn threshold(&self) -> Threshold {
        self.threshold
    }

    /// The last split's mean class and valley, standing or drained.
    pub fn last_split(&self) -> Option<(u8, u8)> {
        self.last_split.map(|s| (s.class, s.valley))
    }

    /// The share of the node's pages in its fast mode, the prior odds a
    /// page's evidence must overcome. While the split stands, the busiest
    /// pass's: the same bar for the whole hot set, not one that rises as
    /// its first pages leave (a likelihood-ratio bar that stays put takes
    /// the most hot pages for a given number of cold ones); before a pass
    /// closed, the histogram's share. Once drained, the last pass's: what
    /// is left is stragglers and luck.
    pub fn fast_share(&self) -> Option<f64> {
        let split = self.last_split?;
        let pass = self.flow.pass.max(1) as f64;
        if let Some(last) = self.flow.last {
            let fast = if self.threshold.source == ThresholdSource::Drained { last } else { self.flow.peak };
            return Some(fast as f64 / pass);
        }
        let under: u64 = self.weights[..=usize::from(split.class)].iter().sum();
        Some(under as f64 / self.total.max(1) as f64)
    }

    /// Whether the standing split is a fitted shoulder, not a valley's.
    pub fn split_is_fitted(&self) -> bool {
        self.threshold.source == ThresholdSource::Split && self.last_split.is_some_and(|s| s.fitted)
    }

    /// Judges a standing shoulder once, by what its fast pages' faults say
    /// when the fault model first has faults enough under it: one that put
    /// pages of one kind apart (`informative` false: their faults are alike)
    /// is dropped, there was no split, and none is fitted for the next two
    /// passes' worth of mean updates. Once only, and never after a page
    /// qualified under it: as its pages are promoted, or merely as the
    /// model learns while a slow shoulder's pages gather their evidence, the
    /// faults in its fast group say less and less (a box run's shoulder went
    /// from 0.5 to under 0.1 nats a fault while 90% of what it took was hot;
    /// a synthetic one from 0.32 to 0.10 before its first page qualified),
    /// and dropping it then, the fastest tenth took cold pages.
    pub fn judge_shoulder(&mut self, informative: bool) {
        if !self.split_is_fitted() || self.shoulder_judged {
            return;
        }
        self.shoulder_judged = true;
        if !informative && self.taken == 0 {
            self.drop_shoulder();
        }
    }

    fn drop_shoulder(&mut self) {
        self.last_split = None;
        self.no_fit_before = self.updates + 2 * self.flow.pass;
        self.threshold = self.quantile(class_of(CEILING_MS));
    }

    /// A fault qualified under this node's threshold.
    pub fn note_qualified(&mut self) {
        self.taken += 1;
    }

    /// Where splits go from the next refresh on.
    pub fn set_placement(&mut self, placement: Placement) {
        self.placement = placement;
    }

    /// Redraws the threshold from the histogram as it is now. `pass`: mean
    /// updates in a pass over the node (its pages with a mean), the window
    /// in which the fast pages are counted from now on.
    pub fn refresh(&mut self, pass: u64) {
        self.flow.pass = pass.max(1);
        self.threshold = self.compute();
    }

    fn compute(&mut self) -> Threshold {
        let was = self.threshold.source;
        let now = self.draw();
        if now.source == ThresholdSource::Split && was != ThresholdSource::Split {
            self.taken = 0;
        }
        now
    }

    fn draw(&mut self) -> Threshold {
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
        let was_drained = self.threshold.source == ThresholdSource::Drained;
        let gone = !was_drained && self.flow.gone(self.taken);
        match (two_modes(&self.weights, self.placement), self.last_split) {
            // The fast mode's pages left (promoted). The histogram still
            // holds their weight for tens of seconds, so Otsu goes on finding
            // a valley between that history and the cold mode, which moves
            // faster once the workload's hot set is on the fast node: taken as
            // a split, it let 100 cold pages a second through in a CI run
            // (precision 57%). The last split stands, drained. A new hot set
            // (it moved) brings the fast pages back, and with them the split.
            (_, Some(last)) if gone => drained(last),
            // Drained: fast pages are back only as a mode of their own in the
            // last pass ([`FastFlow::back`]). A new hot set (it moved) is such
            // a mode while its pages' means come down; the histogram, whose
            // history holds them on their way, shows no valley for passes.
            // Without a mode in the pass, a count rising under the split is
            // the cold spread moving: the workload speeds up once its hot set
            // is on the fast node and touches its cold pages more often. In a
            // 150 s recording the cold pages under the split grew from 3% of
            // the hot set's count right after the drain to 90% ten passes
            // later, and in another from 15% to 136% within two passes;
            // reviving the split for them took precision to 15.7% and 12.5%.
            (_, Some(last)) if was_drained => match self.flow.back() {
                Some(found) => {
                    self.restart_from_last_pass();
                    split(self.take_split(found))
                }
                None => drained(last),
            },
            (Some(found), _) => split(self.take_split(found)),
            // A shoulder is fitted afresh as the means move; a valley, once
            // one shows, takes over (above). A fit that falls short of the
            // separation for a moment (a box run's shoulder fitted at
            // D 1.5-1.7 from one refresh to the next) leaves the last one
            // standing: dropping it, the fastest tenth took cold pages
            // between fits (precision 49% replayed). A shoulder that put
            // pages of one kind apart goes by what its pages' faults say
            // ([`Self::drop_shoulder`]).
            (None, Some(last)) if last.fitted => split(self.shoulder().unwrap_or(last)),
            // No valley this time, but the fast mode's pages are still here.
            // Measured on DAMON's region figures: the hot mode is broad, lost
            // its valley a second after the first split while 95% of it was
            // still unpromoted, and three-in-a-row under a too-tight split
            // held 30% of the hot set back for 25 s.
            (None, Some(last)) => split(last),
            // No valley yet: a fast mode that is a shoulder on the slow one,
            // or else the fastest tenth.
            (None, None) => match self.shoulder() {
                Some(fitted) => split(fitted),
                None => self.quantile(ceiling),
            },
        }
    }

    /// The histogram starts over from the last pass: its history is of the
    /// hot set that left, and a split drawn on it would go back to where
    /// that set was (the new set's means are still coming down).
    fn restart_from_last_pass(&mut self) {
        self.weights = self.flow.last_classes;
        self.total = self.weights.iter().sum();
    }

    /// Makes Otsu's `(class, valley)` the last split.
    fn take_split(&mut self, (class, valley): (u8, u8)) -> LastSplit {
        let now = LastSplit { class, valley, fitted: false };
        self.last_split = Some(now);
        now
    }

    /// A shoulder, made the last split if the fit finds one.
    /// The histogram changes little between two redraws (1024 mean
    /// updates), so the fit starts from the last one and settles in a few
    /// rounds; every [`FULL_FIT_EVERY`] updates it starts afresh too, so
    /// that it cannot stay in a poor local optimum. A fit from scratch at
    /// every redraw cost 0.3-0.5 ms here (10-20× that under TCG) 30 times a
    /// second while no valley showed.
    fn shoulder(&mut self) -> Option<LastSplit> {
        if self.updates < self.no_fit_before {
            return None;
        }
        self.last_fit = match self.last_fit {
            Some(last) if self.updates < self.next_full_fit => mixture::refit(&self.weights, &last),
            last => {
                self.next_full_fit = self.updates + FULL_FIT_EVERY;
                mixture::fit(&self.weights, last.as_ref())
            }
        };
        let (class, valley) = shoulder(self.last_fit.as_ref()?, self.placement)?;
        if !self.split_is_fitted() {
            self.shoulder_judged = false;
        }
        let now = LastSplit { class, valley, fitted: true };
        self.last_split = Some(now);
        Some(now)
    }

    /// Without a split yet: the fastest [`FALLBACK_QUANTILE`] of the weight.
    fn quantile(&self, ceiling: u8) -> Threshold {
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
    Some(placed(p0, valley, placement))
}

/// The split between a fast peak and its valley, by `placement`, and the valley.
fn placed(p0: usize, valley: usize, placement: Placement) -> (u8, u8) {
    let split = match placement {
        // The cold mode's fast tail reaches into the valley, and there are
        // many more cold pages than hot.
        Placement::HalfwayToValley => (p0 + valley) / 2,
        Placement::Valley => valley,
    };
    (split as u8, valley as u8)
}

/// Two modes where Otsu's cut misses them: when one mode holds a few
/// percent of the weight (a hot set that is a small part of the lower tier),
/// the cut that best divides the weight's variance can land inside the large
/// mode, whose two sides then hold no valley. In a moving hot set's run the
/// new hot pages' means stood a clear mode at 90-250 ms, 0.7 of its peak
/// above the valley, beside cold pages seven times as many, and Otsu found
/// nothing for a whole pass. Here the modes are peaks: the highest peak and
/// the highest other one at least an octave away with a valley between
/// them, at most 4/5 of it, and at least 1/`MIN_MODE_SHARE` of the weight
/// on its side of the valley. The faster of the two is the fast mode.
fn two_peaks(w: &[u64; CLASSES], placement: Placement) -> Option<(u8, u8)> {
    let total: u64 = w.iter().sum();
    let top = (0..CLASSES).max_by_key(|&c| (w[c], std::cmp::Reverse(c)))?;
    let mut best: Option<(usize, usize)> = None;
    for other in (0..CLASSES).filter(|&c| w[c] > 0 && c.abs_diff(top) >= 2) {
        let between = if other < top { other + 1..top } else { top + 1..other };
        let Some(valley) = between.clone().min_by_key(|&c| (w[c], c)) else { continue };
        let side: u64 = if other < top { w[..=valley].iter().sum() } else { w[valley + 1..].iter().sum() };
        if w[valley] * 5 > w[other] * 4 || side * MIN_MODE_SHARE < total {
            continue;
        }
        if best.is_none_or(|(b, _)| w[other] > w[b]) {
            best = Some((other, valley));
        }
    }
    let (other, valley) = best?;
    Some(placed(other.min(top), valley, placement))
}

/// A fast mode without a valley (`mixture`), from a fit: the fast component's
/// mean stands for its peak and the class where the slow one starts to
/// outweigh it for the valley. None unless the components are apart by
/// [`mixture::MIN_ASHMAN_D`] and an octave, and the fast one holds at least
/// 1/`MIN_MODE_SHARE` of the weight.
fn shoulder(m: &mixture::Mixture, placement: Placement) -> Option<(u8, u8)> {
    if m.separation() < mixture::MIN_ASHMAN_D
        || m.slow.mean - m.fast.mean < MIN_SEPARATION
        || m.fast.share * (MIN_MODE_SHARE as f64) < 1.0
    {
        return None;
    }
    let valley = m.boundary()?;
    let peak = (m.fast.mean.round() as usize).min(valley);
    Some(placed(peak, valley, placement))
}

/// A fast mode in one pass over a node (after a drain, a new hot set): two
/// modes, or a shoulder the fit puts clearly apart (Ashman's D at least
/// [`PASS_MIN_ASHMAN_D`]) whose fast component is the minority. A new set's
/// means come down over two or three passes and stand a shoulder on the cold
/// mode a pass before a valley shows (a moving box run: D 2.2-2.6, 14-21% of
/// the node). One skewed mode with a sharp edge also fits apart, but as a
/// bulk and a narrow rest.
fn pass_modes(w: &[u64; CLASSES], placement: Placement) -> Option<(u8, u8)> {
    two_modes(w, placement).or_else(|| {
        let fit = mixture::fit(w, None)?;
        (fit.separation() >= PASS_MIN_ASHMAN_D && fit.fast.share < fit.slow.share)
            .then(|| shoulder(&fit, placement))?
    })
}

/// The fast mode's split and valley: Otsu's, or else two peaks'.
fn two_modes(w: &[u64; CLASSES], placement: Placement) -> Option<(u8, u8)> {
    otsu(w, placement).or_else(|| two_peaks(w, placement))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Page means of a 40 s warm box run (hot set 9× as hot, 12.5% of the
    /// node), classes 8-23, a third of the way in and near the end: the hot
    /// pages' means a shoulder on the cold mode, no valley.
    pub(crate) const RECORDED_SHOULDER: [u64; 16] =
        [88, 237, 501, 847, 1525, 2243, 3359, 4414, 8284, 14672, 15499, 5042, 467, 92, 0, 0];
    pub(crate) const RECORDED_SHOULDER_LATE: [u64; 16] =
        [9, 26, 65, 174, 538, 845, 1734, 2333, 3779, 8590, 21907, 22051, 3324, 125, 1, 0];

    /// A recorded histogram (classes 8-23) as `(class, weight)` parts.
    fn recorded(counts: [u64; 16]) -> Vec<(u8, u64)> {
        recorded_from(8, &counts)
    }

    /// Recorded weights of the classes from `from` on as `(class, weight)` parts.
    fn recorded_from(from: u8, counts: &[u64]) -> Vec<(u8, u64)> {
        (from..).zip(counts.iter().copied()).filter(|p| p.1 > 0).collect()
    }

    /// What a drained split asks: half an octave stricter, mean and figure.
    fn drained(split: Option<u8>) -> Threshold {
        let c = split.map(|c| c - 1);
        Threshold { class: c, fault_class: c, source: ThresholdSource::Drained }
    }

    fn histogram(parts: &[(u8, u64)]) -> ClassHistogram {
        let mut h = ClassHistogram::default();
        pass(&mut h, parts);
        h
    }

    /// One pass over the node: each page's mean updates once, then a refresh.
    fn pass(h: &mut ClassHistogram, parts: &[(u8, u64)]) {
        let n = parts.iter().map(|p| p.1).sum();
        h.flow.pass = n;
        for &(c, k) in parts {
            for _ in 0..k {
                h.add(c);
            }
        }
        h.refresh(n);
    }

    const HOT_AND_COLD: [(u8, u64); 2] = [(11, 800), (18, 7000)];
    const COLD: [(u8, u64); 1] = [(18, 7000)];

    /// A split (800 hot pages' means at class 11 among 7000 cold at 18),
    /// then the hot pages leave (promoted): drained. The histogram, and the split.
    fn drained_split() -> (ClassHistogram, Threshold) {
        let mut h = histogram(&HOT_AND_COLD);
        let split = h.threshold();
        assert_eq!(split.source, ThresholdSource::Split);
        pass(&mut h, &HOT_AND_COLD);
        assert_eq!(h.threshold(), split);
        pass(&mut h, &COLD);
        assert!(otsu(&h.weights, h.placement).is_some(), "the histogram still holds the hot pages' means");
        assert_eq!(h.threshold(), drained(split.class), "but none of them is fast now");
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
        h.refresh(parts.iter().map(|p| p.1).sum());
        assert_eq!(
            h.threshold(),
            Threshold { class: Some(15), fault_class: Some(15), source: ThresholdSource::Split }
        );
    }

    #[test]
    fn a_shoulder_without_a_valley_splits_where_the_fit_puts_it() {
        let parts = recorded(RECORDED_SHOULDER);
        let mut h = histogram(&parts);
        assert_eq!(two_modes(&h.weights, h.placement), None, "no valley to find");
        assert!(h.split_is_fitted());
        assert_eq!(
            h.threshold(),
            Threshold { class: Some(15), fault_class: Some(15), source: ThresholdSource::Split },
            "the fast component's mean (14.6) for its peak, the last class it outweighs the slow one in (15) for the valley"
        );
        // The hot pages' means drift down as their faults come: fitted afresh.
        pass(&mut h, &recorded(RECORDED_SHOULDER_LATE));
        assert!(h.split_is_fitted());
        // A valley, once one shows, takes over.
        let clear: Vec<(u8, u64)> = [(11, 30_000), (18, 200_000)].into();
        pass(&mut h, &clear);
        assert!(!h.split_is_fitted());
        assert_eq!(h.threshold().source, ThresholdSource::Split);
    }

    #[test]
    fn a_shoulder_whose_pages_are_of_one_kind_is_dropped_before_it_takes_any() {
        let parts = recorded(RECORDED_SHOULDER);
        let mut h = histogram(&parts);
        let fitted = h.threshold();
        h.judge_shoulder(false);
        assert_eq!(h.threshold().source, ThresholdSource::Quantile, "no split after all: the fastest tenth");
        assert!(!h.split_is_fitted());
        pass(&mut h, &parts);
        assert_eq!(h.threshold().source, ThresholdSource::Quantile, "not fitted again within two passes");
        pass(&mut h, &parts);
        assert_eq!(h.threshold(), fitted, "then fitted again");
        // Judged once: a shoulder found telling stands.
        h.judge_shoulder(true);
        h.judge_shoulder(false);
        assert_eq!(h.threshold(), fitted);
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
        let mode = [(8, 2000), (9, 1000), (14, 7000)];
        let mut h = histogram(&mode);
        let split = h.threshold();
        assert_eq!(split.source, ThresholdSource::Split);
        let filled = [mode.as_slice(), &[(9, 1800), (10, 3600), (11, 3600), (12, 3600), (13, 3600)]].concat();
        pass(&mut h, &filled);
        assert!(otsu(&h.weights, h.placement).is_none());
        assert_eq!(h.threshold(), split, "no valley now, but the fast mode is still there");
        // Its pages leave (promoted).
        pass(&mut h, &[(12, 3600), (13, 3600), (14, 7000)]);
        assert_eq!(h.threshold(), drained(split.class));
    }

    #[test]
    fn stragglers_keep_the_split_while_their_count_falls() {
        let mut h = histogram(&[(11, 1600), (18, 7000)]);
        let split = h.threshold();
        pass(&mut h, &[(11, 1600), (18, 7000)]);
        // Most of the hot set promoted; the rest is being promoted under the split.
        pass(&mut h, &[(11, 300), (18, 7000)]);
        assert_eq!(h.threshold(), split, "300 of 1600: under a quarter, but falling");
        // The count stops falling: that is the cold pages' luck, not stragglers.
        pass(&mut h, &[(11, 280), (18, 7000)]);
        assert_eq!(h.threshold(), drained(split.class));
    }

    #[test]
    fn once_as_many_as_the_fast_mode_held_qualified_a_falling_count_is_drained() {
        // The box's 64/16 MiB run at 61.8%: the whole hot set qualified, the
        // pass's fast means fell from 1584 to 482 of a 4029 peak (falling, so
        // "stragglers"), then the cold spread rose under the standing split
        // and 900 cold pages qualified in one pass.
        let parts = |fast| [(11, fast), (18, 7000)];
        let mut h = histogram(&parts(1600));
        let split = h.threshold();
        pass(&mut h, &parts(1600));
        for _ in 0..1200 {
            h.note_qualified();
        }
        pass(&mut h, &parts(300));
        assert_eq!(h.threshold(), split, "1200 of 1600 taken: stragglers may still be coming");
        for _ in 0..400 {
            h.note_qualified();
        }
        pass(&mut h, &parts(100));
        assert_eq!(
            h.threshold(),
            drained(split.class),
            "1600 taken and under a quarter: drained though falling"
        );
    }

    #[test]
    fn once_the_fast_mode_was_taken_the_cold_spread_under_the_split_is_drained() {
        let mut h = histogram(&HOT_AND_COLD);
        let split = h.threshold();
        pass(&mut h, &HOT_AND_COLD);
        for _ in 0..800 {
            h.note_qualified();
        }
        // The hot pages are gone; the cold ones, touched more often now,
        // spread under the split: one wide mode, its fast side as many
        // pages as the hot set was.
        let spread =
            [(9, 200), (10, 400), (11, 800), (12, 1200), (13, 1400), (14, 1300), (15, 1000), (16, 700)];
        pass(&mut h, &spread);
        assert!(h.flow.last.unwrap() * DRAINED_AT >= h.flow.peak, "the count did not fall under a quarter");
        assert_eq!(h.threshold(), drained(split.class));
        assert_eq!(h.flow.peak, 800, "a busier pass after the fast mode was taken is no new peak");
        // Before the fast mode was taken, the same pass is no drain.
        let mut h = histogram(&HOT_AND_COLD);
        pass(&mut h, &HOT_AND_COLD);
        for _ in 0..400 {
            h.note_qualified();
        }
        pass(&mut h, &spread);
        assert_eq!(h.threshold().source, ThresholdSource::Split);
    }

    #[test]
    fn a_new_split_after_a_drain_counts_what_it_takes_afresh() {
        let (mut h, _) = drained_split();
        for _ in 0..5000 {
            h.note_qualified();
        }
        // A new hot set, a mode of its own in its pass.
        let moved = [(10, 800), (18, 7000)];
        pass(&mut h, &moved);
        assert_eq!(h.threshold().source, ThresholdSource::Split);
        assert_eq!(h.taken, 0, "the old hot set's qualifications do not drain the new one");
    }

    #[test]
    fn after_a_drain_only_fast_pages_with_a_mode_of_their_own_split_again() {
        let (mut h, split) = drained_split();
        // The cold pages' own spread grows a fast shoulder with a valley
        // (DAMON's region figures did), above the split, under a quarter of
        // the fast mode the node had: no new hot set.
        pass(&mut h, &[(14, 150), (18, 7000)]);
        assert!(otsu(&h.weights, h.placement).is_some(), "the shoulder has a valley");
        assert_eq!(h.threshold(), drained(split.class));
        // Two modes whose faster one is the bulk of the pages (a few slow
        // ones beside the cold pages left): no new hot set either.
        pass(&mut h, &[(12, 7000), (17, 300)]);
        assert!(two_modes(&h.flow.last_classes, h.placement).is_some());
        assert_eq!(h.threshold(), drained(split.class));
        // A new hot set as big as the old one (it moved): a split again.
        pass(&mut h, &HOT_AND_COLD);
        assert_eq!(h.threshold().source, ThresholdSource::Split);
    }

    #[test]
    fn a_new_hot_set_need_not_come_back_under_the_split_the_last_one_left() {
        // The first hot set's last split was tight (its stragglers' means
        // at class 9), and it drained.
        let first = [(9, 800), (18, 7000)];
        let mut h = histogram(&first);
        pass(&mut h, &first);
        let split = h.threshold();
        pass(&mut h, &COLD);
        pass(&mut h, &COLD);
        assert_eq!(h.threshold(), drained(split.class));
        // The hot set moved: its pages' means, coming down, stand a mode of
        // their own above the old split, none of them under it (a moving box
        // run: 13984 pages at 90-250 ms beside seven times as many cold ones,
        // the old split at 127 ms).
        pass(&mut h, &[(12, 300), (13, 500), (18, 7000)]);
        let now = h.threshold();
        assert_eq!(now.source, ThresholdSource::Split);
        assert!(now.class > split.class, "{now:?}: at the new mode, not the old split");
        // And it stands while the new set is there.
        pass(&mut h, &[(12, 500), (13, 300), (18, 7000)]);
        assert_eq!(h.threshold().source, ThresholdSource::Split);
    }

    #[test]
    fn a_new_hot_set_that_is_a_shoulder_of_the_pass_brings_the_split_back() {
        // Passes over node 1 of a moving box run (classes 11-24, 131072
        // pages): the first hot set drained 2 s after the move, then its
        // successor's means came down as a shoulder two passes before they
        // stood a valley of their own.
        let first = [(10, 13911), (18, 60000), (19, 57161)];
        let mut h = histogram(&first);
        pass(&mut h, &first);
        let split = h.threshold();
        assert_eq!(split.source, ThresholdSource::Split);
        let after_move = recorded_from(
            9,
            &[2, 1, 16, 76, 87, 421, 2042, 7625, 20450, 36440, 34350, 20936, 7212, 1296, 114, 4],
        );
        pass(&mut h, &after_move);
        assert_eq!(h.threshold(), drained(split.class));
        // A pass later the fit puts a third of the node in its fast
        // component, twice the old fast mode and more: the bulk, not a set.
        let early =
            recorded_from(12, &[20, 186, 1188, 5582, 15513, 23092, 32350, 30612, 16510, 5096, 863, 56, 4]);
        pass(&mut h, &early);
        assert_eq!(h.threshold(), drained(split.class));
        // Then a shoulder (Ashman's D 2.6) with 13394 pages at or under
        // 181 ms, no valley yet: the split comes back at the new set.
        let shoulder =
            recorded_from(11, &[2, 30, 479, 3283, 9600, 13246, 21428, 31195, 30728, 15670, 4572, 781, 57, 1]);
        pass(&mut h, &shoulder);
        assert!(two_modes(&h.flow.last_classes, h.placement).is_none(), "no valley in the pass");
        let now = h.threshold();
        assert_eq!(now.source, ThresholdSource::Split);
        assert_eq!(now.class, Some(15), "{now:?}: at the new set's shoulder");
    }

    #[test]
    fn after_a_drain_the_cold_spread_rising_under_the_split_does_not_bring_it_back() {
        let (mut h, split) = drained_split();
        // The cold pages' spread widens toward the split, one mode without a
        // valley, with more pages under the split than the hot set had.
        let spread: Vec<(u8, u64)> = (9..=17).map(|c| (c, 1000 * u64::from(c - 8))).collect();
        pass(&mut h, &spread);
        assert!(otsu(&h.weights, h.placement).is_none(), "no valley");
        assert!(h.flow.last.unwrap() * DRAINED_AT >= h.flow.peak, "fast pages are back");
        assert_eq!(h.threshold(), drained(split.class));
    }

    #[test]
    fn one_wide_mode_has_no_valley_to_split_at() {
        // Cold pages alone, once the hot ones were promoted (a recording's shape).
        let h = histogram(&[(15, 20), (16, 400), (17, 3000), (18, 9000), (19, 11000), (20, 4000), (21, 500)]);
        assert_ne!(h.threshold().source, ThresholdSource::Split);
    }

    #[test]
    fn a_small_fast_mode_that_otsu_cuts_past_is_found_by_its_peak() {
        // One pass over node 1 in a moving hot set's run, three passes after
        // the move: the new hot set's means at 13-16, cold pages seven times
        // as many at 18-25. Otsu's cut falls inside the cold mode (without
        // the 114 pages at 24-25 it would not: its cut is that fickle here).
        let pass: Vec<(u8, u64)> = (12..)
            .zip([1, 380, 3200, 7884, 6278, 5519, 15436, 33077, 32409, 19161, 6306, 1298, 109, 5])
            .collect();
        let mut w = [0; CLASSES];
        for &(c, n) in &pass {
            w[usize::from(c)] = n;
        }
        assert_eq!(otsu(&w, Placement::HalfwayToValley), None);
        assert_eq!(two_modes(&w, Placement::HalfwayToValley), Some((16, 17)), "peak 15, valley 17");
        assert_eq!(two_modes(&w, Placement::Valley), Some((17, 17)));
        // The fast mode as the larger one: its peak is the top.
        let mut flipped = [0; CLASSES];
        for c in 3..=28 {
            flipped[c] = w[31 - c];
        }
        assert_eq!(two_peaks(&flipped, Placement::Valley), Some((14, 14)), "top 12, slower peak 16");
        // Without a valley, or with too little weight beyond it, none.
        let mut shoulder = w;
        (shoulder[16], shoulder[17]) = (7500, 7600);
        assert_eq!(two_modes(&shoulder, Placement::Valley), None);
        let mut tiny = [0; CLASSES];
        tiny[8] = 40;
        tiny[18] = 10_000;
        assert_eq!(two_modes(&tiny, Placement::Valley), None);
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
