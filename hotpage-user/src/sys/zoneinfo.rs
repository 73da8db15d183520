//! `/proc/zoneinfo`: per-node, per-zone spans and watermarks.

use std::path::Path;

use crate::sys::sysfs::{SysfsError, read_text};

/// One zone of one node, as `/proc/zoneinfo` prints it. Counts are pages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Zone {
    pub node: u32,
    pub name: String,
    pub free: u64,
    pub min: u64,
    pub low: u64,
    pub high: u64,
    /// `WMARK_PROMO` (6.1+), the headroom NUMA-balancing promotion keeps free; 0 if absent.
    pub promo: u64,
    pub spanned: u64,
    pub present: u64,
    pub managed: u64,
    /// Absent for empty zones (the kernel prints no `start_pfn` for them).
    pub start_pfn: Option<u64>,
    /// The node's `node_unreclaimable` (printed once per node, in one of its
    /// zones): kswapd failed to reclaim so often that the kernel stopped
    /// waking it for the node; direct reclaim that makes progress resets it.
    pub node_unreclaimable: bool,
}

impl Zone {
    /// The pfn span `[start, end)` of a populated zone.
    pub fn span(&self) -> Option<(u64, u64)> {
        match self.start_pfn {
            Some(start) if self.spanned > 0 => Some((start, start + self.spanned)),
            _ => None,
        }
    }
}

/// Whether the kernel has stopped waking kswapd for node `nid`: the node's
/// `node_unreclaimable`, which zoneinfo prints in one of its zones.
pub fn node_unreclaimable(zones: &[Zone], nid: u32) -> bool {
    zones.iter().any(|z| z.node == nid && z.node_unreclaimable)
}

/// Reads `<root>/proc/zoneinfo`.
pub fn read_zoneinfo(root: &Path) -> Result<Vec<Zone>, SysfsError> {
    let path = root.join("proc/zoneinfo");
    let text = read_text(&path)?;
    Ok(parse_zoneinfo(&text))
}

/// Parses zoneinfo text; unknown lines are skipped, so new kernel fields do no harm.
pub fn parse_zoneinfo(text: &str) -> Vec<Zone> {
    let mut zones: Vec<Zone> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Node ") {
            // "Node 0, zone      DMA"
            let mut it = rest.splitn(2, ',');
            let node = it.next().and_then(|n| n.trim().parse().ok());
            let name = it.next().and_then(|z| z.trim().strip_prefix("zone")).map(|z| z.trim());
            if let (Some(node), Some(name)) = (node, name) {
                zones.push(Zone { node, name: name.to_owned(), ..Zone::default() });
            }
            continue;
        }
        let Some(zone) = zones.last_mut() else { continue };
        let mut words = line.split_whitespace();
        let (key, value) = match (words.next(), words.next(), words.next()) {
            (Some("pages"), Some("free"), Some(v)) => ("free", v),
            // Per-CPU pageset lines ("high:  5393") carry a colon; zone fields do not.
            (Some(k), Some(v), None) => (k, v),
            _ => continue,
        };
        let Ok(value) = value.parse::<u64>() else { continue };
        match key {
            "free" => zone.free = value,
            "min" => zone.min = value,
            "low" => zone.low = value,
            "high" => zone.high = value,
            "spanned" => zone.spanned = value,
            "present" => zone.present = value,
            "managed" => zone.managed = value,
            "start_pfn:" => zone.start_pfn = Some(value),
            "promo" => zone.promo = value,
            "node_unreclaimable:" => zone.node_unreclaimable = value != 0,
            _ => {}
        }
    }
    zones
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::cxl_box;

    #[test]
    fn reads_the_box_capture() {
        let zones = read_zoneinfo(&cxl_box()).unwrap();
        let dma32_1 = zones.iter().find(|z| z.node == 1 && z.name == "DMA32").unwrap();
        assert_eq!(dma32_1.start_pfn, Some(262144));
        assert_eq!(dma32_1.spanned, 262111);
        assert_eq!(dma32_1.span(), Some((262144, 262144 + 262111)));
        assert_eq!((dma32_1.min, dma32_1.low, dma32_1.high), (8630, 10787, 12944));
        assert_eq!(dma32_1.promo, 15101);
        assert_eq!(dma32_1.free, 250689);
        let normal0 = zones.iter().find(|z| z.node == 0 && z.name == "Normal").unwrap();
        assert_eq!(normal0.span(), None);
        assert!(!zones.iter().any(|z| z.node_unreclaimable));
        assert!(!node_unreclaimable(&zones, 0) && !node_unreclaimable(&zones, 1));
        let text = std::fs::read_to_string(cxl_box().join("proc/zoneinfo")).unwrap();
        let hopeless = parse_zoneinfo(&text.replacen("node_unreclaimable:  0", "node_unreclaimable:  1", 1));
        let flagged: Vec<u32> = hopeless.iter().filter(|z| z.node_unreclaimable).map(|z| z.node).collect();
        assert_eq!(flagged, [0]);
        assert!(node_unreclaimable(&hopeless, 0) && !node_unreclaimable(&hopeless, 1));
    }
}
