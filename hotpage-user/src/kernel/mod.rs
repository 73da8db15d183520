//! The running kernel: its release, BTF and the hooks hotpage attaches to,
//! the settings hotpage changes (saved and restored), and the other movers
//! of pages hotpage must not fight.

#[cfg(test)]
pub(crate) mod btf_writer;
mod hook;
pub mod hz;
pub mod movers;
pub mod scan_rest;
pub mod settings;
pub mod stamp;

use std::path::Path;

pub use hook::{HINT_FAULT_HOOKS, HintFaultHook, HookError, hint_fault_hook, kernel_btf, type_spelling};

use crate::sys::sysfs::read_text;

/// `uname -r` as the kernel under `root` reports it, or "unknown".
pub fn release(root: &Path) -> String {
    read_text(&root.join("proc/sys/kernel/osrelease"))
        .map(|s| s.trim().to_owned())
        .or_else(|_| {
            // "Linux version 6.12.117+deb12-cloud-amd64 (...)"
            read_text(&root.join("proc/version"))
                .map(|v| v.split_whitespace().nth(2).unwrap_or("unknown").to_owned())
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::cxl_box;

    #[test]
    fn release_from_proc_version() {
        assert_eq!(release(&cxl_box()), "6.12.117+deb12-cloud-amd64");
        assert_eq!(release(Path::new("/nonexistent")), "unknown");
    }
}
