//! `hotpage completions SHELL` and the hidden `hotpage manpages DIR`: shell
//! completions and man pages generated from the clap definitions, so that
//! neither can drift from the flags. The Debian package ships both.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManpagesArgs {
    /// Directory to write hotpage.8 and one hotpage-COMMAND.8 per command into.
    dir: PathBuf,
}

pub fn completions(args: CompletionsArgs) -> Result<()> {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "hotpage", &mut std::io::stdout());
    Ok(())
}

pub fn manpages(args: ManpagesArgs) -> Result<()> {
    for path in write_manpages(&args.dir)? {
        println!("{}", path.display());
    }
    Ok(())
}

/// What the top page adds to clap's sections: how hotpage exits, the files
/// it reads and writes, and where to read on.
const TOP_PAGE_EXTRA: &str = r#".SH "EXIT STATUS"
0 on success, 1 on a runtime error (a requirement missing, the daemon not running), 2 on a usage error
(a bad flag, configuration file or recording). Every error is one line on standard error naming the
problem and the fix.
.SH FILES
.TP
.I /etc/hotpage/hotpage.toml
The daemon's configuration: every knob, at its default (\fBhotpage\-run\fR(8) flags override it).
.TP
.I /run/hotpage/
The instance lock, the control socket (\fBhotpage stats\fR, \fBtop\fR, \fBmetrics\fR) and
\fIkernel\-settings.json\fR, the kernel settings hotpage changed, restored when it stops or on its next
start after a crash.
.SH "SEE ALSO"
\fBhotpage\-run\fR(8), \fBhotpage\-check\fR(8), \fBhotpage\-stats\fR(8), \fBmove_pages\fR(2),
\fBnuma\fR(7), \fBnumastat\fR(8)
"#;

/// Writes hotpage.8 and hotpage-COMMAND.8 for every visible command into
/// `dir` and returns their paths.
pub fn write_manpages(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut pages = vec![(cmd.clone(), TOP_PAGE_EXTRA)];
    pages.extend(cmd.get_subcommands().filter(|s| !s.is_hide_set()).map(|s| (s.clone(), "")));
    let mut written = Vec::new();
    for (cmd, extra) in pages {
        // Section 8: a root-only daemon and its administration commands.
        let man = clap_mangen::Man::new(cmd).section("8").manual("hotpage manual");
        let path = dir.join(man.get_filename());
        let mut text = Vec::new();
        man.render(&mut text)?;
        text.extend_from_slice(extra.as_bytes());
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(&text))
            .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_man_page_for_hotpage_and_each_command_with_its_flags() {
        let dir = tempfile::tempdir().unwrap();
        let pages = write_manpages(dir.path()).unwrap();
        let names: Vec<String> =
            pages.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        for want in ["hotpage.8", "hotpage-run.8", "hotpage-stats.8", "hotpage-check.8", "hotpage-replay.8"] {
            assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
        }
        // The hidden generator is not documented as a command.
        assert!(!names.iter().any(|n| n.contains("manpages")), "{names:?}");
        let top = std::fs::read_to_string(dir.path().join("hotpage.8")).unwrap();
        assert!(top.starts_with(".ie") || top.contains(".TH hotpage 8"), "{}", &top[..200.min(top.len())]);
        assert!(top.contains(".SH FILES") && top.contains("/etc/hotpage/hotpage.toml"));
        let run = std::fs::read_to_string(dir.path().join("hotpage-run.8")).unwrap();
        for flag in ["rate\\-limit", "policy", "config"] {
            assert!(run.contains(flag), "hotpage-run.8 lacks --{flag}");
        }
    }

    #[test]
    fn completions_know_the_commands_and_their_flags() {
        let mut out = Vec::new();
        clap_complete::generate(Shell::Bash, &mut Cli::command(), "hotpage", &mut out);
        let bash = String::from_utf8(out).unwrap();
        for word in ["stats", "replay", "--rate-limit", "--policy"] {
            assert!(bash.contains(word), "bash completion lacks {word}");
        }
    }
}
