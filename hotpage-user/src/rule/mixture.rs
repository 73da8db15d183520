//! A fast mode without a valley: two Gaussian components fitted to the
//! pages' mean classes by expectation-maximisation.
//!
//! Where the hot pages are only a few times as hot as the rest, their means
//! can form a shoulder on the cold mode's fast side rather than a peak of
//! their own (two warm box runs, hot set 9× as hot: hot means at classes
//! 12-16 beside the cold peak at 17-18), and a valley test finds nothing
//! for the whole run. A mixture fit finds the shoulder as a component of its
//! own. One mode that is merely skewed also fits as two components, less
//! apart for their widths: the fit is kept only when the components are
//! apart by Ashman's D (the distance of their means over their pooled
//! spread) of at least [`MIN_ASHMAN_D`]. What a page must show to qualify
//! under such a split is still the evidence's (`evidence`): where the fast
//! component's pages fault no sooner than the rest, nothing qualifies.

use super::latency::CLASSES;

/// How far apart the components must be, in pooled spreads (√2·|μ₁−μ₂| /
/// √(σ₁²+σ₂²)). Pages of one rate fit at 0.5-1.3 once their means hold two
/// faults or more, and at 1.5 with one fault each (a first pass); the
/// recorded shoulders fit at 1.8-1.9. Clean separation is D > 2.
pub const MIN_ASHMAN_D: f64 = 1.6;
/// EM rounds at most; a fit usually settles well before.
const ROUNDS: usize = 100;
/// A component's variance in classes² never falls below this: the classes
/// are half-octave bins, a mode one class wide is as narrow as they show.
const MIN_VARIANCE: f64 = 0.25;

/// One Gaussian component over mean classes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Component {
    /// Its share of the weight.
    pub share: f64,
    pub mean: f64,
    pub variance: f64,
}

impl Component {
    /// Its share times its density at class `c`.
    fn weighted_density(&self, c: f64) -> f64 {
        let d = c - self.mean;
        self.share * (-d * d / (2.0 * self.variance)).exp()
            / (2.0 * std::f64::consts::PI * self.variance).sqrt()
    }
}

/// Two components, the faster first.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mixture {
    pub fast: Component,
    pub slow: Component,
    log_likelihood: f64,
}

impl Mixture {
    /// Ashman's D: how many pooled spreads apart the components' means are.
    pub fn separation(&self) -> f64 {
        std::f64::consts::SQRT_2 * (self.slow.mean - self.fast.mean)
            / (self.fast.variance + self.slow.variance).sqrt()
    }

    /// The last class the fast component holds more of than the slow one,
    /// from its mean on: where a valley would be. None if the slow component
    /// outweighs it even at its mean.
    pub fn boundary(&self) -> Option<usize> {
        let from = self.fast.mean.round().max(0.0) as usize;
        let to = self.slow.mean.round().max(0.0) as usize;
        (from..=to.min(CLASSES - 1))
            .take_while(|&c| self.fast.weighted_density(c as f64) >= self.slow.weighted_density(c as f64))
            .last()
    }
}

/// Moments of the weight `w` with each class's responsibility `r`.
fn component(w: &[u64; CLASSES], r: &[f64; CLASSES], total: f64) -> Option<Component> {
    let weight: f64 = (0..CLASSES).map(|c| r[c] * w[c] as f64).sum();
    if weight <= 0.0 {
        return None;
    }
    let mean = (0..CLASSES).map(|c| r[c] * w[c] as f64 * c as f64).sum::<f64>() / weight;
    let spread = (0..CLASSES).map(|c| r[c] * w[c] as f64 * (c as f64 - mean).powi(2)).sum::<f64>() / weight;
    Some(Component { share: weight / total, mean, variance: spread.max(MIN_VARIANCE) })
}

/// EM from a start that puts the classes up to `cut` in the fast component.
fn fit_from(w: &[u64; CLASSES], cut: usize) -> Option<Mixture> {
    let total: f64 = w.iter().map(|&n| n as f64).sum();
    let mut r = [0f64; CLASSES];
    r[..=cut].fill(1.0);
    let fast = component(w, &r, total)?;
    let slow = component(w, &r.map(|x| 1.0 - x), total)?;
    em(w, fast, slow)
}

/// EM from two components, until the likelihood settles. Only classes
/// with weight count, in either step.
fn em(w: &[u64; CLASSES], mut fast: Component, mut slow: Component) -> Option<Mixture> {
    let total: f64 = w.iter().map(|&n| n as f64).sum();
    let held: Vec<usize> = (0..CLASSES).filter(|&c| w[c] > 0).collect();
    let mut r = [0f64; CLASSES];
    let mut log_likelihood = f64::NEG_INFINITY;
    for _ in 0..ROUNDS {
        let mut now = 0.0;
        for &c in &held {
            let (f, s) = (fast.weighted_density(c as f64), slow.weighted_density(c as f64));
            // Far out in both tails: the nearer mean's.
            r[c] = if f + s > 0.0 {
                f / (f + s)
            } else {
                f64::from(u8::from((c as f64 - fast.mean).abs() < (c as f64 - slow.mean).abs()))
            };
            now += w[c] as f64 * (f + s).max(f64::MIN_POSITIVE).ln();
        }
        (fast, slow) = (component(w, &r, total)?, component(w, &r.map(|x| 1.0 - x), total)?);
        let settled = now - log_likelihood < 1e-9 * now.abs();
        log_likelihood = now;
        if settled {
            break;
        }
    }
    if fast.mean > slow.mean {
        (fast, slow) = (slow, fast);
    }
    Some(Mixture { fast, slow, log_likelihood })
}

