//! Which processes the kdamond monitors: the ones holding the most
//! lower-tier memory, counted from each process's `numa_maps` (only for
//! processes whose resident set could hold that much: reading `numa_maps`
//! walks the process's page tables).

use std::path::Path;

/// Lower-tier pages (base pages) in one `numa_maps` text.
pub fn lower_tier_pages(numa_maps: &str, lower: &[u32]) -> u64 {
    numa_maps
        .lines()
        .map(|line| {
            let words = line.split_whitespace();
            let mut pages = 0u64;
            let mut page_kb = 4u64;
            for w in words {
                if let Some(kb) = w.strip_prefix("kernelpagesize_kB=") {
                    page_kb = kb.parse().unwrap_or(4);
                } else if let Some((node, n)) = w.strip_prefix('N').and_then(|r| r.split_once('='))
                    && let (Ok(node), Ok(n)) = (node.parse::<u32>(), n.parse::<u64>())
                    && lower.contains(&node)
                {
                    pages += n;
                }
            }
            pages * (page_kb / 4).max(1)
        })
        .sum()
}

/// Processes with at least `min_pages` lower-tier pages, most first, at most
/// `max`; hotpage itself excluded.
pub fn lower_tier_users(root: &Path, lower: &[u32], min_pages: u64, max: usize) -> Vec<(u32, u64)> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir(root.join("proc")) else { return Vec::new() };
    let mut found: Vec<(u32, u64)> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            // statm's second field: resident pages (kernel threads have none).
            std::fs::read_to_string(root.join(format!("proc/{pid}/statm")))
                .ok()
                .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
                .is_some_and(|rss| rss >= min_pages)
        })
        .filter_map(|pid| {
            let text = std::fs::read_to_string(root.join(format!("proc/{pid}/numa_maps"))).ok()?;
            let pages = lower_tier_pages(&text, lower);
            (pages >= min_pages.max(1)).then_some((pid, pages))
        })
        .collect();
    found.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    found.truncate(max);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000 default file=/usr/bin/prog mapped=3 N0=3 kernelpagesize_kB=4
7f0000000000 default anon=16384 dirty=16384 N0=4096 N1=12288 kernelpagesize_kB=4
7f1000000000 default anon=1024 dirty=1024 N1=2 kernelpagesize_kB=2048
7ffd00000000 default stack anon=3 dirty=3 N0=3 kernelpagesize_kB=4
";

    #[test]
    fn counts_lower_tier_pages_in_base_pages() {
        assert_eq!(lower_tier_pages(MAPS, &[1]), 12288 + 2 * 512);
        assert_eq!(lower_tier_pages(MAPS, &[0]), 3 + 4096 + 3);
        assert_eq!(lower_tier_pages(MAPS, &[2]), 0);
        assert_eq!(lower_tier_pages("garbage N1=x Nfoo=3 N1=\n", &[1]), 0);
    }

    #[test]
    fn picks_the_processes_with_the_most_lower_tier_memory() {
        let root = tempfile::tempdir().unwrap();
        let proc = |pid: u32, rss: u64, maps: &str| {
            let d = root.path().join(format!("proc/{pid}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("statm"), format!("100000 {rss} 10 1 0 100 0\n")).unwrap();
            std::fs::write(d.join("numa_maps"), maps).unwrap();
        };
        proc(10, 20000, MAPS);
        proc(11, 5000, "7f0 default anon=5000 N1=5000 kernelpagesize_kB=4\n");
        proc(12, 100, "7f0 default anon=100 N1=100 kernelpagesize_kB=4\n");
        // A kernel thread: no resident set.
        proc(2, 0, "");
        std::fs::create_dir_all(root.path().join("proc/sys")).unwrap();
        let users = lower_tier_users(root.path(), &[1], 1024, 8);
        assert_eq!(users, vec![(10, 12288 + 1024), (11, 5000)]);
        assert_eq!(lower_tier_users(root.path(), &[1], 1024, 1), vec![(10, 12288 + 1024)]);
    }
}
