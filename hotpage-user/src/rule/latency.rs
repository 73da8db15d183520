//! Scan-to-fault latencies on a log scale: the unit the latency rule works
//! in, and the histogram `stats`, Prometheus and `replay` show.

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

/// Latency classes per doubling: class `c` holds latencies around
/// `2^(c / CLASSES_PER_OCTAVE)` ms.
pub const CLASSES_PER_OCTAVE: u32 = 2;
/// Classes 0..=63 cover 0 ms to 2^31 ms (the kernel's stamp spans 2^21).
pub const CLASSES: usize = 64;

/// The class of a latency: `floor(2 * log2(ms + 1))`, 0 for 0 ms.
pub fn class_of(ms: u32) -> u8 {
    let x = u64::from(ms) + 1;
    let octave = 63 - x.leading_zeros();
    // Above or below the octave's √2 point.
    let half = u32::from(u128::from(x) * u128::from(x) >= 1u128 << (2 * octave + 1));
    (octave * CLASSES_PER_OCTAVE + half).min(CLASSES as u32 - 1) as u8
}

/// The smallest latency (ms) of a class.
pub fn class_floor_ms(class: u8) -> f64 {
    2f64.powf(f64::from(class) / f64::from(CLASSES_PER_OCTAVE)) - 1.0
}

/// The geometric middle (ms) of a class. Every latency the rule scores
/// takes one (a page's running mean), so the classes' are computed once.
pub fn class_mid_ms(class: u8) -> f64 {
    static MIDS: LazyLock<[f64; CLASSES]> = LazyLock::new(|| std::array::from_fn(|c| mid_ms(c as f64)));
    MIDS.get(usize::from(class)).copied().unwrap_or_else(|| mid_ms(f64::from(class)))
}

fn mid_ms(class: f64) -> f64 {
    2f64.powf((class + 0.5) / f64::from(CLASSES_PER_OCTAVE)) - 1.0
}

/// Prometheus bucket bounds (ms): powers of two up to the kernel stamp's span.
pub const BUCKET_BOUNDS_MS: [u32; 22] = {
    let mut b = [0u32; 22];
    let mut i = 0;
    while i < 22 {
        b[i] = 1 << i;
        i += 1;
    }
    b
};

/// Counts of latencies per power-of-two bucket (`le` = 1, 2, 4, … 2^21 ms, +Inf).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyHistogram {
    /// Non-cumulative: `buckets[i]` counts latencies in (2^(i-1), 2^i] ms,
    /// bucket 0 those ≤ 1 ms; the last one everything above 2^21 ms.
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum_ms: u64,
}

impl LatencyHistogram {
    pub fn new() -> Self {
        Self { buckets: vec![0; BUCKET_BOUNDS_MS.len() + 1], count: 0, sum_ms: 0 }
    }

    pub fn bucket_of(ms: u32) -> usize {
        if ms <= 1 { 0 } else { (32 - (ms - 1).leading_zeros()) as usize }.min(BUCKET_BOUNDS_MS.len())
    }

    pub fn add(&mut self, ms: u32) {
        if self.buckets.is_empty() {
            *self = Self::new();
        }
        self.buckets[Self::bucket_of(ms)] += 1;
        self.count += 1;
        self.sum_ms += u64::from(ms);
    }

    pub fn merge(&mut self, other: &Self) {
        if self.buckets.is_empty() {
            *self = Self::new();
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.sum_ms += other.sum_ms;
    }

    /// The upper bound (ms) of the bucket holding the `q` quantile; None if empty.
    pub fn quantile_bound(&self, q: f64) -> Option<u32> {
        quantile_bucket(&self.buckets, self.count, q)
            .map(|i| BUCKET_BOUNDS_MS.get(i).copied().unwrap_or(u32::MAX))
    }
}

/// The index of the bucket holding the `q` (0..=1) quantile of `count`
/// observations counted non-cumulatively in `buckets`; None without any.
pub fn quantile_bucket(buckets: &[u64], count: u64, q: f64) -> Option<usize> {
    if count == 0 {
        return None;
    }
    let want = (q * count as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    buckets.iter().position(|n| {
        seen += n;
        seen >= want
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_midpoints_table_is_the_formula() {
        for c in 0..=u8::MAX {
            assert_eq!(class_mid_ms(c).to_bits(), mid_ms(f64::from(c)).to_bits(), "class {c}");
        }
        assert!((class_mid_ms(12) - (2f64.powf(6.25) - 1.0)).abs() < 1e-9);
    }

    #[test]
    fn classes_are_half_octaves() {
        let got: Vec<u8> =
            [0, 1, 2, 3, 5, 7, 63, 255, 2_097_151, u32::MAX].iter().map(|&ms| class_of(ms)).collect();
        // 0 ms → 1: 0; 1 → 2: 2; 2 → 3: 3 (3² ≥ 2·2²); 3 → 4: 4; 5 → 6: 5; 7 → 8: 6; 63 → 64: 12;
        // 255 → 256: 16; 2^21 - 1 → 2^21: 42; the top clamps to 63.
        assert_eq!(got, [0, 2, 3, 4, 5, 6, 12, 16, 42, 63]);
        assert!(class_floor_ms(12) <= 63.0 && class_floor_ms(13) > 63.0);
    }

    #[test]
    fn histogram_buckets_and_quantiles() {
        let mut h = LatencyHistogram::new();
        for ms in [0, 1, 2, 3, 4, 100, 300, 5000] {
            h.add(ms);
        }
        assert_eq!(&h.buckets[..4], &[2, 1, 2, 0]);
        assert_eq!(h.buckets[7], 1, "100 ms in (64, 128]");
        assert_eq!((h.count, h.sum_ms), (8, 5410));
        assert_eq!(h.quantile_bound(0.5), Some(4));
        assert_eq!(h.quantile_bound(1.0), Some(8192));
        assert_eq!(LatencyHistogram::new().quantile_bound(0.5), None);
        assert_eq!(LatencyHistogram::bucket_of(u32::MAX), BUCKET_BOUNDS_MS.len());
    }
}
