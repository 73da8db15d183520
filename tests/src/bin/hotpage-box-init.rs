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

/// Empties every vCPU's TLB every `hotpage_box.tlb_turnover_us` (kernel
/// command line; 0: never). x86 Linux clears a PTE's accessed bit without a
/// TLB flush (`ptep_test_and_clear_young`), trusting the TLB to turn over
/// soon, and the CPU sets the bit again only on a TLB miss. A hardware TLB
/// holds a few MiB of 4 KiB pages, so a workload touching more memory misses
/// all the time; QEMU's software TLB grows to millions of entries and is
/// emptied only on a CR3 write, so a single busy workload never misses and
/// DAMON saw its hottest pages idle for minutes. A SCHED_FIFO thread of
/// this process per vCPU wakes every period: switching to its address space
/// and back writes CR3, which empties QEMU's TLB for that vCPU.
fn turn_over_tlbs() {
    let Ok(cmdline) = fs::read_to_string("/proc/cmdline") else { return };
    let us: u64 = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("hotpage_box.tlb_turnover_us="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if us == 0 {
        return;
    }
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    for cpu in 0..cpus {
        let spawned = std::thread::Builder::new().name(format!("tlb-turnover-{cpu}")).spawn(move || {
            // SAFETY: the set is a plain bitmask initialised by CPU_ZERO;
            // both calls act on this thread only (pid 0).
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_ZERO(&mut set);
                libc::CPU_SET(cpu, &mut set);
                if libc::sched_setaffinity(0, size_of_val(&set), &set) != 0 {
                    eprintln!(
                        "box-init: pinning the TLB turnover to CPU {cpu}: {}",
                        std::io::Error::last_os_error()
                    );
                    return;
                }
                // Real-time: it preempts the workload when it wakes, not at the next tick.
                let param = libc::sched_param { sched_priority: 1 };
                if libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) != 0 {
                    eprintln!(
                        "box-init: the TLB turnover on CPU {cpu} runs without SCHED_FIFO: {}",
                        std::io::Error::last_os_error()
                    );
                }
            }
            loop {
                std::thread::sleep(std::time::Duration::from_micros(us));
            }
        });
        if let Err(e) = spawned {
            eprintln!("box-init: TLB turnover thread: {e}");
        }
    }
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
    turn_over_tlbs();

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
    // The status line must leave the UART before QEMU exits: write() only
    // queues it, and a busy vCPU (the TLB turnover) once lost it.
    // SAFETY: tcdrain on stdout has no memory preconditions.
    unsafe { libc::tcdrain(1) };
    power_off(rc);
}
