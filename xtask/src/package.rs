//! `cargo xtask package`: hotpage's Debian package, built by cargo-deb (pinned,
//! installed with `cargo install` when missing) from `[package.metadata.deb]`
//! in hotpage-user/Cargo.toml. Man pages and shell completions are generated
//! from the clap definitions by the release binary first. Then the package is
//! checked: its file list, control fields and conffiles here, `lintian`
//! (errors fail, warnings are printed), and with `--in-box` the packaged
//! binary and configuration run `hotpage check` and the daemon in the box.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{
    cargo::{self, build_bins, run},
    deps,
    vm::{self, BoxSpec, Payload},
};

/// The cargo-deb release the package is built with.
pub const CARGO_DEB_VERSION: &str = "3.8.0";

pub fn package(in_box: Option<&BoxSpec>) -> Result<PathBuf> {
    deps::ensure()?;
    deps::ensure_packages(deps::PACKAGING)?;
    ensure_cargo_deb()?;
    let hotpage = build_bins("hotpage-user", &["hotpage"], true)?.remove(0);
    generate_docs(&hotpage)?;
    let out_dir = cargo::target_dir().join("debian");
    let _ = std::fs::remove_dir_all(&out_dir);
    let mut cmd = cargo::cargo();
    cmd.args(["deb", "-p", "hotpage-user", "--no-build", "--strip", "--output"]).arg(&out_dir);
    // Debian's convention for who builds a package, if set.
    if let Ok(email) = std::env::var("DEBEMAIL") {
        let name = std::env::var("DEBFULLNAME").unwrap_or_else(|_| "hotpage".into());
        cmd.args(["--maintainer", &format!("{name} <{email}>")]);
    }
    run(&mut cmd)?;
    let deb = std::fs::read_dir(&out_dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("cargo deb wrote no .deb into {}", out_dir.display()))?;
    let tree = cargo::target_dir().join("package/root");
    let problems = inspect(&deb, &tree)?;
    if !problems.is_empty() {
        bail!("{}: {}", deb.display(), problems.join("; "));
    }
    eprintln!("xtask: {}: file list, control fields and conffiles as expected", deb.display());
    lintian(&deb)?;
    if let Some(spec) = in_box {
        check_in_box(&tree, spec)?;
    }
    println!("{}", deb.display());
    Ok(deb)
}

fn ensure_cargo_deb() -> Result<()> {
    let have = cargo::cargo().args(["deb", "--version"]).output().ok().filter(|o| o.status.success());
    let version = have.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default();
    if version.split_whitespace().last() == Some(CARGO_DEB_VERSION) {
        return Ok(());
    }
    eprintln!(
        "xtask: installing cargo-deb {CARGO_DEB_VERSION} (found: {})",
        if version.is_empty() { "none" } else { &version }
    );
    run(cargo::cargo().args([
        "install",
        "--locked",
        "cargo-deb",
        "--version",
        &format!("={CARGO_DEB_VERSION}"),
    ]))
}

