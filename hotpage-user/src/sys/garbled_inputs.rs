//! Property tests: every /proc and /sys reader on real captures with one
//! file truncated, garbled or emptied. A reader may refuse (one line naming
//! the file), never panic, and what it returns must still be usable.

use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::{node_meminfo::read_node_meminfo, topology::TierTopology, vmstat, zoneinfo::read_zoneinfo};
use crate::test_fixtures::{copy_tree, cxl_box, two_socket_cxl};

/// Every file under `dir`, sorted (so a case's index always picks the same one).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() { stack.push(p) } else { out.push(p) }
        }
    }
    out.sort();
    out
}

#[derive(Clone, Debug)]
enum Damage {
    /// Cut at this share of the length (a short read, a file being rewritten).
    Truncate(f64),
    /// Overwrite bytes at these shares of the length.
    Garble(Vec<(f64, u8)>),
    Empty,
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (0.0..1.0f64).prop_map(Damage::Truncate),
        proptest::collection::vec((0.0..1.0f64, any::<u8>()), 1..8).prop_map(Damage::Garble),
        Just(Damage::Empty),
    ]
}

fn apply(path: &Path, d: &Damage) {
    let mut bytes = std::fs::read(path).unwrap();
    match d {
        Damage::Truncate(share) => bytes.truncate((bytes.len() as f64 * share) as usize),
        Damage::Garble(at) => {
            for &(share, b) in at {
                if !bytes.is_empty() {
                    let i = ((bytes.len() as f64 * share) as usize).min(bytes.len() - 1);
                    bytes[i] = b;
                }
            }
        }
        Damage::Empty => bytes.clear(),
    }
    std::fs::write(path, bytes).unwrap();
}

fn one_line(e: impl std::fmt::Display) -> Result<(), TestCaseError> {
    let msg = e.to_string();
    prop_assert!(!msg.is_empty() && !msg.contains('\n'), "{msg:?}");
    Ok(())
}

/// Every reader a run starts with, and what it derives from them.
fn read_everything(root: &Path) -> Result<(), TestCaseError> {
    match TierTopology::read(root) {
        Ok(topo) => {
            if let Err(e) = topo.require_lower_tier(root) {
                one_line(e)?;
            }
            match topo.lower_tier_ranges() {
                Ok(ranges) => prop_assert!(ranges.iter().all(|r| r.start_pfn <= r.end_pfn)),
                Err(e) => one_line(e)?,
            }
            for n in topo.lower_tier_nodes() {
                let _ = topo.nearest_top_tier(n.id);
            }
        }
        Err(e) => one_line(e)?,
    }
    for nid in 0..3 {
        if let Err(e) = read_node_meminfo(root, nid) {
            one_line(e)?;
        }
        if let Err(e) = vmstat::read_node_vmstat(root, nid) {
            one_line(e)?;
        }
    }
    if let Err(e) = vmstat::read_vmstat(root) {
        one_line(e)?;
    }
    if let Err(e) = read_zoneinfo(root) {
        one_line(e)?;
    }
    let _ = crate::kernel::release(root);
    Ok(())
}

thread_local! {
    /// One working copy of each capture per test thread: a case damages a
    /// file, reads, and puts the file back (copying thousands of memory-block
    /// files per case would be most of the test's time).
    static COPIES: std::cell::RefCell<Vec<(PathBuf, tempfile::TempDir, Vec<PathBuf>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

fn damaged_capture(capture: PathBuf, pick: usize, d: &Damage) -> Result<(), TestCaseError> {
    COPIES.with_borrow_mut(|copies| {
        if !copies.iter().any(|(c, ..)| *c == capture) {
            let dir = tempfile::tempdir().unwrap();
            copy_tree(&capture, dir.path());
            let all = files(dir.path());
            copies.push((capture.clone(), dir, all));
        }
        let (_, dir, all) = copies.iter().find(|(c, ..)| *c == capture).unwrap();
        let victim = &all[pick % all.len()];
        let original = std::fs::read(victim).unwrap();
        apply(victim, d);
        let result = read_everything(dir.path());
        std::fs::write(victim, original).unwrap();
        result
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_cxl_box_capture_with_one_damaged_file(pick in any::<usize>(), d in damage()) {
        damaged_capture(cxl_box(), pick, &d)?;
    }

    #[test]
    fn the_two_socket_capture_with_one_damaged_file(pick in any::<usize>(), d in damage()) {
        damaged_capture(two_socket_cxl(), pick, &d)?;
    }
}

#[test]
fn the_undamaged_captures_read_whole() {
    for capture in [cxl_box(), two_socket_cxl()] {
        let topo = TierTopology::read(&capture).unwrap();
        assert!(!topo.lower_tier_ranges().unwrap().is_empty(), "{}", capture.display());
        read_everything(&capture).unwrap();
    }
}
