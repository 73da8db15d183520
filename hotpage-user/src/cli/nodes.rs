//! `hotpage nodes`: NUMA nodes and memory tiers as the kernel sees them, with
//! size, free memory and pages in use per node (numastat-like). No daemon needed.

use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

use crate::{
    report::{node_memory, table},
    sys::topology::TierTopology,
};

#[derive(Debug, Args)]
pub struct NodesArgs {
    /// JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct NodeLine {
    node: u32,
    tier: Option<u32>,
    top_tier: bool,
    cpus: Vec<u32>,
    /// Where its hot pages go (lower tier only).
    promotes_to: Option<u32>,
    total_bytes: u64,
    free_bytes: u64,
    used_bytes: u64,
    /// SLIT distances to every online node, in node order.
    distances: Vec<u32>,
}

fn lines(root: &Path) -> Result<(TierTopology, Vec<NodeLine>)> {
    let topo = TierTopology::read(root).context("reading the NUMA topology")?;
    let lines = topo
        .nodes
        .iter()
        .map(|n| {
            let (total, free) = node_memory(root, n.id);
            NodeLine {
                node: n.id,
                tier: n.tier,
                top_tier: n.top_tier,
                cpus: n.cpus.clone(),
                promotes_to: if n.top_tier { None } else { topo.nearest_top_tier(n.id) },
                total_bytes: total,
                free_bytes: free,
                used_bytes: total.saturating_sub(free),
                distances: topo.nodes.iter().map(|m| n.distance_to(m.id).unwrap_or(0)).collect(),
            }
        })
        .collect();
    Ok((topo, lines))
}

pub fn run(root: &Path, args: NodesArgs) -> Result<()> {
    let (topo, nodes) = lines(root)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&serde_json::json!({ "tiering": topo.tiering, "nodes": nodes }))?
        );
        return Ok(());
    }
    print!("{}", render(&topo, &nodes));
    Ok(())
}

fn render(topo: &TierTopology, nodes: &[NodeLine]) -> String {
    let mut header = vec!["NODE", "TIER", "ROLE", "CPUS", "PROMOTES TO", "SIZE MiB", "FREE MiB", "USED MiB"];
    let dist: Vec<String> = topo.nodes.iter().map(|n| format!("DIST n{}", n.id)).collect();
    header.extend(dist.iter().map(String::as_str));
    let mut t = table::table(&header);
    for n in nodes {
        let mut row = vec![
            n.node.to_string(),
            n.tier.map_or("-".into(), |t| format!("memory_tier{t}")),
            if n.top_tier { "top".into() } else { "lower".into() },
            if n.cpus.is_empty() { "none".into() } else { n.cpus.len().to_string() },
            n.promotes_to.map_or("-".into(), |t| format!("node {t}")),
            table::mib(n.total_bytes),
            table::mib(n.free_bytes),
            table::mib(n.used_bytes),
        ];
        row.extend(n.distances.iter().map(u32::to_string));
        t.add_row(row);
    }
    let mut out = t.to_string() + "\n";
    if !topo.tiering {
        out += "this kernel has no memory tiers (/sys/devices/virtual/memory_tiering): hotpage needs Linux 6.1+\n";
    } else if topo.lower_tier_nodes().next().is_none() {
        out += "no node is in a lower memory tier: there is nothing to promote from\n";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::{cxl_box, no_tiering, single_node, two_socket_cxl};

    #[test]
    fn the_box_shows_node1_promoting_to_node0() {
        let (topo, nodes) = lines(&cxl_box()).unwrap();
        let text = render(&topo, &nodes);
        let row1 = text.lines().find(|l| l.trim_start().starts_with("1 ")).unwrap();
        assert!(
            row1.contains("memory_tier56") && row1.contains("lower") && row1.contains("node 0"),
            "{text}"
        );
        assert!(row1.contains("none"), "node 1 has no CPUs: {row1}");
        assert!(nodes[1].total_bytes > 0 && nodes[1].used_bytes <= nodes[1].total_bytes);
        assert_eq!(nodes[0].distances, vec![10, 20]);
    }

    #[test]
    fn the_cxl_server_promotes_to_its_nearest_socket() {
        let (_, nodes) = lines(&two_socket_cxl()).unwrap();
        let lower: Vec<_> = nodes.iter().filter(|n| !n.top_tier).collect();
        assert_eq!(lower.len(), 1);
        assert!(lower[0].promotes_to.is_some());
        assert!(nodes.iter().filter(|n| n.top_tier).all(|n| n.promotes_to.is_none()));
    }

    #[test]
    fn single_tier_machines_say_so() {
        let (topo, nodes) = lines(&single_node()).unwrap();
        assert!(render(&topo, &nodes).contains("no node is in a lower memory tier"));
        let (topo, nodes) = lines(&no_tiering()).unwrap();
        assert!(render(&topo, &nodes).contains("no memory tiers"));
    }
}
