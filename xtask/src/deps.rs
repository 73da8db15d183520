//! The Debian packages the build, the tests and the box need, pinned to a
//! release series. Debian replaces patch releases in place, so a pin names the
//! series (`1:19.1.*`) and apt picks the patch that the archive carries.
//!
//! Nothing the user has is removed: apt runs with `--no-remove`. QEMU's
//! packages come from one source and must share a version, so when a QEMU
//! package of another series is installed already (`qemu-utils` from
//! backports, say), `qemu-system-x86` follows that version instead of the
//! pin (the box needs TCG and HMAT, which every QEMU since 5.0 has). A
//! backports version (`~bpo12+1`) comes from `<codename>-backports`; when apt's
//! sources lack that suite (an image that shipped the package but not the
//! source), xtask adds it, on the same mirror as the release's own source, in
//! `/etc/apt/sources.list.d/hotpage-backports.sources`. Backports' default
//! priority (100) upgrades nothing else.

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

/// What `cargo xtask package` needs besides: the checker and dpkg-shlibdeps
/// (for the package's Depends).
pub const PACKAGING: &[(&str, &str, &str)] = &[
    ("lintian", "2.116.*", "checks the Debian package"),
    ("dpkg-dev", "1.21.*", "dpkg-shlibdeps, for the package's Depends"),
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
fn missing(
    packages: &[(&str, &str, &str)],
    installed: &impl Fn(&str) -> Option<String>,
) -> Vec<(String, Option<String>)> {
    packages
        .iter()
        .filter_map(|(p, glob, _)| {
            let (version, why) = wanted(p, glob, installed);
            let ok = installed(p).is_some_and(|v| v == version || matches_glob(&v, &version));
            (!ok).then(|| (format!("{p}={version}"), why))
        })
        .collect()
}

/// The backports suite a version comes from (`~bpo12+1` → `bookworm-backports`
/// when the release's codename is bookworm), if it is a backports version.
fn backports_suite(version: &str, codename: &str) -> Option<String> {
    version.contains("~bpo").then(|| format!("{codename}-backports"))
}

/// A deb822 source for `suite` on the mirror (URIs, Signed-By) of the source
/// that carries the release itself (`codename` among its suites). `texts` are
/// the contents of apt's deb822 `.sources` files; one-line `sources.list`
/// entries (`deb [signed-by=K] URI SUITE COMPONENTS`) are read too.
fn source_for_suite(texts: &[String], codename: &str, suite: &str) -> Option<String> {
    let stanza = |uris: &str, signed_by: Option<&str>| {
        let mut s = format!("Types: deb\nURIs: {uris}\nSuites: {suite}\nComponents: main\n");
        if let Some(k) = signed_by {
            s.push_str(&format!("Signed-By: {k}\n"));
        }
        s
    };
    for text in texts {
        for block in text.split("\n\n") {
            let field = |name: &str| {
                block.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                })
            };
            if let (Some(uris), Some(suites)) = (field("URIs"), field("Suites"))
                && field("Types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb"))
                && suites.split_whitespace().any(|s| s == codename)
            {
                return Some(stanza(&uris, field("Signed-By").as_deref()));
            }
        }
        for line in text.lines().map(str::trim) {
            let Some(rest) = line.strip_prefix("deb ") else { continue };
            let (opts, rest) = match rest.trim_start().strip_prefix('[') {
                Some(r) => r.split_once(']').unwrap_or(("", r)),
                None => ("", rest),
            };
            let mut words = rest.split_whitespace();
            if let (Some(uri), Some(s)) = (words.next(), words.next())
                && s == codename
            {
                let key = opts.split_whitespace().find_map(|o| o.strip_prefix("signed-by="));
                return Some(stanza(uri, key));
            }
        }
    }
    None
}

fn os_codename() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines().find_map(|l| l.strip_prefix("VERSION_CODENAME=")).map(|v| v.trim_matches('"').to_owned())
}

/// Does apt know `pkg` at exactly `version` (from any configured source)?
fn apt_has(pkg: &str, version: &str) -> bool {
    Command::new("apt-cache").args(["madison", pkg]).output().is_ok_and(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l.split('|').nth(1).map(str::trim) == Some(version))
    })
}

const BACKPORTS_FILE: &str = "/etc/apt/sources.list.d/hotpage-backports.sources";

/// Adds `suite` to apt's sources (same mirror as the release) when apt does not
/// carry `pkg=version` yet. Returns the suite to install from.
fn ensure_backports(pkg: &str, version: &str) -> Result<Option<String>> {
    let Some(codename) = os_codename() else { return Ok(None) };
    let Some(suite) = backports_suite(version, &codename) else { return Ok(None) };
    if apt_has(pkg, version) {
        return Ok(Some(suite));
    }
    let mut texts: Vec<String> = std::fs::read_to_string("/etc/apt/sources.list").into_iter().collect();
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<_> = dir.flatten().map(|e| e.path()).collect();
        paths.sort();
        texts.extend(
            paths
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "sources" || e == "list"))
                .filter_map(|p| std::fs::read_to_string(p).ok()),
        );
    }
    let Some(source) = source_for_suite(&texts, &codename, &suite) else {
        bail!(
            "{pkg} {version} comes from {suite}, which apt's sources lack, and no source for {codename} was found \
             to copy: add {suite} to /etc/apt/sources.list.d/ and run again"
        );
    };
    eprintln!(
        "xtask: {pkg} {version} comes from {suite}: adding it to apt's sources ({BACKPORTS_FILE}, same mirror)"
    );
    std::fs::write(BACKPORTS_FILE, format!("# Added by cargo xtask deps for {pkg} {version}.\n{source}"))?;
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    if !apt_has(pkg, version) {
        bail!(
            "{pkg} {version} is not in {suite} either: install qemu-system-x86 of your qemu-utils' version, then run again"
        );
    }
    Ok(Some(suite))
}

