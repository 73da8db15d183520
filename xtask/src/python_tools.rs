//! The Python tools the tests and benchmarks use, installed with pip into
//! target/ from pinned requirement files: the reference Prometheus text parser
//! (scripts/check-prometheus.py) and matplotlib for the e2e plot.

use std::{path::Path, process::Command};

use anyhow::{Context, Result};

use crate::cargo::{run, target_dir, workspace_root};

/// Installs the pinned packages of `requirements` (relative to the workspace)
/// into `target/<dir>` once; offline afterwards.
pub fn ensure_python_packages(dir: &str, requirements: &str) -> Result<std::path::PathBuf> {
    let dir = target_dir().join(dir);
    let req = workspace_root().join(requirements);
    let stamp = dir.join(".installed");
    let want = std::fs::read_to_string(&req).with_context(|| format!("reading {}", req.display()))?;
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(want.as_str()) {
        eprintln!("xtask: installing {} into {}", requirements, dir.display());
        run(Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target"])
            .arg(&dir)
            .arg("-r")
            .arg(&req))?;
        std::fs::write(&stamp, want)?;
    }
    Ok(dir)
}

/// Checks Prometheus text files with the reference parser: fails unless
/// every file parses and follows hotpage's naming rules.
pub fn check_prometheus(files: &[&Path]) -> Result<()> {
    let py = ensure_python_packages("py", "scripts/requirements-check.txt")?;
    run(Command::new("python3")
        .arg(workspace_root().join("scripts/check-prometheus.py"))
        .args(files)
        .env("PYTHONPATH", py))
}
