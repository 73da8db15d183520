//! CPU time of the calling thread (CLOCK_THREAD_CPUTIME_ID), for benchmarks
//! that attribute cost to the producer or the consumer side; and of any task,
//! from its `stat` file.

use std::{path::Path, time::Duration};

pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out-pointer; the clock id is a constant the kernel knows.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// (user, system) CPU time from a `/proc/PID/stat` or `/proc/PID/task/TID/stat`
/// file (fields 14 and 15), at the kernel's USER_HZ resolution.
pub fn stat_cpu_times(path: &Path) -> Option<(Duration, Duration)> {
    let stat = std::fs::read_to_string(path).ok()?;
    // After the parenthesised command (which may hold spaces and ')'): state
    // is field 3, so utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i)?.parse::<u64>().ok();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let time = |t: u64| Duration::from_nanos(t.saturating_mul(1_000_000_000) / hz);
    Some((time(ticks(11)?), time(ticks(12)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_user_and_system_time_past_a_command_with_spaces_and_parens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stat");
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
        std::fs::write(&path, "42 (a (b) c) S 1 42 42 0 -1 4194304 10 0 0 0 250 100 0 0 20 0 1 0\n").unwrap();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        let (user, system) = stat_cpu_times(&path).unwrap();
        assert_eq!(user, Duration::from_nanos(250 * 1_000_000_000 / hz));
        assert_eq!(system, Duration::from_nanos(100 * 1_000_000_000 / hz));
        assert!(stat_cpu_times(&dir.path().join("none")).is_none());
        std::fs::write(&path, "42 (x) S 1").unwrap();
        assert!(stat_cpu_times(&path).is_none());
    }
}
