//! `/proc/vmstat` counters (`pgpromote_success`, `numa_hint_faults`, ...), and
//! a node's own (`/sys/devices/system/node/nodeN/vmstat`).

use std::{collections::BTreeMap, path::Path};

use crate::sys::sysfs::{SysfsError, read_text};

/// All counters of `<root>/proc/vmstat`, by name.
pub fn read_vmstat(root: &Path) -> Result<BTreeMap<String, u64>, SysfsError> {
    Ok(parse_vmstat(&read_text(&root.join("proc/vmstat"))?))
}

/// The node counters of `<root>/sys/devices/system/node/node<nid>/vmstat`.
pub fn read_node_vmstat(root: &Path, nid: u32) -> Result<BTreeMap<String, u64>, SysfsError> {
    Ok(parse_vmstat(&read_text(&root.join(format!("sys/devices/system/node/node{nid}/vmstat")))?))
}

/// Pages the kernel's NUMA balancing promoted into each of `nodes` (the
/// target node's `pgpromote_success`), as far as they can be read.
pub fn kernel_promotions(root: &Path, nodes: impl IntoIterator<Item = u32>) -> BTreeMap<u32, u64> {
    nodes
        .into_iter()
        .filter_map(|n| Some((n, *read_node_vmstat(root, n).ok()?.get("pgpromote_success")?)))
        .collect()
}

pub fn parse_vmstat(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_owned(), v.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::cxl_box;

    #[test]
    fn reads_tiering_counters_from_the_box_capture() {
        let v = read_vmstat(&cxl_box()).unwrap();
        assert_eq!(v.get("pgpromote_success"), Some(&0));
        assert!(v.contains_key("numa_hint_faults"));
        assert!(v.contains_key("pgdemote_kswapd"));
    }

    #[test]
    fn kernel_promotions_come_from_each_nodes_own_vmstat() {
        let k = kernel_promotions(&cxl_box(), [0, 1, 7]);
        assert_eq!(k, BTreeMap::from([(0, 0), (1, 0)]), "node 7 does not exist");
        let n0 = read_node_vmstat(&cxl_box(), 0).unwrap();
        assert!(n0.contains_key("pgdemote_kswapd") && n0.contains_key("nr_free_pages"));
    }
}
