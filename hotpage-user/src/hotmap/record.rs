//! pghot's per-page hotness records, bit for bit (RFC v6, `pghot-default.c`
//! and `pghot-precise.c`), as pure functions on the record's integer value.
//!
//! | mode | bits | time | freq max |
//! |---|---|---|---|
//! | default (u8) | 0–1 freq, 2–6 time bucket, 7 READY | `(now >> 7) & 31` | 3 |
//! | precise (u32) | 0–9 nid, 10–12 freq, 13–26 time, 31 READY | `now & 0x3fff` | 7 |
//!
//! `now` counts one tick per millisecond (the kernel's jiffies at HZ=1000), so
//! latencies are milliseconds as in the kernel's `jiffies_to_msecs()`.

/// Which record format a hot map uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordMode {
    /// 1 byte per page; promotion target is the map's `target_nid`.
    Default,
    /// 4 bytes per page; also keeps the accessing node.
    Precise,
}

/// The knobs an update reads (`sysctl_pghot_freq_window`, `pghot_freq_threshold`,
/// `pghot_target_nid`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpdateParams {
    pub freq_window_ms: u32,
    pub freq_threshold: u32,
    pub target_nid: u32,
}

/// A record's fields, as `pghot_get_record()` hands them out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordFields {
    /// Promotion target: the recorded node (precise) or `target_nid` (default).
    pub nid: u32,
    pub freq: u32,
    /// The stored time: a 5-bit bucket (default) or 14 bits of ticks (precise).
    pub time: u32,
    pub ready: bool,
}

/// `NUMA_NO_NODE` as the kernel passes it.
pub const NUMA_NO_NODE: i32 = -1;

pub mod default_fmt {
    pub const FREQ_MASK: u32 = 0b11;
    pub const FREQ_MAX: u32 = 3;
    pub const TIME_SHIFT: u32 = 2;
    pub const TIME_MASK: u32 = 0b1_1111;
    /// Bucketed time: ticks >> 7 (128-tick buckets).
    pub const BUCKET_SHIFT: u32 = 7;
    /// `PGHOT_TIME_BUCKETS_MASK`: the bucket bits of a tick count (0xf80).
    pub const BUCKETS_MASK: u64 = (TIME_MASK as u64) << BUCKET_SHIFT;
    pub const READY: u32 = 1 << 7;
    /// The largest window the 5-bit bucket can tell apart: 3968 ms.
    pub const WINDOW_MAX_MS: u32 = BUCKETS_MASK as u32;
}

pub mod precise_fmt {
    pub const NID_MASK: u32 = (1 << 10) - 1;
    pub const NID_MAX: u32 = NID_MASK;
    pub const FREQ_SHIFT: u32 = 10;
    pub const FREQ_MASK: u32 = 0b111;
    pub const FREQ_MAX: u32 = 7;
    pub const TIME_SHIFT: u32 = 13;
    pub const TIME_MASK: u32 = (1 << 14) - 1;
    pub const READY: u32 = 1 << 31;
    /// `PGHOT_FREQ_WINDOW_MAX` = `PGHOT_TIME_MAX`: 16383 ms.
    pub const WINDOW_MAX_MS: u32 = TIME_MASK;
}

/// `PGHOT_FREQ_WINDOW_MIN`, both modes.
pub const WINDOW_MIN_MS: u32 = 1000;

impl RecordMode {
    /// Bytes per page record.
    pub const fn record_bytes(self) -> usize {
        match self {
            Self::Default => 1,
            Self::Precise => 4,
        }
    }

    pub const fn freq_max(self) -> u32 {
        match self {
            Self::Default => default_fmt::FREQ_MAX,
            Self::Precise => precise_fmt::FREQ_MAX,
        }
    }

    pub const fn window_max_ms(self) -> u32 {
        match self {
            Self::Default => default_fmt::WINDOW_MAX_MS,
            Self::Precise => precise_fmt::WINDOW_MAX_MS,
        }
    }

    /// `PGHOT_FREQ_WINDOW_DEFAULT`: 3 s default, 5 s precise.
    pub const fn default_window_ms(self) -> u32 {
        match self {
            Self::Default => 3000,
            Self::Precise => 5000,
        }
    }

    pub const fn ready_bit(self) -> u32 {
        match self {
            Self::Default => default_fmt::READY,
            Self::Precise => precise_fmt::READY,
        }
    }

