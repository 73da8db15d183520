//! Picks the kernel function the hint-fault program attaches to, from the
//! running kernel's BTF. The program reads `(folio, vmf, addr)`, the first
//! three arguments of both candidates; older kernels passed a page or a vma
//! instead, which gives no faulting entry, so they are refused by name.

use std::{
    fs::File,
    io::Write,
    os::fd::FromRawFd,
    path::{Path, PathBuf},
};

use btf_rs::{Backend, Btf, BtfType, Type};
use hotpage_common::StampLayout;
use thiserror::Error;

use super::stamp::{StampError, stamp_layout};

/// Candidates, newest first: `numa_migrate_check` (6.10+), `numa_migrate_prep` (6.9).
pub const HINT_FAULT_HOOKS: [&str; 2] = ["numa_migrate_check", "numa_migrate_prep"];

/// The argument types the program needs, in order.
const WANTED: [&str; 2] = ["folio", "vm_fault"];

#[derive(Debug, Error)]
pub enum HookError {
    #[error(
        "no kernel BTF at {0}: hotpage needs a kernel built with CONFIG_DEBUG_INFO_BTF=y \
         (Debian, Ubuntu, Fedora and RHEL kernels have it)"
    )]
    NoBtf(PathBuf),
    #[error("cannot parse kernel BTF at {path}: {detail}")]
    BadBtf { path: PathBuf, detail: String },
    #[error(
        "kernel {release} has no NUMA hint-fault hook hotpage can attach to ({found}); the hint-fault \
         source needs numa_migrate_check (Linux 6.10+) or numa_migrate_prep(struct folio *, struct vm_fault *, ...) \
         (6.9): upgrade the kernel to 6.9 or later"
    )]
    Unsupported { release: String, found: String },
}

/// The kernel's BTF (`/sys/kernel/btf/vmlinux` under `root`), mapped rather
/// than parsed whole: hotpage looks up a dozen types, and parsing a
/// distribution kernel's 5 MB of BTF up front took 150-250 ms on a 2-core
/// host (seconds of CPU under emulation), where the lookups on the mapping
/// take under 10 ms. Older kernels cannot map the sysfs file itself (the
/// box's 6.12 cannot, this 6.18 host can: mapping it came in 2025); a copy
/// in memory (a memfd) is mapped then, and a full parse is the last resort.
pub fn kernel_btf(root: &Path) -> Result<Btf, HookError> {
    let path = root.join("sys/kernel/btf/vmlinux");
    if !path.exists() {
        return Err(HookError::NoBtf(path));
    }
    Btf::from_file_with_backend(&path, Backend::Mmap)
        .or_else(|_| mapped_copy(&path))
        .or_else(|_| Btf::from_file(&path))
        .map_err(|e| HookError::BadBtf { path, detail: e.to_string() })
}

/// `path`'s bytes in a memfd, mapped.
fn mapped_copy(path: &Path) -> btf_rs::Result<Btf> {
    let bytes = std::fs::read(path)?;
    // SAFETY: a valid C string and flags; the descriptor is checked below.
    let fd = unsafe { libc::memfd_create(c"hotpage-btf".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(&bytes)?;
    // The mapping holds the memfd's pages after `file` closes it.
    Btf::from_file_with_backend(format!("/proc/self/fd/{fd}"), Backend::Mmap)
}

/// Where the hint-fault program attaches and what it can read there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HintFaultHook {
    /// The kernel function (`fentry/<function>`).
    pub function: &'static str,
    /// Where the folio's scan stamp is, or why the events carry no latency.
    pub stamp: Result<StampLayout, StampError>,
}

impl HintFaultHook {
    /// Probes the kernel under `root` whose BTF is `btf`.
    pub fn probe(btf: &Btf, root: &Path, release: &str) -> Result<Self, HookError> {
        let function = hint_fault_hook(btf, release)?;
        Ok(Self { function, stamp: stamp_layout(btf, root, release) })
    }

    /// The layout the program is loaded with (`word` NONE: no latency).
    pub fn stamp_layout(&self) -> StampLayout {
        self.stamp.as_ref().copied().unwrap_or_default()
    }
}

/// The hook to attach the hint-fault program to, for a kernel whose BTF is `btf`.
pub fn hint_fault_hook(btf: &Btf, release: &str) -> Result<&'static str, HookError> {
    let mut found = Vec::new();
    for name in HINT_FAULT_HOOKS {
        let Some(params) = func_param_types(btf, name) else { continue };
        let fits = params.len() >= 3 && params.iter().zip(WANTED).all(|(p, w)| p == &format!("struct {w} *"));
        if fits {
            return Ok(name);
        }
        found.push(format!("{name}({})", params.join(", ")));
    }
    let found = if found.is_empty() {
        format!("neither {} nor {} is in its BTF", HINT_FAULT_HOOKS[0], HINT_FAULT_HOOKS[1])
    } else {
        format!("found {}", found.join("; "))
    };
    Err(HookError::Unsupported { release: release.to_owned(), found })
}

/// C-like spellings of a function's parameter types (`struct folio *`), or None
/// when the function is not in the BTF.
fn func_param_types(btf: &Btf, name: &str) -> Option<Vec<String>> {
    let func = btf.resolve_types_by_name(name).ok()?.into_iter().find_map(|t| match t {
        Type::Func(f) => Some(f),
        _ => None,
    })?;
    let Type::FuncProto(proto) = btf.resolve_chained_type(&func).ok()? else { return None };
    Some(proto.parameters.iter().map(|p| type_spelling(btf, p)).collect())
}

