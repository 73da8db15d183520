//! The box's guest kernel: Debian's 6.12 cloud kernel, taken from its package
//! with `apt-get download` + `dpkg-deb -x` (nothing is installed on the host)
//! and cached under `target/vm/kernel/`, so later runs work offline.
//!
//! It has BTF, NUMA balancing, HMAT, DAMON and fentry, and `numa_migrate_check`.
//! The version is pinned; Debian's security archive keeps several 6.12 builds
//! but drops old ones, so when the pin is gone the newest 6.12 cloud build is
//! used instead, with a warning that names both.

use std::{fs, path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};

use crate::cargo::target_dir;

/// The kernel the box is tested with (the one `shared/fixtures/cxl-box-6.12` was captured on).
pub const PINNED: &str = "6.12.117+deb12";
const SERIES: &str = "6.12.";
const FLAVOUR: &str = "-cloud-amd64-unsigned";

fn package(version: &str) -> String {
    format!("linux-image-{version}{FLAVOUR}")
}

fn cache_dir() -> PathBuf {
    target_dir().join("vm/kernel")
}

/// The cached kernel image, fetching it first if needed.
pub fn ensure() -> Result<PathBuf> {
    if let Some(p) = cached()? {
        return Ok(p);
    }
    fetch()
}

/// The kernel selected by an earlier fetch, if it is still in the cache.
fn cached() -> Result<Option<PathBuf>> {
    let selected = cache_dir().join("selected");
    let Ok(version) = fs::read_to_string(&selected) else { return Ok(None) };
    let image = cache_dir().join(version.trim()).join("vmlinuz");
    Ok(image.is_file().then_some(image))
}

/// Downloads and unpacks the kernel package. Idempotent.
pub fn fetch() -> Result<PathBuf> {
    if let Some(p) = cached()? {
        eprintln!("xtask: guest kernel cached at {}", p.display());
        return Ok(p);
    }
    let version = choose_version()?;
    let dir = cache_dir().join(&version);
    let work = cache_dir().join("download");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    eprintln!("xtask: downloading {}", package(&version));
    let status = Command::new("apt-get")
        .args(["download", "-q", &package(&version)])
        .current_dir(&work)
        .status()
        .context("running apt-get download")?;
    if !status.success() {
        bail!("apt-get download {} failed", package(&version));
    }
    let deb = fs::read_dir(&work)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    let unpacked = work.join("root");
    let status = Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked).status()?;
    if !status.success() {
        bail!("dpkg-deb -x {} failed", deb.display());
    }
    let boot = unpacked.join("boot");
    let image = fs::read_dir(&boot)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("vmlinuz-")))
        .context("no vmlinuz in the kernel package")?;
    fs::create_dir_all(&dir)?;
    fs::copy(&image, dir.join("vmlinuz"))?;
    if let Some(config) = fs::read_dir(&boot)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("config-")))
    {
        fs::copy(config, dir.join("config"))?;
    }
    fs::write(cache_dir().join("selected"), &version)?;
    let _ = fs::remove_dir_all(&work);
    let image = dir.join("vmlinuz");
    eprintln!("xtask: guest kernel {version} at {}", image.display());
    Ok(image)
}

/// The pinned version if apt has it, else the newest 6.12 cloud build.
fn choose_version() -> Result<String> {
    let mut available = available_versions()?;
    if available.is_empty() && crate::is_root() {
        eprintln!("xtask: apt knows no {SERIES}x cloud kernel; running apt-get update");
        let _ = Command::new("apt-get").args(["update", "-q"]).status();
        available = available_versions()?;
    }
    if available.iter().any(|v| v == PINNED) {
        return Ok(PINNED.to_owned());
    }
    match available.last() {
        Some(newest) => {
            eprintln!(
                "xtask: warning: pinned guest kernel {PINNED} is no longer in the archive; using {newest} \
                 (update PINNED in xtask/src/vm/kernel.rs)"
            );
            Ok(newest.clone())
        }
        None => bail!(
            "no Debian {SERIES}x cloud kernel package found: add bookworm-security to the apt sources and run \
             `apt-get update`"
        ),
    }
}

/// Versions like `6.12.117+deb12` that apt can download, oldest first.
fn available_versions() -> Result<Vec<String>> {
    let out = Command::new("apt-cache")
        .args([
            "search",
            "--names-only",
            &format!("^linux-image-{}[0-9]+\\+deb12{FLAVOUR}$", SERIES.replace('.', "\\.")),
        ])
        .output()
        .context("running apt-cache")?;
    let mut versions: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|name| name.strip_prefix("linux-image-")?.strip_suffix(FLAVOUR).map(str::to_owned))
        .collect();
    versions.sort_by_key(|v| patch_level(v));
    versions.dedup();
    Ok(versions)
}

fn patch_level(version: &str) -> u32 {
    version.strip_prefix(SERIES).and_then(|r| r.split('+').next()).and_then(|p| p.parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_by_patch_level() {
        assert_eq!(patch_level("6.12.117+deb12"), 117);
        assert!(patch_level("6.12.99+deb12") < patch_level("6.12.100+deb12"));
        assert_eq!(package(PINNED), "linux-image-6.12.117+deb12-cloud-amd64-unsigned");
    }
}
