//! Anonymous memory regions for workloads, touched page by page.

use std::{io, ptr::NonNull};

pub const PAGE: usize = 4096;
pub const HUGE_PAGE: usize = 2 << 20;

/// An anonymous private mapping, unmapped on drop.
pub struct Region {
    ptr: NonNull<u8>,
    len: usize,
    /// The whole mapping (larger than `len` when aligned).
    map_base: NonNull<u8>,
    map_len: usize,
}

// SAFETY: the mapping is plain memory owned by this value.
unsafe impl Send for Region {}

impl Region {
    /// Maps `len` bytes (rounded up to pages) without touching them.
    pub fn map(len: usize) -> io::Result<Self> {
        Self::map_aligned(len, PAGE)
    }

    /// Maps `len` bytes starting on a 2 MiB boundary, so THP can back them.
    pub fn map_huge_aligned(len: usize) -> io::Result<Self> {
        Self::map_aligned(len, HUGE_PAGE)
    }

    fn map_aligned(len: usize, align: usize) -> io::Result<Self> {
        let len = len.div_ceil(PAGE) * PAGE;
        let map_len = len + if align > PAGE { align } else { 0 };
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map_base = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        let skip = (align - (map_base.as_ptr() as usize % align)) % align;
        // SAFETY: skip < align, and map_len = len + align, so the range stays inside.
        let ptr = unsafe { map_base.add(skip) };
        Ok(Self { ptr, len, map_base, map_len })
    }

    /// Maps `pages` pages of a new memfd privately. Reads map the file's page
    /// cache pages (normal, present pages); a later write then takes a
    /// copy-on-write fault on a present page.
    pub fn map_private_file(pages: usize) -> io::Result<Self> {
        let len = pages * PAGE;
        // SAFETY: the name is a valid C string; flags are plain constants.
        let fd = unsafe { libc::memfd_create(c"hotpage-test".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just created and is owned here.
        let file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        // Real data, so every page exists in the page cache.
        io::Write::write_all(&mut &file, &vec![7u8; len])?;
        // SAFETY: maps the memfd just written; the mapping outlives the fd harmlessly.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(Self { ptr, len, map_base: ptr, map_len: len })
    }

    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn pages(&self) -> usize {
        self.len / PAGE
    }

    /// Address of page `i`.
    pub fn page_addr(&self, i: usize) -> u64 {
        self.addr() + (i * PAGE) as u64
    }

    /// Writes one byte to page `i` (a volatile store, so it really happens).
    pub fn touch(&self, i: usize, value: u8) {
        assert!(i < self.pages());
        // SAFETY: the offset is inside the mapping, which is readable and writable.
        unsafe { self.ptr.as_ptr().add(i * PAGE).write_volatile(value) };
    }

    /// Reads one byte of page `i`.
    pub fn read(&self, i: usize) -> u8 {
        assert!(i < self.pages());
        // SAFETY: as in touch().
        unsafe { self.ptr.as_ptr().add(i * PAGE).read_volatile() }
    }

    /// Disables transparent huge pages for the region (so faults are per 4 KiB page).
    pub fn no_huge_pages(&self) -> io::Result<()> {
        self.madvise(libc::MADV_NOHUGEPAGE)
    }

    pub fn madvise(&self, advice: libc::c_int) -> io::Result<()> {
        // SAFETY: the range is exactly this mapping.
        let rc = unsafe { libc::madvise(self.ptr.as_ptr().cast(), self.len, advice) };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping this value owns.
        unsafe { libc::munmap(self.map_base.as_ptr().cast(), self.map_len) };
    }
}
