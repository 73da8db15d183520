//! `/proc/kpageflags`: one u64 of flags per pfn (Documentation/admin-guide/mm/
//! pagemap.rst), and from them the folio a pfn belongs to.

use std::{fs::File, io, os::unix::fs::FileExt, path::Path};

use hotpage_common::PMD_ORDER;

/// Flag bits (include/uapi/linux/kernel-page-flags.h).
pub mod kpf {
    pub const LRU: u64 = 1 << 5;
    pub const COMPOUND_HEAD: u64 = 1 << 15;
    pub const COMPOUND_TAIL: u64 = 1 << 16;
    pub const UNEVICTABLE: u64 = 1 << 18;
    /// Any large anonymous or file folio, not only PMD-sized ones.
    pub const THP: u64 = 1 << 22;
}

/// The folio a pfn belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Folio {
    /// Its first pfn.
    pub head: u64,
    /// log2 of its pages.
    pub order: u8,
}

/// An open `/proc/kpageflags`.
#[derive(Debug)]
pub struct KPageFlags {
    file: File,
}

impl KPageFlags {
    /// Opens `<root>/proc/kpageflags` (root only).
    pub fn open(root: &Path) -> io::Result<Self> {
        Ok(Self { file: File::open(root.join("proc/kpageflags"))? })
    }

    /// The flags of `pfn`.
    pub fn flags(&self, pfn: u64) -> io::Result<u64> {
        let mut buf = [0u8; 8];
        self.file.read_exact_at(&mut buf, pfn * 8)?;
        Ok(u64::from_le_bytes(buf))
    }

    /// The flags of `out.len()` consecutive pfns from `first`, with one read.
    pub fn flags_of_run(&self, first: u64, out: &mut [u64]) -> io::Result<()> {
        let mut buf = vec![0u8; out.len() * 8];
        self.file.read_exact_at(&mut buf, first * 8)?;
        decode(&buf, out);
        Ok(())
    }

    /// `flags_of_run()`, where the file may end inside the run (the last
    /// pfns of memory): entries past its end read as 0.
    fn flags_up_to_end(&self, first: u64, out: &mut [u64]) -> io::Result<()> {
        let mut buf = vec![0u8; out.len() * 8];
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], first * 8 + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        decode(&buf, out);
        Ok(())
    }

    /// The folio holding `pfn`: the pfn itself for a base page; for a large
    /// folio (THP or mTHP) its head and order, found in the PMD-sized window
    /// around the pfn, since folios are naturally aligned. One 8-byte read for
    /// a base page, one 4 KiB read more for a page of a large folio. None when
    /// the flags cannot be read, or the folio is larger than a PMD (its head
    /// lies outside the window) or changed under the reads.
    pub fn folio_of(&self, pfn: u64) -> io::Result<Option<Folio>> {
        let f = self.flags(pfn)?;
        if f & (kpf::COMPOUND_HEAD | kpf::COMPOUND_TAIL) == 0 {
            return Ok(Some(Folio { head: pfn, order: 0 }));
        }
        let span = 1u64 << PMD_ORDER;
        let base = pfn & !(span - 1);
        let mut window = vec![0u64; span as usize];
        self.flags_up_to_end(base, &mut window)?;
        Ok(folio_in_window(&window, (pfn - base) as usize)
            .map(|(head, order)| Folio { head: base + head as u64, order }))
    }
}

/// Little-endian u64s of `buf` into `out`.
fn decode(buf: &[u8], out: &mut [u64]) {
    for (o, b) in out.iter_mut().zip(buf.chunks_exact(8)) {
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        *o = u64::from_le_bytes(w);
    }
}

/// The head index and order of the folio holding `window[at]`, from the
/// head/tail flags of a naturally aligned window of pages.
fn folio_in_window(window: &[u64], at: usize) -> Option<(usize, u8)> {
    let flags = *window.get(at)?;
    let head = if flags & kpf::COMPOUND_HEAD != 0 {
        at
    } else if flags & kpf::COMPOUND_TAIL != 0 {
        (0..at).rev().find(|&i| window[i] & kpf::COMPOUND_HEAD != 0)?
    } else {
        return Some((at, 0));
    };
    let tails = window[head + 1..].iter().take_while(|&&f| f & kpf::COMPOUND_TAIL != 0).count();
    let pages = tails + 1;
    // A folio has a power-of-two size and its head at a multiple of it; and
    // the pfn asked about must be one of its pages.
    if !pages.is_power_of_two() || head % pages != 0 || at >= head + pages {
        return None;
    }
    Some((head, pages.trailing_zeros() as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = kpf::COMPOUND_HEAD | kpf::THP | kpf::LRU;
    const T: u64 = kpf::COMPOUND_TAIL | kpf::THP;

    /// A 512-page window: base pages, a 16-page folio at 32, a 4-page one at 64.
    fn window() -> Vec<u64> {
        let mut w = vec![kpf::LRU; 512];
        w[32] = H;
        w[33..48].fill(T);
        w[64] = H;
        w[65..68].fill(T);
        w
    }

    #[test]
    fn finds_head_and_order_from_any_page_of_a_folio() {
        let w = window();
        assert_eq!(folio_in_window(&w, 5), Some((5, 0)));
        assert_eq!(folio_in_window(&w, 32), Some((32, 4)));
        assert_eq!(folio_in_window(&w, 47), Some((32, 4)));
        assert_eq!(folio_in_window(&w, 66), Some((64, 2)));
        assert_eq!(folio_in_window(&w, 68), Some((68, 0)));
    }

    #[test]
    fn a_whole_pmd_thp_and_inconsistent_windows() {
        let mut w = vec![T; 512];
        w[0] = H;
        assert_eq!(folio_in_window(&w, 300), Some((0, 9)));
        // A tail with no head in the window: a folio larger than a PMD.
        assert_eq!(folio_in_window(&vec![T; 512], 3), None);
        // Not a power of two (changed between reads).
        let mut odd = window();
        odd[48] = T;
        assert_eq!(folio_in_window(&odd, 40), None);
    }

    #[test]
    fn reads_a_fixture_file_by_pfn() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        let file = File::create(dir.path().join("proc/kpageflags")).unwrap();
        // Window 3 (pfns 1536..2048) holds the test window.
        for (i, f) in window().iter().enumerate() {
            file.write_all_at(&f.to_le_bytes(), (1536 + i as u64) * 8).unwrap();
        }
        let k = KPageFlags::open(dir.path()).unwrap();
        assert_eq!(k.flags(1536 + 32).unwrap(), H);
        assert_eq!(k.folio_of(1536 + 40).unwrap(), Some(Folio { head: 1536 + 32, order: 4 }));
        assert_eq!(k.folio_of(1536 + 100).unwrap(), Some(Folio { head: 1536 + 100, order: 0 }));
        assert!(k.folio_of(1 << 40).is_err(), "past the end");
    }
}