/// Man pages and completions into target/release/package/, where the
/// package's assets point (cargo-deb maps `target/release/` to the real
/// target directory).
fn generate_docs(hotpage: &Path) -> Result<()> {
    let dir = cargo::target_dir().join("release/package");
    let man = dir.join("man");
    let _ = std::fs::remove_dir_all(&man);
    run(Command::new(hotpage).arg("manpages").arg(&man).stdout(std::process::Stdio::null()))?;
    // Compressed as Debian policy wants (-n: no name or time, reproducible);
    // cargo-deb leaves files under target/release/ as they are.
    let pages: Vec<PathBuf> = std::fs::read_dir(&man)?.flatten().map(|e| e.path()).collect();
    run(Command::new("gzip").arg("-9nf").args(&pages))?;
    let completions = dir.join("completions");
    std::fs::create_dir_all(&completions)?;
    for (shell, file) in [("bash", "hotpage.bash"), ("zsh", "_hotpage"), ("fish", "hotpage.fish")] {
        let out = Command::new(hotpage).args(["completions", shell]).output()?;
        if !out.status.success() || out.stdout.is_empty() {
            bail!("hotpage completions {shell} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        std::fs::write(completions.join(file), out.stdout)?;
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let what = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Unpacks `deb` into `tree` and lists what is wrong with it.
fn inspect(deb: &Path, tree: &Path) -> Result<Vec<String>> {
    let control = output(Command::new("dpkg-deb").arg("--info").arg(deb).arg("control"))?;
    let conffiles =
        output(Command::new("dpkg-deb").arg("--info").arg(deb).arg("conffiles")).unwrap_or_default();
    let listing = output(Command::new("dpkg-deb").arg("--contents").arg(deb))?;
    let files: Vec<String> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').to_owned())
        .collect();
    let _ = std::fs::remove_dir_all(tree);
    std::fs::create_dir_all(tree)?;
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(tree))?;
    let unit = ["lib", "usr/lib"]
        .iter()
        .find_map(|d| std::fs::read_to_string(tree.join(d).join("systemd/system/hotpage.service")).ok())
        .unwrap_or_default();
    Ok(problems(&files, &control, &conffiles, &unit, env!("CARGO_PKG_VERSION")))
}

/// Files the package must hold (the unit's directory varies: checked apart).
const PACKAGED_FILES: &[&str] = &[
    "/usr/bin/hotpage",
    "/etc/hotpage/hotpage.toml",
    "/usr/share/man/man8/hotpage.8.gz",
    "/usr/share/man/man8/hotpage-run.8.gz",
    "/usr/share/man/man8/hotpage-check.8.gz",
    "/usr/share/bash-completion/completions/hotpage",
    "/usr/share/zsh/vendor-completions/_hotpage",
    "/usr/share/fish/vendor_completions.d/hotpage.fish",
    "/usr/share/doc/hotpage/copyright",
    "/usr/share/doc/hotpage/changelog.Debian.gz",
    "/usr/share/hotpage/grafana/hotpage.json",
];

/// What a correct package holds; each miss is one phrase.
pub fn problems(files: &[String], control: &str, conffiles: &str, unit: &str, version: &str) -> Vec<String> {
    let mut out = Vec::new();
    let field = |name: &str| {
        control.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(|v| v.trim().to_owned()))
    };
    let has = |path: &str| files.iter().any(|f| f == path);
    for path in PACKAGED_FILES {
        if !has(path) {
            out.push(format!("{path} missing"));
        }
    }
    if !has("/lib/systemd/system/hotpage.service") && !has("/usr/lib/systemd/system/hotpage.service") {
        out.push("the systemd unit missing".into());
    }
    for (name, want) in
        [("Package", "hotpage".to_owned()), ("Version", format!("{version}-1")), ("Section", "admin".into())]
    {
        if field(name).as_deref() != Some(want.as_str()) {
            out.push(format!("{name} is {:?}, not {want:?}", field(name)));
        }
    }
    if field("Architecture").is_none_or(|a| a == "all") {
        out.push("Architecture missing or `all` for a native binary".into());
    }
    if !field("Depends").is_some_and(|d| d.contains("libc6")) {
        out.push(format!("Depends lacks libc6: {:?}", field("Depends")));
    }
    if field("Maintainer").is_none_or(|m| !m.contains('@')) {
        out.push("Maintainer without an address".into());
    }
    if !conffiles.lines().any(|l| l.trim() == "/etc/hotpage/hotpage.toml") {
        out.push("/etc/hotpage/hotpage.toml is not a conffile".into());
    }
    // The unit runs the packaged binary with the packaged configuration.
    if !unit.lines().any(|l| l.trim() == "ExecStart=/usr/bin/hotpage run --config /etc/hotpage/hotpage.toml")
    {
        out.push(
            "the unit's ExecStart is not /usr/bin/hotpage run --config /etc/hotpage/hotpage.toml".into(),
        );
    }
    out
}

fn lintian(deb: &Path) -> Result<()> {
    // lintian warns when run as root; the package is only read.
    let out = Command::new("lintian")
        .args(["--fail-on", "error", "--allow-root", "--tag-display-limit", "0"])
        .arg(deb)
        .output()
        .context("starting lintian")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let warnings: Vec<&str> = text.lines().filter(|l| l.starts_with("W:")).collect();
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E:")).collect();
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        eprintln!("lintian: {l}");
    }
    if !out.status.success() || !errors.is_empty() {
        bail!(
            "lintian found {} error(s) in {} (above){}",
            errors.len(),
            deb.display(),
            String::from_utf8_lossy(&out.stderr).lines().next().map(|l| format!(": {l}")).unwrap_or_default()
        );
    }
    eprintln!("xtask: lintian: no errors, {} warning(s)", warnings.len());
    Ok(())
}

/// The packaged binary and configuration, in the box: `hotpage check`, then
/// the daemon from the conffile for a few seconds (settings restored after).
fn check_in_box(tree: &Path, spec: &BoxSpec) -> Result<()> {
    let payload = Payload {
        binaries: vec![(tree.join("usr/bin/hotpage"), "/usr/bin/hotpage".into())],
        files: vec![(tree.join("etc/hotpage/hotpage.toml"), "/etc/hotpage/hotpage.toml".into())],
        script: "set -e\n\
                 echo \"== packaged $(/usr/bin/hotpage --version)\"\n\
                 /usr/bin/hotpage check\n\
                 echo '== hotpage run --config /etc/hotpage/hotpage.toml --duration 5'\n\
                 /usr/bin/hotpage run --config /etc/hotpage/hotpage.toml --duration 5\n\
                 /usr/bin/hotpage completions bash | grep -q 'complete -F _hotpage'\n\
                 echo '== the packaged hotpage ran in the box'\n"
            .into(),
    };
    let outcome = vm::run("package", &payload, spec)?;
    vm::expect_success(&outcome, "the packaged hotpage")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> (Vec<String>, String, String, String) {
        let files: Vec<String> = PACKAGED_FILES
            .iter()
            .chain(&["/usr/lib/systemd/system/hotpage.service"])
            .map(|f| (*f).to_owned())
            .collect();
        let control =
            "Package: hotpage\nVersion: 0.1.0-1\nArchitecture: amd64\nMaintainer: A <a@b.example>\n\
                       Section: admin\nDepends: libc6 (>= 2.34)\n"
                .to_owned();
        let unit =
            "[Service]\nExecStart=/usr/bin/hotpage run --config /etc/hotpage/hotpage.toml\n".to_owned();
        (files, control, "/etc/hotpage/hotpage.toml\n".into(), unit)
    }

    #[test]
    fn a_complete_package_has_no_problems_and_each_miss_is_named() {
        let (files, control, conffiles, unit) = good();
        assert_eq!(problems(&files, &control, &conffiles, &unit, "0.1.0"), Vec::<String>::new());

        let fewer: Vec<String> = files.iter().filter(|f| !f.contains("man8/hotpage-run")).cloned().collect();
        assert_eq!(
            problems(&fewer, &control, &conffiles, &unit, "0.1.0"),
            ["/usr/share/man/man8/hotpage-run.8.gz missing"]
        );
        let p = problems(&files, &control, "", &unit, "0.1.0");
        assert_eq!(p, ["/etc/hotpage/hotpage.toml is not a conffile"]);
        let p = problems(&files, &control.replace("libc6 (>= 2.34)", ""), &conffiles, &unit, "0.1.0");
        assert!(p[0].starts_with("Depends lacks libc6"), "{p:?}");
        let p = problems(&files, &control, &conffiles, &unit.replace("/usr/bin", "/usr/local/bin"), "0.1.0");
        assert!(p[0].contains("ExecStart"), "{p:?}");
        let p = problems(&files, &control, &conffiles, &unit, "0.2.0");
        assert!(p[0].starts_with("Version is"), "{p:?}");
        let no_unit: Vec<String> = files.iter().filter(|f| !f.ends_with(".service")).cloned().collect();
        assert_eq!(problems(&no_unit, &control, &conffiles, &unit, "0.1.0"), ["the systemd unit missing"]);
    }
}
