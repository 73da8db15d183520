//! Small helpers for reading /proc and /sys files under a root path.

use std::{
    io,
    path::{Path, PathBuf},
};

use thiserror::Error;

/// A /proc or /sys file that could not be read or understood.
#[derive(Debug, Error)]
pub enum SysfsError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot parse {path}: {detail}")]
    Parse { path: PathBuf, detail: String },
}

impl SysfsError {
    pub fn parse(path: &Path, detail: impl Into<String>) -> Self {
        Self::Parse { path: path.to_owned(), detail: detail.into() }
    }

    /// True when the file does not exist (a feature the kernel lacks).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

pub fn read_text(path: &Path) -> Result<String, SysfsError> {
    std::fs::read_to_string(path).map_err(|source| SysfsError::Io { path: path.to_owned(), source })
}

/// Reads a file holding one decimal integer.
pub fn read_u64(path: &Path) -> Result<u64, SysfsError> {
    let text = read_text(path)?;
    text.trim().parse().map_err(|_| SysfsError::parse(path, format!("not a number: {:?}", text.trim())))
}

/// Reads a file holding one signed decimal integer.
pub fn read_i64(path: &Path) -> Result<i64, SysfsError> {
    let text = read_text(path)?;
    text.trim().parse().map_err(|_| SysfsError::parse(path, format!("not a number: {:?}", text.trim())))
}

/// Reads a file holding one hexadecimal integer without `0x` (`block_size_bytes`).
pub fn read_hex(path: &Path) -> Result<u64, SysfsError> {
    let text = read_text(path)?;
    let t = text.trim().trim_start_matches("0x");
    u64::from_str_radix(t, 16).map_err(|_| SysfsError::parse(path, format!("not hex: {:?}", text.trim())))
}

/// Names of the entries of a directory that start with `prefix` and end in a
/// number, with that number: `memory12` → 12. Sorted by number.
pub fn numbered_entries(dir: &Path, prefix: &str) -> Result<Vec<u32>, SysfsError> {
    let rd = std::fs::read_dir(dir).map_err(|source| SysfsError::Io { path: dir.to_owned(), source })?;
    let mut out: Vec<u32> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            name.to_str()?.strip_prefix(prefix)?.parse().ok()
        })
        .collect();
    out.sort_unstable();
    Ok(out)
}
