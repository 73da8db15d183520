//! `hotpage check`: can this kernel and machine run hotpage? Each requirement
//! with ✔ or ✘ and, when it fails, the fix. Exit 0 when all hold, 1 otherwise.

use std::path::Path;

use anyhow::{Result, bail};
use clap::Args;

use crate::daemon::requirements::{Verdict, requirements};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(root: &Path, run_dir: &Path, args: CheckArgs) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let items = requirements(root, run_dir, euid);
    let failed = items.iter().filter(|i| i.verdict == Verdict::Fail).count();
    if args.json {
        println!("{}", serde_json::to_string(&serde_json::json!({ "ok": failed == 0, "checks": items }))?);
    } else {
        for i in &items {
            let mark = match i.verdict {
                Verdict::Ok => "✔",
                Verdict::Fail => "✘",
                Verdict::Info => "·",
            };
            println!("{mark} {:<22} {}", i.name, i.detail);
            if let Some(fix) = &i.fix {
                println!("  {:<22} fix: {fix}", "");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} requirement(s) not met (see ✘ above)");
    }
    Ok(())
}
