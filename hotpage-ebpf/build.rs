//! Compiles every `src/bpf/*.bpf.c` into a CO-RE object in `OUT_DIR` with
//! Debian's clang-19 (`HOTPAGE_CLANG` overrides the compiler).

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::{Command, exit},
};

const CLANG: &str = "clang-19";
const STRIP: &str = "llvm-strip-19";
const MULTIARCH_INCLUDE: &str = "/usr/include/x86_64-linux-gnu";

fn fail(msg: &str) -> ! {
    // One line, as cargo prints it under "--- stderr".
    eprintln!("error: {msg}");
    exit(1);
}

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let bpf_dir = manifest.join("src/bpf");
    let common_inc = manifest.join("../hotpage-common/include");
    let clang = env::var("HOTPAGE_CLANG").unwrap_or_else(|_| CLANG.to_owned());

    println!("cargo:rerun-if-env-changed=HOTPAGE_CLANG");
    println!("cargo:rerun-if-changed={}", bpf_dir.display());
    println!("cargo:rerun-if-changed={}", common_inc.display());

    if Command::new(&clang).arg("--version").output().is_err() {
        fail(&format!(
            "{clang} not found: install it with `apt-get install clang-19 llvm-19 libbpf-dev` \
             (or set HOTPAGE_CLANG to a clang with the BPF target)"
        ));
    }
    if !Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
        fail("bpf/bpf_helpers.h not found: install it with `apt-get install libbpf-dev`");
    }

    let mut sources: Vec<PathBuf> = fs::read_dir(&bpf_dir)
        .unwrap_or_else(|e| fail(&format!("reading {}: {e}", bpf_dir.display())))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".bpf.c"))
        .collect();
    sources.sort();
    for entry in fs::read_dir(&bpf_dir).into_iter().flatten().flatten() {
        println!("cargo:rerun-if-changed={}", entry.path().display());
    }
    for src in &sources {
        let stem = src
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".bpf.c"))
            .unwrap_or_else(|| fail("bad source name"));
        let obj = out.join(format!("{stem}.bpf.o"));
        let status = Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpf", "-mcpu=v3", "-D__TARGET_ARCH_x86"])
            .args(["-Wall", "-Werror", "-Wno-unused-function"])
            .arg("-I")
            .arg(&bpf_dir)
            .arg("-I")
            .arg(&common_inc)
            .args(["-idirafter", MULTIARCH_INCLUDE])
            .arg("-c")
            .arg(src)
            .arg("-o")
            .arg(&obj)
            .status()
            .unwrap_or_else(|e| fail(&format!("running {clang}: {e}")));
        if !status.success() {
            fail(&format!("{clang} failed on {}", src.display()));
        }
        // DWARF is only for humans; BTF and BTF.ext stay.
        let _ = Command::new(STRIP).arg("-g").arg(&obj).status();
    }
}
