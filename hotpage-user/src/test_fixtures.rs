//! Paths of the fixture trees under `tests/fixtures/` (captures of real machines).

use std::path::{Path, PathBuf};

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures")).join(name)
}

/// The emulated CXL box: node 0 DRAM with the CPUs, node 1 CPU-less lower tier.
pub fn cxl_box() -> PathBuf {
    fixture("cxl-box-6.12")
}

/// This build machine: one node, one tier.
pub fn single_node() -> PathBuf {
    fixture("single-node-6.18")
}

/// Two CPU sockets plus one CXL node at 256 GiB.
pub fn two_socket_cxl() -> PathBuf {
    fixture("two-socket-cxl")
}

/// A kernel without /sys/devices/virtual/memory_tiering.
pub fn no_tiering() -> PathBuf {
    fixture("no-tiering-5.15")
}

/// Copies a capture, directories and all, into `to`, for tests that change it.
pub fn copy_tree(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(e.file_name());
        if e.path().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}
