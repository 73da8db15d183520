//! `/sys/devices/system/node/nodeN/meminfo`: a node's memory, in kB.

use std::{collections::BTreeMap, path::Path};

use crate::sys::sysfs::{SysfsError, read_text};

/// `Node 1 MemFree:  1003260 kB` lines, by field name, in kB.
pub fn read_node_meminfo(root: &Path, nid: u32) -> Result<BTreeMap<String, u64>, SysfsError> {
    let path = root.join(format!("sys/devices/system/node/node{nid}/meminfo"));
    let text = read_text(&path)?;
    Ok(parse_node_meminfo(&text))
}

pub fn parse_node_meminfo(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            // "Node 1 MemFree:         1003260 kB"
            let mut w = l.split_whitespace();
            let (_, _, key, value) = (w.next()?, w.next()?, w.next()?, w.next()?);
            Some((key.trim_end_matches(':').to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::cxl_box;

    #[test]
    fn reads_the_box_node1() {
        let m = read_node_meminfo(&cxl_box(), 1).unwrap();
        assert_eq!(m["MemTotal"], 1030832);
        assert_eq!(m["MemFree"], 1003260);
        assert_eq!(m["HugePages_Total"], 0);
    }
}
