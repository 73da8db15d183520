//! `move_pages(2)` behind one safe wrapper: the only way hotpage moves memory.

use std::io;

/// `MPOL_MF_MOVE`: move pages mapped only by this process.
pub const MPOL_MF_MOVE: i32 = 1 << 1;
/// `MPOL_MF_MOVE_ALL`: also pages other processes map (needs CAP_SYS_NICE).
pub const MPOL_MF_MOVE_ALL: i32 = 1 << 2;

/// Moves `pages` (virtual addresses in process `pid`, 0 = the caller) to
/// `nodes` (one per page), or with `nodes = None` only asks where each page is.
/// `status[i]` receives the page's node, or a negative errno for that page.
/// Returns the number of pages the kernel did not migrate (the positive return
/// value of the syscall); an error means the call as a whole failed.
pub fn move_pages(
    pid: u32,
    pages: &[u64],
    nodes: Option<&[i32]>,
    status: &mut [i32],
    flags: i32,
) -> io::Result<u64> {
    if status.len() != pages.len() || nodes.is_some_and(|n| n.len() != pages.len()) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "pages, nodes and status differ in length"));
    }
    if pages.is_empty() {
        return Ok(0);
    }
    // SAFETY: the pointers come from slices of `pages.len()` elements each
    // (checked above); the kernel reads pages/nodes and writes status.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_pages,
            pid as libc::c_long,
            pages.len() as libc::c_ulong,
            pages.as_ptr(),
            nodes.map_or(std::ptr::null(), |n| n.as_ptr()),
            status.as_mut_ptr(),
            flags as libc::c_long,
        )
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc as u64) }
}

/// The node of each page of the calling process (`-errno` where it has none,
/// e.g. `-ENOENT` for a page never touched).
pub fn page_nodes(pages: &[u64]) -> io::Result<Vec<i32>> {
    let mut status = vec![0; pages.len()];
    move_pages(0, pages, None, &mut status, 0)?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_where_pages_are() {
        let buf = vec![1u8; 3 * 4096];
        let page = (buf.as_ptr() as u64 + 4095) & !4095;
        let nodes = page_nodes(&[page]).unwrap();
        assert!(nodes[0] >= 0, "a touched page sits on some node: {nodes:?}");
        // A page of the zero-size gap below the heap is not mapped.
        let st = page_nodes(&[4096]).unwrap();
        assert!(st[0] < 0);
    }

    #[test]
    fn rejects_mismatched_lengths() {
        let err = move_pages(0, &[0, 4096], None, &mut [0], 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
