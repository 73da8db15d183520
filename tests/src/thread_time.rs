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
        let (user, system) = hotpage::sys::thread_time::stat_cpu_times(&task.path().join("stat"))?;
        return Some(user + system);
    }
    None
}
