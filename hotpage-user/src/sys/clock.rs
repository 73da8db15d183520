//! The clock events carry: CLOCK_MONOTONIC (what `bpf_ktime_get_ns()` reads),
//! and the hot map's tick, one per millisecond.

/// CLOCK_MONOTONIC in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Nanoseconds to hot-map ticks (ms), as jiffies at HZ=1000.
pub const fn ns_to_tick(ns: u64) -> u64 {
    ns / 1_000_000
}

/// The current hot-map tick.
pub fn now_tick() -> u64 {
    ns_to_tick(monotonic_ns())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_milliseconds_of_the_monotonic_clock() {
        let a = now_tick();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = now_tick();
        assert!(b >= a + 20 && b < a + 2000, "{a} {b}");
        assert_eq!(ns_to_tick(1_999_999), 1);
    }
}