    /// `pghot_update_record()` on one record value: returns the new value.
    /// `nid` is the accessing node (precise mode stores it).
    pub fn update(self, old: u32, nid: i32, now: u64, p: &UpdateParams) -> u32 {
        match self {
            Self::Default => {
                use default_fmt::*;
                let old_freq = old & FREQ_MASK;
                let old_bucket = (old >> TIME_SHIFT) & TIME_MASK;
                // pghot_access_latency(): ((now & 0xf80) - (old << 7)) & 0xf80.
                let latency =
                    ((now & BUCKETS_MASK).wrapping_sub(u64::from(old_bucket) << BUCKET_SHIFT)) & BUCKETS_MASK;
                let freq = next_freq(old_freq, latency, p.freq_window_ms, FREQ_MAX);
                let bucket = ((now >> BUCKET_SHIFT) as u32) & TIME_MASK;
                let mut new =
                    (old & !(FREQ_MASK | (TIME_MASK << TIME_SHIFT))) | freq | (bucket << TIME_SHIFT);
                if freq >= p.freq_threshold {
                    new |= READY;
                }
                new
            }
            Self::Precise => {
                use precise_fmt::*;
                let old_freq = (old >> FREQ_SHIFT) & FREQ_MASK;
                let old_time = (old >> TIME_SHIFT) & TIME_MASK;
                let time = (now as u32) & TIME_MASK;
                let latency = u64::from(time.wrapping_sub(old_time) & TIME_MASK);
                let freq = next_freq(old_freq, latency, p.freq_window_ms, FREQ_MAX);
                let nid = if nid == NUMA_NO_NODE { p.target_nid } else { nid as u32 };
                let mut new = old & !(NID_MASK | (FREQ_MASK << FREQ_SHIFT) | (TIME_MASK << TIME_SHIFT));
                new |= (nid & NID_MASK) | (freq << FREQ_SHIFT) | (time << TIME_SHIFT);
                if freq >= p.freq_threshold {
                    new |= READY;
                }
                new
            }
        }
    }

    /// Decodes a record (`pghot_get_record()` without the swap).
    pub fn fields(self, rec: u32, target_nid: u32) -> RecordFields {
        match self {
            Self::Default => RecordFields {
                nid: target_nid,
                freq: rec & default_fmt::FREQ_MASK,
                time: (rec >> default_fmt::TIME_SHIFT) & default_fmt::TIME_MASK,
                ready: rec & default_fmt::READY != 0,
            },
            Self::Precise => RecordFields {
                nid: rec & precise_fmt::NID_MASK,
                freq: (rec >> precise_fmt::FREQ_SHIFT) & precise_fmt::FREQ_MASK,
                time: (rec >> precise_fmt::TIME_SHIFT) & precise_fmt::TIME_MASK,
                ready: rec & precise_fmt::READY != 0,
            },
        }
    }
}

