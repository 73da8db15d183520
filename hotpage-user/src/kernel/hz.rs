//! The running kernel's `HZ`, which turns jiffies into the milliseconds the
//! NUMA scan stamp holds. BTF does not carry it: it comes from the kernel's
//! config when the distribution ships one (`/boot/config-<release>`), else
//! from `/proc/timer_list`, which prints jiffies beside the monotonic clock:
//! one reading when the uptime says enough, else two readings half a second
//! apart.

use std::path::Path;

use thiserror::Error;

use crate::sys::sysfs::read_text;

/// The values x86-64 kernels can be built with (`kernel/Kconfig.hz`).
const CANDIDATES: [u32; 4] = [100, 250, 300, 1000];

/// Jiffies start 300 s before wrapping 32 bits (`INITIAL_JIFFIES`).
const INITIAL_JIFFIES_OFFSET_S: f64 = 300.0;
/// Between two readings: at HZ 100 that is 50 jiffies, so one jiffy of
/// rounding stays far below the 20% between 250 and 300.
const SECOND_READING_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum HzError {
    #[error(
        "cannot tell the kernel's HZ: no CONFIG_HZ in {config} and {detail}; scan-to-fault latencies need it"
    )]
    Unknown { config: String, detail: String },
}

/// `HZ` of the kernel under `root`.
pub fn kernel_hz(root: &Path, release: &str) -> Result<u32, HzError> {
    let config = root.join(format!("boot/config-{release}"));
    if let Some(hz) = read_text(&config).ok().as_deref().and_then(hz_from_config) {
        return Ok(hz);
    }
    let timer_list = root.join("proc/timer_list");
    let detail = match read_text(&timer_list) {
        Err(e) => format!("{e}"),
        Ok(first) => match hz_from_timer_list(&first) {
            Some(hz) => return Ok(hz),
            // Near 300 s of uptime one reading fits every HZ: measure the rate.
            None => {
                std::thread::sleep(SECOND_READING_AFTER);
                match read_text(&timer_list).ok().and_then(|second| hz_from_two_readings(&first, &second)) {
                    Some(hz) => return Ok(hz),
                    None => "/proc/timer_list fits no HZ".into(),
                }
            }
        },
    };
    Err(HzError::Unknown { config: config.display().to_string(), detail })
}

/// (monotonic ns, jiffies) of one `/proc/timer_list`.
fn timer_list_clocks(text: &str) -> Option<(u64, u64)> {
    let now_ns =
        text.lines().find_map(|l| l.strip_prefix("now at ")?.strip_suffix(" nsecs")?.trim().parse().ok())?;
    let jiffies = text.lines().find_map(|l| l.trim().strip_prefix("jiffies:")?.trim().parse().ok())?;
    Some((now_ns, jiffies))
}

/// The candidate within `tolerance` (relative) of `estimate`.
fn nearest_candidate(estimate: f64, tolerance: f64) -> Option<u32> {
    CANDIDATES.into_iter().find(|&hz| (estimate - f64::from(hz)).abs() < f64::from(hz) * tolerance)
}

/// From two readings some time apart: jiffies per second.
fn hz_from_two_readings(first: &str, second: &str) -> Option<u32> {
    let (t0, j0) = timer_list_clocks(first)?;
    let (t1, j1) = timer_list_clocks(second)?;
    let seconds = t1.checked_sub(t0)? as f64 / 1e9;
    if seconds < 0.1 {
        return None;
    }
    nearest_candidate(j1.wrapping_sub(j0) as f64 / seconds, 0.08)
}

fn hz_from_config(text: &str) -> Option<u32> {
    text.lines().find_map(|l| l.strip_prefix("CONFIG_HZ=")).and_then(|v| v.trim().parse().ok())
}

/// From one `/proc/timer_list`: `jiffies = INITIAL_JIFFIES + HZ * uptime`
/// with `INITIAL_JIFFIES = 2^32 - 300 * HZ`, so
/// `jiffies - 2^32 = HZ * (uptime - 300 s)`. Close to 300 s of uptime every
/// HZ fits, so none is claimed there.
fn hz_from_timer_list(text: &str) -> Option<u32> {
    let (now_ns, jiffies) = timer_list_clocks(text)?;
    let since_offset = now_ns as f64 / 1e9 - INITIAL_JIFFIES_OFFSET_S;
    if since_offset.abs() < 30.0 {
        return None;
    }
    nearest_candidate((jiffies as f64 - 4_294_967_296.0) / since_offset, 0.02)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_wins() {
        assert_eq!(hz_from_config("# x\nCONFIG_HZ_250=y\nCONFIG_HZ=250\n"), Some(250));
        assert_eq!(hz_from_config("CONFIG_HZ_250=y\n"), None);
    }

    #[test]
    fn timer_list_before_and_after_the_jiffies_wrap() {
        // This host (HZ 250) at 9863.8 s of uptime.
        let host = "Timer List Version: v0.10\nnow at 9863811166874 nsecs\n\ncpu: 0\n  .idle_jiffies   : 4297358180\njiffies: 4297358184\n";
        assert_eq!(hz_from_timer_list(host), Some(250));
        // The box (HZ 250) 12 s after boot: jiffies still below 2^32.
        let fresh = format!("now at 12000000000 nsecs\njiffies: {}\n", (1u64 << 32) - 250 * 288);
        assert_eq!(hz_from_timer_list(&fresh), Some(250));
        let hz1000 = format!("now at 400000000000 nsecs\njiffies: {}\n", (1u64 << 32) + 100_000);
        assert_eq!(hz_from_timer_list(&hz1000), Some(1000));
    }

    #[test]
    fn near_the_offset_or_off_every_candidate_nothing_is_claimed() {
        let near = format!("now at 305000000000 nsecs\njiffies: {}\n", (1u64 << 32) + 1250);
        assert_eq!(hz_from_timer_list(&near), None);
        let odd = format!("now at 400000000000 nsecs\njiffies: {}\n", (1u64 << 32) + 50_000);
        assert_eq!(hz_from_timer_list(&odd), None);
    }

    #[test]
    fn near_the_offset_two_readings_measure_the_rate() {
        // The box 298 s after boot (HZ 250), then half a second later.
        let at = |ns: u64, j: u64| format!("now at {ns} nsecs\njiffies: {j}\n");
        let (j0, j1) = ((1u64 << 32) - 500, (1u64 << 32) - 500 + 125);
        assert_eq!(hz_from_timer_list(&at(298_000_000_000, j0)), None);
        assert_eq!(hz_from_two_readings(&at(298_000_000_000, j0), &at(298_500_000_000, j1)), Some(250));
        // One jiffy of rounding either way still fits; HZ 300 is not mistaken for 250.
        assert_eq!(hz_from_two_readings(&at(0, 100), &at(500_000_000, 226)), Some(250));
        assert_eq!(hz_from_two_readings(&at(0, 100), &at(500_000_000, 249)), Some(300));
        assert_eq!(hz_from_two_readings(&at(0, 100), &at(500_000_000, 150)), Some(100));
        // Too close together, or a rate that fits nothing.
        assert_eq!(hz_from_two_readings(&at(0, 100), &at(50_000_000, 112)), None);
        assert_eq!(hz_from_two_readings(&at(0, 100), &at(500_000_000, 200)), None);
    }

    #[test]
    fn without_either_source_the_error_names_both() {
        let err = kernel_hz(Path::new("/nonexistent"), "6.12.0").unwrap_err().to_string();
        assert!(err.contains("/nonexistent/boot/config-6.12.0"), "{err}");
        assert!(err.contains("timer_list"), "{err}");
    }
}
