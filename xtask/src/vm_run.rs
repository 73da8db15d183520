//! `cargo xtask vm run -- PROGRAM [ARGS…]`: the user's own program in the box
//! with hotpage running. The program (and, for a dynamic one, its libraries)
//! is copied into the box; hotpage starts first, at its defaults or with
//! `--hotpage-args`; then the program runs for at most `--seconds`. Printed:
//! `hotpage stats` before and after, and where the program's memory is
//! (per node, from its numa_maps) a second after it starts and at the end.
//! A small `--node0-mib` makes the program's memory spill onto node 1, the
//! lower tier, where hotpage finds its hot pages.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use anyhow::{Result, bail};

use crate::{
    cargo::build_bins,
    vm::{self, BoxSpec, Payload, sh_quote},
};

/// Where PROGRAM is on this machine: a path, or a name looked up in PATH.
/// One line naming the problem when it is missing or not executable.
pub fn resolve_program(program: &str, path_var: Option<&str>) -> Result<PathBuf> {
    let candidates: Vec<PathBuf> = if program.contains('/') {
        vec![PathBuf::from(program)]
    } else {
        path_var
            .unwrap_or("")
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(program))
            .collect()
    };
    let Some(found) = candidates.iter().find(|p| p.exists()) else {
        bail!("{program}: no such program (give a path, or a name in PATH)");
    };
    let meta = std::fs::metadata(found)?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        bail!("{}: not an executable file (chmod +x it, or give the program that runs it)", found.display());
    }
    Ok(found.clone())
}

/// The script the box runs.
fn script(program: &[String], hotpage_args: &str, seconds: u32) -> String {
    let cmd: String = std::iter::once("/box/program".to_owned())
        .chain(program.iter().skip(1).map(|a| sh_quote(a)))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "set -e\n\
         placement() {{\n  \
           awk '{{for (i = 1; i <= NF; i++) if ($i ~ /^N[0-9]+=/) {{ split(substr($i, 2), a, \"=\"); n[a[1]] += a[2] }}}}\n  \
           END {{ for (k in n) printf \"  node %s: %d pages (%.1f MiB)\\n\", k, n[k], n[k] * 4 / 1024 }}' \
           /proc/$1/numa_maps 2>/dev/null || true\n\
         }}\n\
         echo '== nodes and memory tiers'\n\
         /bin/hotpage nodes\n\
         echo '== hotpage run {hotpage_args}'\n\
         /bin/hotpage run {hotpage_args} &\n\
         D=$!\n\
         until /bin/hotpage stats >/dev/null 2>&1; do kill -0 $D || exit 1; sleep 0.2; done\n\
         echo '== hotpage stats, before'\n\
         /bin/hotpage stats\n\
         echo '== {shown}'\n\
         set +e\n\
         {cmd} &\n\
         P=$!\n\
         sleep 1\n\
         echo '== where the program'\"'\"'s memory is, 1 s after it started'\n\
         if kill -0 $P 2>/dev/null; then placement $P; else echo '  (it has exited)'; fi\n\
         T=1\n\
         while [ $T -lt {seconds} ] && kill -0 $P 2>/dev/null; do sleep 1; T=$((T + 1)); done\n\
         echo '== where the program'\"'\"'s memory is, at the end ('$T' s)'\n\
         if kill -0 $P 2>/dev/null; then placement $P; echo '== hotpage top'; /bin/hotpage top; kill $P; \
         else echo '  (it has exited)'; fi\n\
         wait $P\n\
         echo \"== the program exited with status $?\"\n\
         set -e\n\
         echo '== hotpage stats, after'\n\
         /bin/hotpage stats\n\
         kill -TERM $D\n\
         wait $D\n\
         echo '== hotpage stopped: kernel settings restored'\n",
        shown = program.iter().map(|a| sh_quote(a)).collect::<Vec<_>>().join(" ").replace('\'', "'\"'\"'"),
    )
}

pub fn vm_run(spec: &BoxSpec, seconds: u32, hotpage_args: &str, program: &[String]) -> Result<()> {
    let Some(first) = program.first() else {
        bail!("no program to run: cargo xtask vm run [OPTIONS] -- PROGRAM [ARGS...]");
    };
    let host_program = resolve_program(first, std::env::var("PATH").ok().as_deref())?;
    let hotpage = build_bins("hotpage-user", &["hotpage"], false)?.remove(0);
    let payload = Payload {
        binaries: vec![(hotpage, "/bin/hotpage".into()), (host_program, "/box/program".into())],
        files: Vec::new(),
        script: script(program, hotpage_args, seconds.max(1)),
    };
    let outcome = vm::run("run", &payload, spec)?;
    vm::expect_success(&outcome, "vm run")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_non_executable_program_is_one_clear_line() {
        let e = resolve_program("/nonexistent/prog", None).unwrap_err().to_string();
        assert_eq!(e, "/nonexistent/prog: no such program (give a path, or a name in PATH)");
        let e = resolve_program("no-such-tool-here", Some("/usr/bin:/bin")).unwrap_err().to_string();
        assert!(e.starts_with("no-such-tool-here: no such program"), "{e}");
        let dir = std::env::temp_dir().join(format!("xtask-vm-run-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plain = dir.join("data.txt");
        std::fs::write(&plain, "x").unwrap();
        let e = resolve_program(plain.to_str().unwrap(), None).unwrap_err().to_string();
        assert!(e.ends_with("not an executable file (chmod +x it, or give the program that runs it)"), "{e}");
        assert!(!e.contains('\n'));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            resolve_program("true", Some("/nonexistent:/usr/bin:/bin")).unwrap().file_name().unwrap(),
            "true"
        );
    }

    #[test]
    fn the_script_quotes_the_arguments_and_reports_before_and_after() {
        let s = script(&["/bin/prog".into(), "a b".into(), "it's".into()], "--samples off", 20);
        assert!(s.contains(r"/box/program 'a b' 'it'\''s' &"), "{s}");
        assert!(s.contains("/bin/hotpage run --samples off &"));
        assert!(s.contains("hotpage stats, before") && s.contains("hotpage stats, after"));
        assert!(s.contains("1 s after it started") && s.contains("at the end"));
        assert!(s.contains("[ $T -lt 20 ]"));
    }
}
