//! The Debian packages the build, the tests and the box need, pinned to a
//! release series. Debian replaces patch releases in place, so a pin names the
//! series (`1:19.1.*`) and apt picks the patch that the archive carries.
//!
//! Nothing the user has is removed: apt runs with `--no-remove`. QEMU's
//! packages come from one source and must share a version, so when a QEMU
//! package of another series is installed already (`qemu-utils` from
//! backports, say), `qemu-system-x86` follows that version instead of the
//! pin (the box needs TCG and HMAT, which every QEMU since 5.0 has).

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

/// Packages built from QEMU's source, which apt keeps at one version.
const QEMU_FAMILY: &[&str] = &["qemu-utils", "qemu-system-common", "qemu-system-data", "qemu-block-extra"];

/// The version `pkg` should be installed at: its pin, or for QEMU the exact
/// version of a QEMU package of another series already installed.
fn wanted(pkg: &str, glob: &str, installed: &impl Fn(&str) -> Option<String>) -> (String, Option<String>) {
    if pkg == "qemu-system-x86"
        && let Some((other, v)) =
            QEMU_FAMILY.iter().find_map(|o| installed(o).filter(|v| !matches_glob(v, glob)).map(|v| (*o, v)))
    {
        return (v.clone(), Some(format!("{other} {v} is installed")));
    }
    (glob.to_owned(), None)
}

/// `pkg=version` for each package that is missing or off its pin.
fn missing(installed: &impl Fn(&str) -> Option<String>) -> Vec<(String, Option<String>)> {
    PACKAGES
        .iter()
        .filter_map(|(p, glob, _)| {
            let (version, why) = wanted(p, glob, installed);
            let ok = installed(p).is_some_and(|v| v == version || matches_glob(&v, &version));
            (!ok).then(|| (format!("{p}={version}"), why))
        })
        .collect()
}

/// Installs whatever is missing (as root), or says what to install.
pub fn ensure() -> Result<()> {
    let wanted = missing(&installed_version);
    for (pkg, why) in &wanted {
        if let Some(why) = why {
            eprintln!("xtask: {why}: installing {pkg} to match it (the pin's series would replace it)");
        }
    }
    let missing: Vec<String> = wanted.into_iter().map(|(p, _)| p).collect();
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
    // --no-remove: apt stops rather than remove anything the user has.
    let installed = Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends", "--no-remove"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?;
    if !installed.success() {
        bail!(
            "apt-get could not install {} without removing anything (see its message above): install versions \
             that fit what you have (e.g. qemu-system-x86 of your qemu-utils' version), then run again",
            missing.join(" ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_follows_an_installed_qemu_of_another_series_and_nothing_is_removed() {
        // A fresh bookworm with qemu-utils from backports.
        let backports = |p: &str| (p == "qemu-utils").then(|| "1:8.2.4+ds-1~bpo12+1".to_owned());
        let m = missing(&backports);
        let qemu = m.iter().find(|(p, _)| p.starts_with("qemu-system-x86=")).unwrap();
        assert_eq!(qemu.0, "qemu-system-x86=1:8.2.4+ds-1~bpo12+1");
        assert!(qemu.1.as_deref().unwrap().contains("qemu-utils 1:8.2.4"), "{qemu:?}");
        // Without another QEMU, the pin.
        let none = |_: &str| None;
        assert!(missing(&none).iter().any(|(p, why)| p == "qemu-system-x86=1:7.2+dfsg-*" && why.is_none()));
        // Installed and matching: nothing to do for it.
        let both = |p: &str| {
            matches!(p, "qemu-utils" | "qemu-system-x86").then(|| "1:8.2.4+ds-1~bpo12+1".to_owned())
        };
        assert!(!missing(&both).iter().any(|(p, _)| p.starts_with("qemu-system-x86")));
        let pinned = |p: &str| (p == "qemu-system-x86").then(|| "1:7.2+dfsg-7+deb12u18".to_owned());
        assert!(!missing(&pinned).iter().any(|(p, _)| p.starts_with("qemu-system-x86")));
    }

    #[test]
    fn version_globs() {
        assert!(matches_glob("1:19.1.7-3~deb12u1", "1:19.1.*"));
        assert!(!matches_glob("1:18.1.8-1", "1:19.1.*"));
        assert!(matches_glob("1:7.2+dfsg-7+deb12u18+b3", "1:7.2+dfsg-*"));
        assert!(matches_glob("2.40-2", "2.40-*"));
    }
}
