//! Helpers shared by hotpage's end-to-end tests: workloads that place memory
//! on a node, and checks against the kernel's own view (pagemap, vmstat).

pub mod bench;
pub mod box_results;
pub mod daemon;
pub mod host_tier;
pub mod memory;
pub mod thread_time;
pub mod workload;

/// Set by `cargo xtask test`, which runs as root: a root-only test that would
/// skip fails instead.
pub const ROOT_TESTS_REQUIRED: &str = "HOTPAGE_ROOT_TESTS";

/// Whether a root-only test should run: yes as root; as another user it is
/// skipped with a printed reason (so `cargo test` stays green), unless
/// `cargo xtask test` asked for every root-only test to run.
pub fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os(ROOT_TESTS_REQUIRED).is_none(),
        "{test} needs root (BPF, perf events, pagemap pfns): run `cargo xtask test` as root"
    );
    eprintln!(
        "skipped {test}: it needs root (BPF, perf events, pagemap pfns); `sudo cargo xtask test` runs it"
    );
    false
}

/// Fails the test with a clear line unless it runs as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (BPF, perf events, pagemap pfns): run `cargo xtask test` as root"
    );
}

/// For binaries: exits with a one-line error unless running as root.
pub fn require_root_or_exit() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("error: this needs root (BPF programs and perf events): run it with sudo");
        std::process::exit(1);
    }
}
