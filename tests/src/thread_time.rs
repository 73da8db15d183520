//! CPU time of the calling thread, for benchmarks that attribute cost to the
//! producer or the consumer side (the daemon's CPU budget uses the same clock).

pub use hotpage::thread_time::thread_cpu_time;
