//! Kernel settings hotpage changes come back: after SIGTERM or SIGHUP, and
//! after a `kill -9` at the next start; a value an operator changed since is
//! left alone.

use super::common::*;

/// Starts `hotpage trace --set-tiering` and waits until it has changed the settings.
fn start_trace_with_settings() -> Child {
    let mut child = Command::new(hotpage_bin())
        .args(["trace", "--set-tiering", "--summary-only"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start hotpage");
    let start = Instant::now();
    loop {
        let (mode, rate) = settings_now();
        if rate == "0" && mode.parse::<u64>().unwrap() & 2 != 0 {
            return child;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("hotpage trace exited early: {st}");
        }
        assert!(start.elapsed() < Duration::from_secs(60), "hotpage never changed the settings");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn a_signal_restores_the_settings(signal: i32, name: &str) {
    in_the_box();
    let _originals = distinct_originals();
    let before = settings_now();
    let child = start_trace_with_settings();
    assert_eq!(settings_now(), ("3".to_owned(), "0".to_owned()), "normal mode kept, tiering added");
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, signal) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "hotpage exits cleanly on {name}: {}", out.status);
    assert_eq!(settings_now(), before);
    assert!(!Path::new("/run/hotpage/kernel-settings.json").exists());
}

#[test]
fn sigterm_restores_the_settings() {
    a_signal_restores_the_settings(libc::SIGTERM, "SIGTERM");
}

/// A closed terminal sends SIGHUP, whose default action would kill hotpage
/// with the settings changed.
#[test]
fn sighup_restores_the_settings() {
    a_signal_restores_the_settings(libc::SIGHUP, "SIGHUP");
}

/// A short `hotpage trace` after a crash; its stderr (what it restored).
fn start_again() -> String {
    let out = Command::new(hotpage_bin())
        .args(["trace", "--summary-only", "--duration", "0.5"])
        .output()
        .expect("run hotpage again");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

#[test]
fn kill_9_then_a_new_start_restores_the_settings() {
    in_the_box();
    let _originals = distinct_originals();
    let before = settings_now();
    let mut child = start_trace_with_settings();
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    let _ = child.wait();
    assert_eq!(settings_now(), ("3".to_owned(), "0".to_owned()), "a crash leaves the settings changed");
    assert!(Path::new("/run/hotpage/kernel-settings.json").exists(), "the state file survives the crash");

    let stderr = start_again();
    assert!(stderr.contains("restored proc/sys/kernel/numa_balancing to 1"), "{stderr}");
    assert_eq!(settings_now(), before);
    assert!(!Path::new("/run/hotpage/kernel-settings.json").exists());
}

#[test]
fn a_value_an_operator_changed_after_a_crash_is_left_alone() {
    in_the_box();
    let _originals = distinct_originals();
    let (mode_before, _) = settings_now();
    let mut child = start_trace_with_settings();
    child.kill().unwrap();
    let _ = child.wait();
    // The operator sets their own promotion rate limit before hotpage starts again.
    let rate_limit = root().join(PROMOTE_RATE_LIMIT);
    std::fs::write(&rate_limit, "123\n").unwrap();

    let stderr = start_again();
    assert!(
        stderr.contains("left proc/sys/kernel/numa_balancing_promote_rate_limit_MBps at 123"),
        "{stderr}"
    );
    assert_eq!(settings_now(), (mode_before, "123".to_owned()), "mode restored, the operator's rate kept");
    assert!(!Path::new("/run/hotpage/kernel-settings.json").exists());
    // Back to what this test's own guard applied, so it restores the box's original.
    std::fs::write(&rate_limit, "4321\n").unwrap();
}
