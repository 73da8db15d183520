//! Other things that move pages between tiers, which hotpage must not fight:
//! DAMON schemes with `migrate_hot`/`migrate_cold` actions, and the kernel's
//! own NUMA-balancing promotion when hotpage does not hold it back.

use std::path::Path;

use crate::{
    kernel_settings::{NUMA_BALANCING, NUMA_BALANCING_MEMORY_TIERING, PROMOTE_RATE_LIMIT},
    sysfs::{numbered_entries, read_text, read_u64},
};

const DAMON_KDAMONDS: &str = "sys/kernel/mm/damon/admin/kdamonds";

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
    fn the_box_capture_has_no_kernel_promotion_in_mode_1() {
        assert!(!kernel_promotes(&crate::test_fixtures::cxl_box()), "mode 1 does not promote between tiers");
        assert!(kernel_promotes(&crate::test_fixtures::two_socket_cxl()), "mode 2 with 65536 MB/s does");
    }
}