/// A type as C spells it (`struct folio *`), for matching prototypes.
pub fn type_spelling(btf: &Btf, ty: &dyn BtfType) -> String {
    let Ok(t) = btf.resolve_chained_type(ty) else { return "?".to_owned() };
    let named = |prefix: &str, t: &dyn BtfType| {
        let name = btf.resolve_name(t).unwrap_or_default();
        if prefix.is_empty() { name } else { format!("{prefix} {name}") }
    };
    match &t {
        Type::Ptr(p) => format!("{} *", type_spelling(btf, p)),
        Type::Const(c) => type_spelling(btf, c),
        Type::Volatile(v) => type_spelling(btf, v),
        Type::Struct(s) => named("struct", s),
        Type::Union(u) => named("union", u),
        Type::Fwd(f) if f.is_union() => named("union", f),
        Type::Fwd(f) => named("struct", f),
        Type::Int(i) => named("", i),
        Type::Typedef(td) => named("", td),
        Type::Enum(e) => named("enum", e),
        other => other.name().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::btf_writer::BtfWriter;

    /// BTF with a hint-fault function named `name` taking `(first *, second *, unsigned long, ...)`.
    fn kernel_with(name: &str, first: &str, second: &str) -> Btf {
        Btf::from_bytes(&kernel_bytes_with(name, first, second)).unwrap()
    }

    /// The bytes of [`kernel_with`]'s BTF, as a kernel's sysfs file holds them.
    fn kernel_bytes_with(name: &str, first: &str, second: &str) -> Vec<u8> {
        let mut w = BtfWriter::new();
        let int = w.int("int", 4);
        let ulong = w.int("unsigned long", 8);
        let a = w.strukt(first);
        let b = w.strukt(second);
        let pa = w.ptr(a);
        let pb = w.ptr(b);
        let pint = w.ptr(int);
        w.func(name, &[("a", pa), ("b", pb), ("addr", ulong), ("flags", pint)], int);
        w.finish()
    }

    #[test]
    fn picks_numa_migrate_check_on_6_10_and_later() {
        let btf = kernel_with("numa_migrate_check", "folio", "vm_fault");
        assert_eq!(hint_fault_hook(&btf, "6.12.0").unwrap(), "numa_migrate_check");
    }

    #[test]
    fn falls_back_to_numa_migrate_prep_with_a_vm_fault() {
        let btf = kernel_with("numa_migrate_prep", "folio", "vm_fault");
        assert_eq!(hint_fault_hook(&btf, "6.9.0").unwrap(), "numa_migrate_prep");
    }

    #[test]
    fn refuses_the_old_page_and_vma_signature_by_name() {
        let btf = kernel_with("numa_migrate_prep", "page", "vm_area_struct");
        let err = hint_fault_hook(&btf, "6.1.0-28-amd64").unwrap_err().to_string();
        assert!(err.contains("kernel 6.1.0-28-amd64"), "{err}");
        assert!(
            err.contains("numa_migrate_prep(struct page *, struct vm_area_struct *, unsigned long, int *)"),
            "{err}"
        );
        assert!(err.contains("upgrade the kernel to 6.9 or later"), "{err}");
    }

    #[test]
    fn says_when_neither_function_exists() {
        let btf = kernel_with("do_numa_page", "vm_fault", "folio");
        let err = hint_fault_hook(&btf, "5.4.0").unwrap_err().to_string();
        assert!(err.contains("neither numa_migrate_check nor numa_migrate_prep"), "{err}");
    }

    #[test]
    fn missing_btf_names_the_config_option() {
        let Err(err) = kernel_btf(Path::new("/nonexistent")) else { panic!("BTF found under /nonexistent") };
        let err = err.to_string();
        assert!(err.contains("CONFIG_DEBUG_INFO_BTF=y"), "{err}");
    }

    /// A kernel's BTF under a root (a file: mapped as it is), and the copy
    /// in memory that kernels whose sysfs file cannot be mapped get: the
    /// same lookups either way.
    #[test]
    fn the_kernels_btf_is_mapped_or_copied_and_mapped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sys/kernel/btf/vmlinux");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, kernel_bytes_with("numa_migrate_check", "folio", "vm_fault")).unwrap();
        for btf in [kernel_btf(dir.path()).unwrap(), mapped_copy(&path).unwrap()] {
            assert_eq!(hint_fault_hook(&btf, "6.12.0").unwrap(), "numa_migrate_check");
        }
        let bad = dir.path().join("bad");
        std::fs::create_dir_all(bad.join("sys/kernel/btf")).unwrap();
        std::fs::write(bad.join("sys/kernel/btf/vmlinux"), b"not BTF").unwrap();
        let Err(err) = kernel_btf(&bad) else { panic!("garbage parsed as BTF") };
        assert!(err.to_string().contains("cannot parse kernel BTF"), "{err}");
    }

    /// This machine's own BTF, where it has one: the hook's types resolve
    /// on the mapping as on a parse.
    #[test]
    fn the_running_kernels_btf_resolves_on_the_mapping() {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        if !path.exists() {
            eprintln!("skipped: no /sys/kernel/btf/vmlinux here");
            return;
        }
        let mapped = kernel_btf(Path::new("/")).unwrap();
        let parsed = Btf::from_file(path).unwrap();
        for name in ["folio", "vm_fault", "pageflags", "task_struct"] {
            let ids = |b: &Btf| b.resolve_ids_by_name(name).unwrap_or_default();
            assert_eq!(ids(&mapped), ids(&parsed), "{name}");
        }
        assert!(!mapped.resolve_ids_by_name("folio").unwrap_or_default().is_empty());
    }
}
