//! Running cargo from xtask and finding the artifacts it built.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| ".".into())
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"))
}

pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

/// Runs a command, inheriting stdio; fails with its name when it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let what = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Runs `cargo <args> --message-format=json-render-diagnostics` and returns the
/// executables it produced, as (target name, kind, path).
pub fn build_artifacts(args: &[&str]) -> Result<Vec<(String, String, PathBuf)>> {
    let mut cmd = cargo();
    cmd.args(args).arg("--message-format=json-render-diagnostics").stdout(Stdio::piped());
    let out = cmd.output().with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("cargo {} failed", args.join(" "));
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if v["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(exe) = v["executable"].as_str() else { continue };
        let name = v["target"]["name"].as_str().unwrap_or_default().to_owned();
        let kind = v["target"]["kind"][0].as_str().unwrap_or_default().to_owned();
        let is_test = v["profile"]["test"].as_bool().unwrap_or(false);
        let kind = if is_test && kind == "bin" { "bin-test".to_owned() } else { kind };
        found.push((name, kind, PathBuf::from(exe)));
    }
    Ok(found)
}

/// Builds named binaries of a package (dev profile) and returns their paths, in order.
pub fn build_bins(package: &str, bins: &[&str], release: bool) -> Result<Vec<PathBuf>> {
    let mut args = vec!["build", "-p", package];
    for b in bins {
        args.extend(["--bin", b]);
    }
    if release {
        args.push("--release");
    }
    let artifacts = build_artifacts(&args)?;
    bins.iter()
        .map(|b| {
            artifacts
                .iter()
                .find(|(n, k, _)| n == b && k == "bin")
                .map(|(_, _, p)| p.clone())
                .with_context(|| format!("cargo built no binary {b}"))
        })
        .collect()
}

/// Builds an integration-test target without running it and returns its path.
pub fn build_test(package: &str, test: &str) -> Result<PathBuf> {
    let artifacts = build_artifacts(&["test", "-p", package, "--test", test, "--no-run"])?;
    artifacts
        .into_iter()
        .find(|(n, k, _)| n == test && k == "test")
        .map(|(_, _, p)| p)
        .with_context(|| format!("cargo built no test {test}"))
}
