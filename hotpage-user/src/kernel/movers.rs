//! Other things that move pages between tiers, which hotpage must not fight:
//! DAMON schemes with `migrate_hot`/`migrate_cold` actions, and the kernel's
//! own NUMA-balancing promotion when hotpage does not hold it back.

use std::path::Path;

use crate::{
    kernel::settings::{NUMA_BALANCING, NUMA_BALANCING_MEMORY_TIERING, PROMOTE_RATE_LIMIT},
    sys::sysfs::{numbered_entries, read_text, read_u64},
};

/// DAMON's sysfs directory of kdamonds, relative to the root.
pub const DAMON_KDAMONDS: &str = "sys/kernel/mm/damon/admin/kdamonds";

/// Running DAMON schemes that migrate between tiers, as one line each.
pub fn damon_migrations(root: &Path) -> Vec<String> {
    let dir = root.join(DAMON_KDAMONDS);
    let mut found = Vec::new();
    for k in numbered_entries(&dir, "").unwrap_or_default() {
        let kd = dir.join(k.to_string());
        if read_text(&kd.join("state")).map(|s| s.trim() != "on").unwrap_or(true) {
            continue;
        }
        let contexts = kd.join("contexts");
        for c in numbered_entries(&contexts, "").unwrap_or_default() {
            let schemes = contexts.join(c.to_string()).join("schemes");
            for s in numbered_entries(&schemes, "").unwrap_or_default() {
                let action = read_text(&schemes.join(s.to_string()).join("action")).unwrap_or_default();
                let action = action.trim();
                if action == "migrate_hot" || action == "migrate_cold" {
                    found.push(format!(
                        "DAMON kdamond {k} runs a {action} scheme (context {c}, scheme {s}): it moves pages between \
                         tiers too; turn it off (echo off > {}/state) or run hotpage with --observe-only",
                        kd.display()
                    ));
                }
            }
        }
    }
    found
}

/// The kernel promotes pages itself: tiering mode on with a non-zero rate limit.
pub fn kernel_promotes(root: &Path) -> bool {
    let mode = read_u64(&root.join(NUMA_BALANCING)).unwrap_or(0);
    let rate = read_u64(&root.join(PROMOTE_RATE_LIMIT)).unwrap_or(0);
    mode & NUMA_BALANCING_MEMORY_TIERING != 0 && rate > 0
}

/// A top-tier node free enough for NUMA balancing to skip its rate limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FreeEnough {
    pub node: u32,
    pub free_pages: u64,
    pub threshold_pages: u64,
}

impl std::fmt::Display for FreeEnough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "node {n} has {} MiB free, more than the {} MiB above which NUMA balancing promotes every \
             hint-faulted page whatever its rate limit: the kernel promotes beside hotpage until node {n} fills",
            self.free_pages >> 8,
            self.threshold_pages >> 8,
            n = self.node
        )
    }
}

/// Top-tier nodes with so much free memory that NUMA balancing promotes
/// lower-tier pages on every hint fault, whatever its rate limit: the kernel
/// checks "free space enough" (a zone's free pages above its promotion
/// watermark plus max(1 GiB, 1/16 of the node)) before it looks at the rate
/// limit. Measured in the box: with node 0 at 2 GiB, mode 2 and a rate limit
/// of 0 still promoted 512 MiB.
pub fn kernel_promotes_freely(root: &Path, top_tier: &[u32]) -> Vec<FreeEnough> {
    let Ok(zones) = crate::sys::zoneinfo::read_zoneinfo(root) else { return Vec::new() };
    let mut out = Vec::new();
    for &nid in top_tier {
        let mine: Vec<_> = zones.iter().filter(|z| z.node == nid && z.present > 0).collect();
        let present: u64 = mine.iter().map(|z| z.present).sum();
        let enough = (1u64 << 18).max(present >> 4);
        if let Some(z) = mine.iter().find(|z| z.free > z.promo.max(z.high) + enough) {
            out.push(FreeEnough {
                node: nid,
                free_pages: z.free,
                threshold_pages: z.promo.max(z.high) + enough,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn finds_running_migrate_schemes_only() {
        let root = std::env::temp_dir().join(format!("hotpage-damon-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let kd = |k: u32, state: &str, action: &str| {
            let d = root.join(DAMON_KDAMONDS).join(k.to_string());
            fs::create_dir_all(d.join("contexts/0/schemes/0")).unwrap();
            fs::write(d.join("state"), format!("{state}\n")).unwrap();
            fs::write(d.join("contexts/0/schemes/0/action"), format!("{action}\n")).unwrap();
        };
        kd(0, "on", "migrate_hot");
        kd(1, "off", "migrate_cold");
        kd(2, "on", "pageout");
        let found = damon_migrations(&root);
        let _ = fs::remove_dir_all(&root);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("DAMON kdamond 0 runs a migrate_hot scheme"), "{}", found[0]);
        assert!(damon_migrations(Path::new("/nonexistent")).is_empty());
    }

    #[test]
    fn a_top_tier_node_with_little_free_memory_holds_the_kernel_to_its_rate_limit() {
        // The box capture: node 0 has 1 GiB, so max(1 GiB, 1/16) plus the
        // watermark is more than it could ever have free.
        assert!(kernel_promotes_freely(&crate::test_fixtures::cxl_box(), &[0]).is_empty());
        let root = std::env::temp_dir().join(format!("hotpage-zoneinfo-{}", std::process::id()));
        fs::create_dir_all(root.join("proc")).unwrap();
        let zone = |free: u64| {
            format!(
                "Node 0, zone   Normal\n  pages free     {free}\n        min      1000\n        low      1200\n        \
                 high     1400\n        promo    1600\n        spanned  4194304\n        present  4194304\n        \
                 managed  4100000\n  start_pfn:           1048576\n"
            )
        };
        // 16 GiB node: threshold 1600 + 1 GiB (262144 pages) = 263744 pages.
        fs::write(root.join("proc/zoneinfo"), zone(3_000_000)).unwrap();
        assert_eq!(
            kernel_promotes_freely(&root, &[0]),
            vec![FreeEnough { node: 0, free_pages: 3_000_000, threshold_pages: 263_744 }]
        );
        fs::write(root.join("proc/zoneinfo"), zone(200_000)).unwrap();
        assert!(kernel_promotes_freely(&root, &[0]).is_empty());
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn the_box_capture_has_no_kernel_promotion_in_mode_1() {
        assert!(!kernel_promotes(&crate::test_fixtures::cxl_box()), "mode 1 does not promote between tiers");
        assert!(kernel_promotes(&crate::test_fixtures::two_socket_cxl()), "mode 2 with 65536 MB/s does");
    }
}
