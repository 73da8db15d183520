//! `/init` of the emulated CXL box's initramfs (built by `cargo xtask vm`).
//!
//! Mounts the kernel filesystems, runs `/box/run.sh` with busybox's shell,
//! prints `VMTEST_RC=<rc>` on the console, copies every file the script left
//! in `/results` to the second serial port (hex, framed), and ends the VM
//! through QEMU's isa-debug-exit device so the host sees the script's status:
//! QEMU exits with `(rc << 1) | 1`. A kernel panic ends QEMU with 0 instead.

use std::{
    ffi::CString,
    fs,
    io::Write,
    os::unix::fs::symlink,
    process::{Command, ExitStatus},
};

const DEBUG_EXIT_PORT: u16 = 0xf4;

fn mount(src: &str, target: &str, fstype: &str) {
    let _ = fs::create_dir_all(target);
    let c = |s: &str| CString::new(s).unwrap_or_default();
    let (src_c, target_c, fstype_c) = (c(src), c(target), c(fstype));
    // SAFETY: all pointers are valid NUL-terminated strings; data is NULL.
    let rc =
        unsafe { libc::mount(src_c.as_ptr(), target_c.as_ptr(), fstype_c.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        eprintln!("box-init: mount {fstype} on {target}: {}", std::io::Error::last_os_error());
    }
}

fn install_busybox() {
    let Ok(out) = Command::new("/bin/busybox").arg("--list").output() else {
        return;
    };
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let link = format!("/bin/{applet}");
        if fs::symlink_metadata(&link).is_err() {
            let _ = symlink("/bin/busybox", &link);
        }
    }
}

fn exit_code(status: std::io::Result<ExitStatus>) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
        Err(e) => {
            eprintln!("box-init: cannot run /box/run.sh: {e}");
            127
        }
    }
}

/// Sends every regular file left in /results out of the box.
fn send_results() {
    let Ok(entries) = fs::read_dir("/results") else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        if path.is_file()
            && let Err(e) = hotpage_tests::box_results::send(&path, name)
        {
            eprintln!("box-init: sending {name}: {e}");
        }
    }
}

fn power_off(rc: i32) -> ! {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    // SAFETY: ioperm grants this process the one debug-exit port; the `out`
    // instruction writes one byte to it, which QEMU turns into its exit.
    unsafe {
        if libc::ioperm(u64::from(DEBUG_EXIT_PORT), 1, 1) == 0 {
            let value = (rc.clamp(0, 127)) as u8;
            core::arch::asm!("out dx, al", in("dx") DEBUG_EXIT_PORT, in("al") value);
        }
        // Without the device (a plain QEMU), power off instead.
        libc::reboot(libc::RB_POWER_OFF);
    }
    loop {
        std::thread::park();
    }
}

/// Holds one software page-fault event (counting, no sampling) for the box's
/// whole life. Creating the first such event, or closing the last one, flips
/// a static key and live-patches `do_user_addr_fault` (text_poke_bp, int3).
/// Under multi-threaded TCG a vCPU that is faulting at that moment can run
/// the stale int3 and oops ("Oops: int3" in do_user_addr_fault, seen in the
/// e2e benchmark). With the key held on from boot, the sample source's events
/// never patch code. The same for BPF run-time statistics (`bpf_stats_enabled_key`).
fn hold_static_keys()
-> (Option<hotpage::sources::samples::perf_event::PerfEventFd>, Option<std::os::fd::OwnedFd>) {
    let mut attr = hotpage::sources::samples::perf_event::PerfEventAttr::new(
        hotpage::sources::samples::perf_event::perf_type::SOFTWARE,
        hotpage::sources::samples::perf_event::sw_event::PAGE_FAULTS,
    );
    attr.flags = 0;
    // pid -1 needs a cpu; CPU 0 is always online in the box.
    let event = match hotpage::sources::samples::perf_event::PerfEventFd::open(&attr, -1, 0) {
        Ok(fd) => Some(fd),
        Err(e) => {
            eprintln!("box-init: could not hold the page-fault perf event open: {e}");
            None
        }
    };
    let stats = match hotpage::sources::enable_run_time_stats() {
        Ok(fd) => Some(fd),
        Err(e) => {
            eprintln!("box-init: BPF run-time statistics: {e}");
            None
        }
    };
    (event, stats)
}

fn main() {
    mount("proc", "/proc", "proc");
    mount("sysfs", "/sys", "sysfs");
    mount("devtmpfs", "/dev", "devtmpfs");
    mount("debugfs", "/sys/kernel/debug", "debugfs");
    mount("tracefs", "/sys/kernel/tracing", "tracefs");
    mount("bpf", "/sys/fs/bpf", "bpf");
    mount("tmpfs", "/tmp", "tmpfs");
    mount("tmpfs", "/run", "tmpfs");
    mount("tmpfs", "/results", "tmpfs");
    install_busybox();
    let _keys = hold_static_keys();

    let status = Command::new("/bin/sh")
        .arg("/box/run.sh")
        .env("PATH", "/bin:/sbin:/usr/bin:/usr/sbin")
        .env("HOME", "/root")
        .env("TMPDIR", "/tmp")
        .current_dir("/tmp")
        .status();
    let rc = exit_code(status);
    send_results();
    println!("VMTEST_RC={rc}");
    let _ = std::io::stdout().flush();
    power_off(rc);
}