/// The best two-component fit of a class histogram, from starts that put
/// its fastest 5, 15, 30 and 50% in the fast component, and from `last`,
/// a fit of the histogram as it was (EM finds a local optimum; the
/// likeliest of these is kept). None without weight on two classes or more.
pub fn fit(w: &[u64; CLASSES], last: Option<&Mixture>) -> Option<Mixture> {
    let total: u64 = w.iter().sum();
    let cuts: std::collections::BTreeSet<usize> = [0.05, 0.15, 0.3, 0.5]
        .iter()
        .filter_map(|&q| {
            let want = (total as f64 * q).ceil() as u64;
            let mut seen = 0;
            (0..CLASSES).find(|&c| {
                seen += w[c];
                seen >= want.max(1)
            })
        })
        .collect();
    cuts.into_iter()
        .filter_map(|cut| fit_from(w, cut))
        .chain(last.and_then(|m| refit(w, m)))
        .max_by(|a, b| a.log_likelihood.total_cmp(&b.log_likelihood))
}

/// The fit of a histogram that has changed a little since `last` was
/// fitted to it: EM from `last`, a few rounds where [`fit`] takes hundreds.
pub fn refit(w: &[u64; CLASSES], last: &Mixture) -> Option<Mixture> {
    em(w, last.fast, last.slow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(from: usize, counts: &[u64]) -> [u64; CLASSES] {
        let mut w = [0; CLASSES];
        w[from..from + counts.len()].copy_from_slice(counts);
        w
    }

    use super::super::threshold::tests::{
        RECORDED_SHOULDER as SHOULDER, RECORDED_SHOULDER_LATE as SHOULDER_LATE,
    };

    #[test]
    fn a_shoulder_fits_as_a_component_of_its_own() {
        for counts in [SHOULDER, SHOULDER_LATE] {
            let m = fit(&weights(8, &counts), None).unwrap();
            assert!(m.separation() >= MIN_ASHMAN_D, "{m:?}: D {}", m.separation());
            assert!((13.5..16.0).contains(&m.fast.mean), "{m:?}");
            assert!((17.0..18.5).contains(&m.slow.mean), "{m:?}");
            assert!((0.1..0.35).contains(&m.fast.share), "{m:?}");
            let b = m.boundary().unwrap();
            assert!((15..=16).contains(&b), "boundary {b}");
        }
    }

    /// Mean classes of pages that all fault at one rate, each mean over `k`
    /// exponential latencies (mean 400 ms), from a fixed generator.
    fn one_rate(k: usize) -> [u64; CLASSES] {
        let mut w = [0; CLASSES];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..50_000 {
            let mean = (0..k)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let u = ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                    -400.0 * u.ln()
                })
                .sum::<f64>()
                / k as f64;
            w[super::super::latency::class_of(mean as u32) as usize] += 1;
        }
        w
    }

    #[test]
    fn one_rate_skewed_as_it_is_does_not_separate() {
        for k in [1, 2, 4, 8] {
            let m = fit(&one_rate(k), None).unwrap();
            assert!(m.separation() < MIN_ASHMAN_D, "k {k}: {m:?}, D {}", m.separation());
        }
    }

    #[test]
    fn two_clean_modes_fit_where_they_are() {
        let m = fit(&weights(10, &[300, 500, 300, 0, 0, 0, 0, 2000, 3000, 2000]), None).unwrap();
        assert!((m.fast.mean - 11.0).abs() < 0.1 && (m.slow.mean - 18.0).abs() < 0.1, "{m:?}");
        assert!((m.fast.share - 1100.0 / 8100.0).abs() < 0.01);
        assert!(m.separation() > 5.0);
        assert_eq!(m.boundary(), Some(14));
    }

    #[test]
    fn a_refit_from_the_last_fit_lands_where_a_fit_does() {
        let early = fit(&weights(8, &SHOULDER), None).unwrap();
        let late = weights(8, &SHOULDER_LATE);
        let (full, warm) = (fit(&late, None).unwrap(), refit(&late, &early).unwrap());
        for (a, b) in [(full.fast, warm.fast), (full.slow, warm.slow)] {
            assert!((a.mean - b.mean).abs() < 0.05 && (a.share - b.share).abs() < 0.01, "{full:?} {warm:?}");
        }
        assert_eq!(fit(&late, Some(&early)).unwrap().boundary(), full.boundary());
    }

    #[test]
    fn one_class_has_nothing_to_fit() {
        assert_eq!(fit(&weights(12, &[1000]), None), None);
        assert_eq!(fit(&[0; CLASSES], None), None);
    }
}