/// New window (strictly longer than the window) → 1; else +1 up to the maximum.
fn next_freq(old_freq: u32, latency_ms: u64, window_ms: u32, max: u32) -> u32 {
    if latency_ms > u64::from(window_ms) {
        1
    } else if old_freq < max {
        old_freq + 1
    } else {
        old_freq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RecordMode::*;

    const P: UpdateParams = UpdateParams { freq_window_ms: 3000, freq_threshold: 2, target_nid: 0 };

    fn f(mode: RecordMode, rec: u32) -> RecordFields {
        mode.fields(rec, 0)
    }

    #[test]
    fn a_fresh_record_gets_freq_1_and_the_bucket() {
        let r = Default.update(0, 0, 5 * 128 + 3, &P);
        assert_eq!(f(Default, r), RecordFields { nid: 0, freq: 1, time: 5, ready: false });
        assert_eq!(r, 1 | (5 << 2));
    }

    #[test]
    fn default_frequency_saturates_at_3() {
        let mut r = 0;
        for t in 0..10u64 {
            r = Default.update(r, 0, 1000 + t, &P);
        }
        assert_eq!(f(Default, r).freq, 3);
        assert!(f(Default, r).ready);
    }

    #[test]
    fn precise_frequency_saturates_at_7() {
        let p = UpdateParams { freq_window_ms: 5000, ..P };
        let mut r = 0;
        for t in 0..20u64 {
            r = Precise.update(r, 1, 100 + t, &p);
        }
        assert_eq!(f(Precise, r).freq, 7);
        assert_eq!(f(Precise, r).nid, 1);
    }

    #[test]
    fn threshold_exactly_reached_sets_ready() {
        let r1 = Default.update(0, 0, 1000, &P);
        assert!(!f(Default, r1).ready, "freq 1 < threshold 2");
        let r2 = Default.update(r1, 0, 1001, &P);
        assert_eq!(f(Default, r2).freq, 2);
        assert!(f(Default, r2).ready, "freq 2 == threshold 2");
        let p1 = UpdateParams { freq_threshold: 1, ..P };
        assert!(f(Default, Default.update(0, 0, 5, &p1)).ready, "threshold 1: the first access is ready");
    }

    #[test]
    fn default_window_boundary_is_strict_in_buckets() {
        // Window 3072 ms = 24 buckets exactly: a latency of 24 buckets stays in the window.
        let p = UpdateParams { freq_window_ms: 3072, ..P };
        let r = Default.update(0, 0, 0, &p); // bucket 0, freq 1
        let at = Default.update(r, 0, 24 * 128, &p);
        assert_eq!(f(Default, at).freq, 2, "latency == window: same window");
        let past = Default.update(r, 0, 25 * 128, &p);
        assert_eq!(f(Default, past).freq, 1, "latency > window: new window");
        // Within a bucket the latency does not grow: 24 buckets + 127 ticks is still 3072 ms.
        let same_bucket = Default.update(r, 0, 24 * 128 + 127, &p);
        assert_eq!(f(Default, same_bucket).freq, 2);
    }

    #[test]
    fn precise_window_boundary_is_strict_in_ticks() {
        let p = UpdateParams { freq_window_ms: 5000, ..P };
        let r = Precise.update(0, 0, 100, &p);
        assert_eq!(f(Precise, Precise.update(r, 0, 5100, &p)).freq, 2, "exactly the window");
        assert_eq!(f(Precise, Precise.update(r, 0, 5101, &p)).freq, 1, "one past");
    }

    #[test]
    fn default_time_wraps_at_4096_ticks() {
        // Bucket 31 at 3968, next access after the 4096-tick wrap at bucket 1.
        let r = Default.update(0, 0, 31 * 128, &P);
        assert_eq!(f(Default, r).time, 31);
        let wrapped = Default.update(r, 0, 4096 + 128, &P);
        // Latency = (128 - 3968) & 0xf80 = 256 ms: the same window despite the wrap.
        assert_eq!(f(Default, wrapped).time, 1);
        assert_eq!(f(Default, wrapped).freq, 2);
        // And a gap of exactly one wrap looks like no time passed (a kernel artefact, kept).
        let aliased = Default.update(r, 0, 31 * 128 + 4096, &P);
        assert_eq!(f(Default, aliased).freq, 2);
    }

    #[test]
    fn precise_time_wraps_at_16384_ticks() {
        let p = UpdateParams { freq_window_ms: 5000, ..P };
        let r = Precise.update(0, 0, 16_000, &p);
        let wrapped = Precise.update(r, 0, 16_384 + 100, &p);
        assert_eq!(f(Precise, wrapped).time, 100);
        assert_eq!(f(Precise, wrapped).freq, 2, "latency 484 ms across the wrap");
    }

    #[test]
    fn ready_is_kept_after_a_window_reset() {
        let r = Default.update(Default.update(0, 0, 0, &P), 0, 1, &P);
        assert!(f(Default, r).ready);
        let later = Default.update(r, 0, 3500 + 128, &P);
        assert_eq!(f(Default, later).freq, 1, "new window");
        assert!(f(Default, later).ready, "READY is sticky");
        let p = UpdateParams { freq_window_ms: 5000, ..P };
        let rp = Precise.update(Precise.update(0, 0, 0, &p), 0, 1, &p);
        let laterp = Precise.update(rp, 0, 9000, &p);
        assert_eq!(f(Precise, laterp).freq, 1);
        assert!(f(Precise, laterp).ready);
    }

    #[test]
    fn precise_stores_the_accessing_node_or_the_target() {
        let p = UpdateParams { freq_window_ms: 5000, freq_threshold: 2, target_nid: 3 };
        assert_eq!(f(Precise, Precise.update(0, 2, 10, &p)).nid, 2);
        assert_eq!(f(Precise, Precise.update(0, NUMA_NO_NODE, 10, &p)).nid, 3);
        // Default mode reports the target whatever accessed it.
        assert_eq!(Default.fields(Default.update(0, 2, 10, &p), 3).nid, 3);
    }

    #[test]
    fn precise_layout_bits() {
        let p = UpdateParams { freq_window_ms: 5000, freq_threshold: 1, target_nid: 0 };
        let r = Precise.update(0, 5, 0x1234, &p);
        assert_eq!(r, 5 | (1 << 10) | (0x1234 << 13) | (1 << 31));
        // Bits 27-30 stay as they were.
        let r2 = Precise.update(0x7800_0000, 5, 0x1234, &p);
        assert_eq!(r2 & 0x7800_0000, 0x7800_0000);
    }

    #[test]
    fn mode_constants() {
        assert_eq!(Default.window_max_ms(), 3968);
        assert_eq!(Precise.window_max_ms(), 16383);
        assert_eq!(Default.record_bytes(), 1);
        assert_eq!(Precise.record_bytes(), 4);
    }
}
