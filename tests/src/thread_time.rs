//! CPU time of the calling thread, for benchmarks that attribute cost to the
//! producer or the consumer side (the daemon's CPU budget uses the same clock).

pub use hotpage::sys::thread_time::thread_cpu_time;

/// CPU time (user + system) of this process's thread named `name`, from
/// `/proc/self/task/*/stat`, at the kernel's USER_HZ resolution.
pub fn named_thread_cpu_time(name: &str) -> Option<std::time::Duration> {
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        return Some(std::time::Duration::from_millis(ticks * 1000 / hz));
    }
    None
}
