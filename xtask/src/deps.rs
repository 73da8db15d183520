//! The Debian packages the build, the tests and the box need, pinned to a
//! release series. Debian replaces patch releases in place, so a pin names the
//! series (`1:19.1.*`) and apt picks the patch that the archive carries.

use std::process::Command;

use anyhow::{Result, bail};

use crate::cargo::run;

/// (package, pinned version glob, what it is for).
pub const PACKAGES: &[(&str, &str, &str)] = &[
    ("clang-19", "1:19.1.*", "compiles the eBPF programs (build.rs)"),
    ("llvm-19", "1:19.1.*", "llvm-strip for the eBPF objects"),
    ("libbpf-dev", "1:1.1.*", "bpf_helpers.h and friends for the eBPF programs"),
    ("qemu-system-x86", "1:7.2+dfsg-*", "the emulated CXL box (TCG)"),
    ("busybox-static", "1:1.35.*", "the box's shell and tools"),
    ("binutils", "2.40-*", "strip, to keep the box's initramfs small"),
];

fn installed_version(pkg: &str) -> Option<String> {
    let out = Command::new("dpkg-query").args(["-W", "-f=${Status}|${Version}", pkg]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, version) = text.split_once('|')?;
    status.ends_with(" installed").then(|| version.to_owned())
}

/// Does `version` match a glob that only uses a trailing or inner `*`?
fn matches_glob(version: &str, glob: &str) -> bool {
    match glob.split_once('*') {
        Some((prefix, rest)) => {
            version.starts_with(prefix) && version.ends_with(rest.trim_start_matches('*'))
        }
        None => version == glob,
    }
}

/// Installs whatever is missing (as root), or says what to install.
pub fn ensure() -> Result<()> {
    let missing: Vec<String> = PACKAGES
        .iter()
        .filter(|(p, glob, _)| !installed_version(p).is_some_and(|v| matches_glob(&v, glob)))
        .map(|(p, glob, _)| format!("{p}={glob}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !crate::is_root() {
        bail!(
            "missing Debian packages: run `sudo apt-get install {}` (or `sudo cargo xtask deps`)",
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_globs() {
        assert!(matches_glob("1:19.1.7-3~deb12u1", "1:19.1.*"));
        assert!(!matches_glob("1:18.1.8-1", "1:19.1.*"));
        assert!(matches_glob("1:7.2+dfsg-7+deb12u18+b3", "1:7.2+dfsg-*"));
        assert!(matches_glob("2.40-2", "2.40-*"));
    }
}
