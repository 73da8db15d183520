//! `/proc/vmstat` counters (`pgpromote_success`, `numa_hint_faults`, ...).

use std::{collections::BTreeMap, path::Path};

use crate::sysfs::{SysfsError, read_text};

/// All counters of `<root>/proc/vmstat`, by name.
pub fn read_vmstat(root: &Path) -> Result<BTreeMap<String, u64>, SysfsError> {
    Ok(parse_vmstat(&read_text(&root.join("proc/vmstat"))?))
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
}
