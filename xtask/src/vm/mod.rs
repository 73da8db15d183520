//! `cargo xtask vm`: the emulated CXL box.
//!
//! The guest boots Debian's 6.12 cloud kernel with a busybox initramfs that
//! xtask writes itself: hotpage's binaries and the box tests, their shared
//! libraries, busybox, and a script `/box/run.sh` that the init runs. Chosen
//! over virtme-ng (which shares the host's root over virtio-fs) because it
//! boots in about 3 s instead of 8-9 s, needs no Python tool, no Rust virtiofsd
//! build and no host udev, and fails in fewer ways: see docs/box.md.

pub mod initramfs;
pub mod kernel;
pub mod qemu;

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::cargo::{build_bins, target_dir};
use initramfs::Initramfs;
pub use qemu::BoxSpec;

/// What to put in the box and run there.
pub struct Payload {
    /// (host path, guest path) of executables; their libraries come along.
    pub binaries: Vec<(PathBuf, String)>,
    /// (host path, guest path) of plain files (mode 0644).
    pub files: Vec<(PathBuf, String)>,
    /// Shell script run by the init (busybox sh). Its exit status is the box's.
    pub script: String,
}

/// Builds the initramfs, boots the box and returns what the guest reported.
pub fn run(name: &str, payload: &Payload, spec: &BoxSpec) -> Result<qemu::BoxOutcome> {
    let kernel = kernel::ensure()?;
    let init = build_bins("hotpage-tests", &["hotpage-box-init"], false)?.remove(0);

    let mut fs = Initramfs::new();
    for d in
        ["/dev", "/proc", "/sys", "/tmp", "/run", "/results", "/root", "/box", "/bin", "/sbin", "/usr/bin"]
    {
        fs.dir(d);
    }
    // The kernel opens /dev/console for init before devtmpfs is mounted.
    fs.char_dev("/dev/console", 5, 1);
    fs.binary(&init, "/init")?;
    let busybox = std::fs::read("/bin/busybox")
        .map_err(|e| anyhow::anyhow!("reading /bin/busybox ({e}): apt-get install busybox-static"))?;
    fs.file("/bin/busybox", &busybox, 0o755);
    fs.symlink("/bin/sh", "busybox");
    for (host, guest) in &payload.binaries {
        fs.binary(host, guest)?;
    }
    for (host, guest) in &payload.files {
        let data = std::fs::read(host).map_err(|e| anyhow::anyhow!("reading {}: {e}", host.display()))?;
        fs.file(guest, &data, 0o644);
    }
    fs.file("/box/run.sh", payload.script.as_bytes(), 0o755);
    let image = fs.finish();
    eprintln!(
        "xtask: booting the box ({} vCPUs, node0 {} MiB, node1 {} MiB, initramfs {} MiB)",
        spec.cpus,
        spec.node0_mib,
        spec.node1_mib,
        image.len() >> 20
    );
    let work = target_dir().join("vm").join(name);
    let outcome = qemu::boot(&kernel, image, spec, &work)?;
    if !outcome.results.is_empty() {
        let saved = qemu::save_results(&outcome.results, &work.join("results"))?;
        for p in saved {
            eprintln!("xtask: guest result {}", p.display());
        }
    }
    eprintln!("xtask: box finished in {:.1} s with status {}", outcome.elapsed.as_secs_f64(), outcome.rc);
    Ok(outcome)
}

/// Quotes a word for busybox sh.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+".contains(c)) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Fails unless the box reported success.
pub fn expect_success(outcome: &qemu::BoxOutcome, what: &str) -> Result<()> {
    if outcome.rc != 0 {
        bail!("{what} failed inside the box (status {})", outcome.rc);
    }
    Ok(())
}