/// `apt-get install` without removals, optionally from a suite.
fn apt_install(pkgs: &[String], suite: Option<&str>) -> Result<()> {
    let mut cmd = Command::new("apt-get");
    // --no-remove: apt stops rather than remove anything the user has.
    cmd.args(["install", "-y", "-q", "--no-install-recommends", "--no-remove"]);
    if let Some(suite) = suite {
        cmd.args(["-t", suite]);
    }
    let installed = cmd.args(pkgs).env("DEBIAN_FRONTEND", "noninteractive").status()?;
    if !installed.success() {
        bail!(
            "apt-get could not install {} without removing anything (see its message above): install versions \
             that fit what you have (e.g. qemu-system-x86 of your qemu-utils' version), then run again",
            pkgs.join(" ")
        );
    }
    Ok(())
}

/// Installs whatever the build, the tests and the box lack (as root), or
/// says what to install.
pub fn ensure() -> Result<()> {
    ensure_packages(PACKAGES)
}

/// Installs whatever of `packages` is missing (as root), or says what to install.
pub fn ensure_packages(packages: &[(&str, &str, &str)]) -> Result<()> {
    let wanted = missing(packages, &installed_version);
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
    // QEMU on its own: it may come from backports, the rest from the release.
    let (qemu, rest): (Vec<String>, Vec<String>) = missing.into_iter().partition(|p| p.starts_with("qemu-"));
    if !rest.is_empty() {
        apt_install(&rest, None)?;
    }
    for pkg in &qemu {
        let suite = match pkg.split_once('=') {
            Some((name, version)) if !version.contains('*') => ensure_backports(name, version)?,
            _ => None,
        };
        apt_install(std::slice::from_ref(pkg), suite.as_deref())?;
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
        let m = missing(PACKAGES, &backports);
        let qemu = m.iter().find(|(p, _)| p.starts_with("qemu-system-x86=")).unwrap();
        assert_eq!(qemu.0, "qemu-system-x86=1:8.2.4+ds-1~bpo12+1");
        assert!(qemu.1.as_deref().unwrap().contains("qemu-utils 1:8.2.4"), "{qemu:?}");
        // Without another QEMU, the pin.
        let none = |_: &str| None;
        assert!(
            missing(PACKAGES, &none)
                .iter()
                .any(|(p, why)| p == "qemu-system-x86=1:7.2+dfsg-*" && why.is_none())
        );
        // Installed and matching: nothing to do for it.
        let both = |p: &str| {
            matches!(p, "qemu-utils" | "qemu-system-x86").then(|| "1:8.2.4+ds-1~bpo12+1".to_owned())
        };
        assert!(!missing(PACKAGES, &both).iter().any(|(p, _)| p.starts_with("qemu-system-x86")));
        let pinned = |p: &str| (p == "qemu-system-x86").then(|| "1:7.2+dfsg-7+deb12u18".to_owned());
        assert!(!missing(PACKAGES, &pinned).iter().any(|(p, _)| p.starts_with("qemu-system-x86")));
    }

    #[test]
    fn a_backports_version_gets_its_suite_on_the_release_mirror() {
        assert_eq!(
            backports_suite("1:10.0.2+ds-2+deb13u1~bpo12+1", "bookworm").as_deref(),
            Some("bookworm-backports")
        );
        assert_eq!(backports_suite("1:7.2+dfsg-7+deb12u18+b3", "bookworm"), None);
        // Debian 12's image: deb822, the security archive first in another file.
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n\n\
                      Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n\
                      Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";
        let s = source_for_suite(&[deb822.to_owned()], "bookworm", "bookworm-backports").unwrap();
        assert_eq!(
            s,
            "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm-backports\nComponents: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        );
        // One-line sources.list, with options.
        let list = "# comment\ndeb-src http://m.example/debian bookworm main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://m.example/debian bookworm main contrib\n";
        let s = source_for_suite(&[list.to_owned()], "bookworm", "bookworm-backports").unwrap();
        assert!(s.contains("URIs: http://m.example/debian\n") && s.contains("Signed-By: /k.gpg\n"), "{s}");
        // No source for the release: nothing to copy.
        assert_eq!(
            source_for_suite(&["deb http://x/ trixie main\n".to_owned()], "bookworm", "bookworm-backports"),
            None
        );
    }

    #[test]
    fn version_globs() {
        assert!(matches_glob("1:19.1.7-3~deb12u1", "1:19.1.*"));
        assert!(!matches_glob("1:18.1.8-1", "1:19.1.*"));
        assert!(matches_glob("1:7.2+dfsg-7+deb12u18+b3", "1:7.2+dfsg-*"));
        assert!(matches_glob("2.40-2", "2.40-*"));
    }
}
