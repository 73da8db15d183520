//! The e2e benchmark's plot: scripts/plot-e2e.py with matplotlib (pinned in
//! scripts/requirements-plot.txt, installed into target/py-plot once).

use std::{path::Path, process::Command};

use anyhow::Result;

use crate::{
    cargo::{run, workspace_root},
    python_tools::ensure_python_packages,
};

pub fn plot(json: &Path, png: &Path) -> Result<()> {
    let py = ensure_python_packages("py-plot", "scripts/requirements-plot.txt")?;
    run(Command::new("python3")
        .arg(workspace_root().join("scripts/plot-e2e.py"))
        .arg(json)
        .arg(png)
        .env("PYTHONPATH", py))
}
