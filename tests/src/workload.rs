//! Workloads for the box: memory placed on a chosen node, then accessed with a
//! known hot set, so tests and benchmarks know the ground truth.

use std::{io, time::Instant};

use hotpage::promoter::move_pages::page_nodes;

use crate::memory::{PAGE, Region};

const MPOL_DEFAULT: i32 = 0;
const MPOL_BIND: i32 = 2;

/// `mbind(2)` for a whole region; `nodes` empty with MPOL_DEFAULT.
fn mbind(region: &Region, mode: i32, nodes: &[u32]) -> io::Result<()> {
    let mut mask: u64 = 0;
    for &n in nodes {
        if n >= 64 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "node ids up to 63 only"));
        }
        mask |= 1 << n;
    }
    let (mask_ptr, maxnode) =
        if nodes.is_empty() { (std::ptr::null(), 0) } else { (&mask as *const u64, 65) };
    // SAFETY: the range is the region's own mapping; mask_ptr is NULL or a valid u64.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            region.addr() as usize,
            region.len(),
            mode,
            mask_ptr,
            maxnode as libc::c_ulong,
            0u32,
        )
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Puts every page of the region on `node` by first touch under
/// `MPOL_BIND`, then drops the policy: the kernel never scans memory under a
/// bind policy, so without this the pages would get no hint faults.
pub fn place_on_node(region: &Region, node: u32) -> io::Result<()> {
    bind_to_node(region, node)?;
    mbind(region, MPOL_DEFAULT, &[])
}

/// Places the region on `node` and leaves it bound there (MPOL_BIND): NUMA
/// balancing never scans such memory, so it takes no hint faults and no
/// tiering moves it.
pub fn bind_to_node(region: &Region, node: u32) -> io::Result<()> {
    mbind(region, MPOL_BIND, &[node])?;
    for i in 0..region.pages() {
        region.touch(i, 1);
    }
    Ok(())
}

/// Node of every page of the region (negative errno for pages not present).
pub fn nodes_of(region: &Region) -> io::Result<Vec<i32>> {
    let pages: Vec<u64> = (0..region.pages()).map(|i| region.page_addr(i)).collect();
    let mut out = Vec::with_capacity(pages.len());
    for chunk in pages.chunks(4096) {
        out.extend(page_nodes(chunk)?);
    }
    Ok(out)
}

/// Share (0..=1) of `nodes` equal to `node`.
pub fn share_on(nodes: &[i32], node: i32) -> f64 {
    if nodes.is_empty() {
        return 0.0;
    }
    nodes.iter().filter(|&&n| n == node).count() as f64 / nodes.len() as f64
}

/// xorshift64*: fast, deterministic.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// GUPS-style updates: random 8-byte increments, `hot_percent`% of them into
/// pages `hot` (a page range), the rest anywhere in the region.
pub struct HotSet {
    pub first_page: usize,
    pub pages: usize,
}

pub fn gups(region: &Region, hot: &HotSet, hot_percent: u64, rng: &mut Rng, until: Instant) -> u64 {
    let words = (region.len() / 8) as u64;
    let hot_first = (hot.first_page * PAGE / 8) as u64;
    let hot_words = (hot.pages * PAGE / 8) as u64;
    let base = region.addr() as *mut u64;
    let mut done = 0u64;
    while Instant::now() < until {
        for _ in 0..65536 {
            let w = if rng.below(100) < hot_percent {
                hot_first + rng.below(hot_words)
            } else {
                rng.below(words)
            };
            // SAFETY: w < words, so the word lies inside the mapping.
            unsafe {
                let p = base.add(w as usize);
                p.write_volatile(p.read_volatile().wrapping_add(1));
            }
        }
        done += 65536;
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_below_stays_in_range() {
        let mut r = Rng::new(7);
        for _ in 0..10_000 {
            assert!(r.below(13) < 13);
        }
    }

    #[test]
    fn share_counts_exact_node() {
        assert_eq!(share_on(&[1, 1, 0, -2], 1), 0.5);
        assert_eq!(share_on(&[], 0), 0.0);
    }
}
