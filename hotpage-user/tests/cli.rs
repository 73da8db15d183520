//! CLI tests: usage errors exit 2, environment errors exit 1 with one line
//! that names the problem and the fix. None of them needs root or tiers.

// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::{
    fs,
    path::{Path, PathBuf},
    process::Output,
};

use assert_cmd::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

fn hotpage(args: &[&str]) -> Output {
    Command::cargo_bin("hotpage").unwrap().args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// One line on stderr, prefixed like every hotpage error.
fn assert_one_line_error(o: &Output, needle: &str) {
    assert_eq!(o.status.code(), Some(1), "{}", stderr(o));
    let err = stderr(o);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("hotpage: error: "), "{err}");
    assert!(err.contains(needle), "{needle:?} in {err}");
}

#[test]
fn help_lists_the_commands() {
    let o = hotpage(&["--help"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("trace"), "{out}");
    let o = hotpage(&["trace", "--help"]);
    let out = String::from_utf8_lossy(&o.stdout);
    for flag in ["--json", "--pid", "--set-tiering", "--wakeup-every", "--duration"] {
        assert!(out.contains(flag), "{flag} in {out}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let o = hotpage(&["trace", "--bogus"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unexpected argument '--bogus'"));
    let o = hotpage(&["trace", "--wakeup-every", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = hotpage(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn a_machine_without_lower_tier_is_told_what_it_needs() {
    let root = fixture("single-node-6.18");
    let o = hotpage(&["trace", "--root", root.to_str().unwrap()]);
    assert_one_line_error(&o, "no lower memory tier");
    assert!(stderr(&o).contains("cargo xtask vm demo"));
}

#[test]
fn a_kernel_without_memory_tiers_is_named() {
    let root = fixture("no-tiering-5.15");
    let o = hotpage(&["trace", "--root", root.to_str().unwrap()]);
    assert_one_line_error(&o, "needs Linux 6.1 or later");
}

#[test]
fn a_kernel_without_btf_is_named() {
    let root = fixture("cxl-box-6.12");
    let o = hotpage(&["trace", "--root", root.to_str().unwrap()]);
    assert_one_line_error(&o, "CONFIG_DEBUG_INFO_BTF=y");
}

#[test]
fn a_broken_sysfs_names_the_file() {
    let dir = std::env::temp_dir().join(format!("hotpage-cli-{}", std::process::id()));
    let node = dir.join("sys/devices/system/node");
    fs::create_dir_all(&node).unwrap();
    fs::write(node.join("online"), "0-x\n").unwrap();
    let o = hotpage(&["trace", "--root", dir.to_str().unwrap()]);
    let _ = fs::remove_dir_all(&dir);
    assert_one_line_error(&o, "sys/devices/system/node/online");
}

/// A fixture root with tiers and the host's real kernel BTF, so that only
/// privileges stand between `hotpage trace` and the kernel.
fn tiered_root_with_host_btf() -> Option<PathBuf> {
    let btf = Path::new("/sys/kernel/btf/vmlinux");
    if !btf.exists() {
        return None;
    }
    let dir = std::env::temp_dir().join(format!("hotpage-cli-btf-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    copy_dir(&fixture("cxl-box-6.12"), &dir);
    fs::create_dir_all(dir.join("sys/kernel/btf")).unwrap();
    std::os::unix::fs::symlink(btf, dir.join("sys/kernel/btf/vmlinux")).unwrap();
    Some(dir)
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn an_unprivileged_user_is_told_to_use_root() {
    let Some(root) = tiered_root_with_host_btf() else {
        panic!("this test needs /sys/kernel/btf/vmlinux on the test machine");
    };
    // Run as nobody: directly when we are not root, else through setpriv.
    // SAFETY: geteuid has no preconditions.
    let is_root = unsafe { libc::geteuid() } == 0;
    let bin = assert_cmd::cargo::cargo_bin("hotpage");
    let mut cmd = if is_root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(&bin);
        c
    } else {
        Command::new(&bin)
    };
    let o = cmd.args(["trace", "--root", root.to_str().unwrap()]).output().unwrap();
    let _ = fs::remove_dir_all(&root);
    assert_one_line_error(&o, "needs root");
    assert!(stderr(&o).contains("sudo"));
}
