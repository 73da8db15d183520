//! `/proc/<pid>/pagemap`: which pfn a virtual page maps, read with one
//! `pread` of 8 bytes per page (Documentation/admin-guide/mm/pagemap.rst).

use std::{
    collections::HashMap,
    fs::File,
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use hotpage_common::PAGE_SHIFT;

const PFN_MASK: u64 = (1 << 55) - 1;
const EXCLUSIVE: u64 = 1 << 56;
const FILE_OR_SHARED: u64 = 1 << 61;
const SWAPPED: u64 = 1 << 62;
const PRESENT: u64 = 1 << 63;

/// One decoded pagemap entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagemapEntry(pub u64);

impl PagemapEntry {
    pub fn present(self) -> bool {
        self.0 & PRESENT != 0
    }

    pub fn swapped(self) -> bool {
        self.0 & SWAPPED != 0
    }

    /// The pfn of a present page. Zero without CAP_SYS_ADMIN (the kernel hides it).
    pub fn pfn(self) -> Option<u64> {
        (self.present() && !self.swapped()).then_some(self.0 & PFN_MASK)
    }

    pub fn exclusive(self) -> bool {
        self.0 & EXCLUSIVE != 0
    }

    pub fn file_or_shared(self) -> bool {
        self.0 & FILE_OR_SHARED != 0
    }
}

/// An open pagemap of one process.
#[derive(Debug)]
pub struct Pagemap {
    file: File,
    path: PathBuf,
}

impl Pagemap {
    /// Opens `<root>/proc/<pid>/pagemap`.
    pub fn open(root: &Path, pid: u32) -> io::Result<Self> {
        let path = root.join(format!("proc/{pid}/pagemap"));
        let file = File::open(&path)?;
        Ok(Self { file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The entry for the page holding `vaddr`.
    pub fn entry(&self, vaddr: u64) -> io::Result<PagemapEntry> {
        let mut buf = [0u8; 8];
        self.file.read_exact_at(&mut buf, (vaddr >> PAGE_SHIFT) * 8)?;
        Ok(PagemapEntry(u64::from_le_bytes(buf)))
    }

    /// Entries for `n` consecutive pages from `vaddr`, with one read.
    pub fn entries(&self, vaddr: u64, out: &mut [PagemapEntry]) -> io::Result<()> {
        let mut buf = vec![0u8; out.len() * 8];
        self.file.read_exact_at(&mut buf, (vaddr >> PAGE_SHIFT) * 8)?;
        for (e, chunk) in out.iter_mut().zip(buf.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *e = PagemapEntry(u64::from_le_bytes(b));
        }
        Ok(())
    }
}

/// Open pagemap files of many processes: each opened on first use and kept,
/// at most `capacity` at once (past that the cache starts over). A process
/// whose file cannot be opened is not remembered: its pid may be reused.
pub struct PagemapCache {
    root: PathBuf,
    capacity: usize,
    open: HashMap<u32, Pagemap>,
}

impl PagemapCache {
    pub fn new(root: &Path, capacity: usize) -> Self {
        Self { root: root.to_owned(), capacity: capacity.max(1), open: HashMap::new() }
    }

    /// The pagemap of `pid`, or None when it cannot be opened (the process is gone).
    pub fn get(&mut self, pid: u32) -> Option<&Pagemap> {
        if !self.open.contains_key(&pid) {
            let pm = Pagemap::open(&self.root, pid).ok()?;
            if self.open.len() >= self.capacity {
                self.open.clear();
            }
            self.open.insert(pid, pm);
        }
        self.open.get(&pid)
    }

    /// Drops the file of `pid` (a read failed: the process exited).
    pub fn forget(&mut self, pid: u32) {
        self.open.remove(&pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_open_files_up_to_its_capacity() {
        let mut c = PagemapCache::new(Path::new("/"), 1);
        let me = std::process::id();
        assert!(c.get(me).is_some());
        assert!(c.get(u32::MAX - 1).is_none(), "no such process");
        assert_eq!(c.open.len(), 1, "a failure is not cached");
        c.forget(me);
        assert!(c.open.is_empty());
    }

    #[test]
    fn decodes_entry_bits() {
        let e = PagemapEntry(PRESENT | EXCLUSIVE | 0x1234);
        assert!(e.present() && e.exclusive() && !e.file_or_shared());
        assert_eq!(e.pfn(), Some(0x1234));
        assert_eq!(PagemapEntry(SWAPPED | PRESENT | 5).pfn(), None);
        assert_eq!(PagemapEntry(0).pfn(), None);
    }

    #[test]
    fn reads_own_pagemap() {
        let page = vec![1u8; 4096 * 2];
        let addr = page.as_ptr() as u64;
        let pm = Pagemap::open(Path::new("/"), std::process::id()).unwrap();
        // Touched heap memory is present; the pfn itself needs CAP_SYS_ADMIN.
        assert!(pm.entry(addr).unwrap().present());
        let mut two = [PagemapEntry(0); 2];
        pm.entries(addr & !4095, &mut two).unwrap();
        assert!(two[0].present());
    }
}
