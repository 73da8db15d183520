//! Workloads for the box: memory placed on a node, then a hot subset of it
//! accessed, with the ground truth printed (and optionally written as JSON).

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use hotpage_tests::{
    memory::{PAGE, Region},
    workload::{HotSet, Rng, bind_to_node, gups, nodes_of, place_on_node, share_on},
};

#[derive(Parser)]
#[command(about = "hotpage test workloads")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// GUPS with a hot set: random 8-byte updates, most of them to a hot subset.
    HotSet {
        /// Node to place the whole region on first.
        #[arg(long, default_value_t = 1)]
        node: u32,
        #[arg(long, default_value_t = 256)]
        size_mib: usize,
        #[arg(long, default_value_t = 32)]
        hot_mib: usize,
        /// Share of updates that go to the hot set, in percent.
        #[arg(long, default_value_t = 90)]
        hot_percent: u64,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Allow transparent huge pages (default: 4 KiB pages only).
        #[arg(long)]
        thp: bool,
        /// Write the hot set's address range here as JSON.
        #[arg(long)]
        truth: Option<PathBuf>,
        /// After this many seconds of updates, the hot set moves to the start
        /// of the region (its new range is in the ground truth too).
        #[arg(long, value_name = "SECONDS")]
        move_at: Option<f64>,
        /// Leave the region bound to its node: NUMA balancing never scans it
        /// (no hint faults, nothing moves it). The no-migration baseline,
        /// without turning NUMA balancing off (which live-patches the kernel).
        #[arg(long)]
        keep_bound: bool,
    },
    /// Fill a node with anonymous memory until it has this many free pages
    /// left, print "filled", then hold the memory until killed.
    Fill {
        #[arg(long)]
        node: u32,
        #[arg(long)]
        leave_free_pages: u64,
    },
}

fn node_free_pages(node: u32) -> Result<u64> {
    let m = hotpage::sys::node_meminfo::read_node_meminfo(std::path::Path::new("/"), node)?;
    Ok(m.get("MemFree").copied().context("no MemFree")? / 4)
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Fill { node, leave_free_pages } => {
            let mut held = Vec::new();
            loop {
                let free = node_free_pages(node)?;
                if free <= leave_free_pages {
                    break;
                }
                let chunk = (free - leave_free_pages).min(4096) as usize;
                let r = Region::map(chunk * PAGE)?;
                r.no_huge_pages()?;
                place_on_node(&r, node)?;
                held.push(r);
            }
            println!("filled node {node}: {} pages free", node_free_pages(node)?);
            loop {
                std::thread::park();
            }
        }
        Cmd::HotSet { node, size_mib, hot_mib, hot_percent, seconds, thp, truth, move_at, keep_bound } => {
            if hot_mib == 0 || hot_mib > size_mib || hot_percent > 100 {
                bail!("need 0 < --hot-mib <= --size-mib and --hot-percent <= 100");
            }
            let region = Region::map(size_mib << 20).context("mapping the region")?;
            if !thp {
                region.no_huge_pages()?;
            }
            if keep_bound { bind_to_node(&region, node) } else { place_on_node(&region, node) }
                .with_context(|| format!("placing the region on node {node}"))?;
            let placed = share_on(&nodes_of(&region)?, node as i32);
            // The hot set sits in the middle of the region, page aligned.
            let hot = HotSet { first_page: (region.pages() - hot_mib * 256) / 2, pages: hot_mib * 256 };
            let hot_start = region.page_addr(hot.first_page);
            let hot_end = hot_start + (hot.pages * PAGE) as u64;
            println!(
                "workload: pid {} region {:#x}+{} MiB, {:.1}% on node {node}; hot set {hot_start:#x}..{hot_end:#x} \
                 ({hot_mib} MiB, {hot_percent}% of updates)",
                std::process::id(),
                region.addr(),
                size_mib,
                placed * 100.0
            );
            // The moved hot set: the start of the region, clear of the first one when it fits.
            let moved = HotSet { first_page: 0, pages: hot.pages };
            if move_at.is_some() && hot.first_page < moved.pages {
                bail!(
                    "--move-at needs --hot-mib at most a third of --size-mib, so the two hot sets do not overlap"
                );
            }
            if let Some(path) = truth {
                let moved_json = match move_at {
                    Some(t) => format!(
                        ",\"move_at_s\":{t},\"moved_hot\":[[{},{}]]",
                        region.page_addr(moved.first_page),
                        region.page_addr(moved.first_page) + (moved.pages * PAGE) as u64
                    ),
                    None => String::new(),
                };
                let json = format!(
                    "{{\"pid\":{},\"region\":[{},{}],\"hot\":[[{hot_start},{hot_end}]]{moved_json}}}\n",
                    std::process::id(),
                    region.addr(),
                    region.addr() + region.len() as u64
                );
                // Written whole, then renamed: a reader sees all of it or nothing.
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, json).with_context(|| format!("writing {}", tmp.display()))?;
                std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
            }
            let mut rng = Rng::new(0x5eed ^ u64::from(std::process::id()));
            let start = Instant::now();
            let end = start + Duration::from_secs(seconds);
            let ops = match move_at {
                Some(t) => {
                    let at = (start + Duration::from_secs_f64(t)).min(end);
                    gups(&region, &hot, hot_percent, &mut rng, at)
                        + gups(&region, &moved, hot_percent, &mut rng, end)
                }
                None => gups(&region, &hot, hot_percent, &mut rng, end),
            };
            let nodes = nodes_of(&region)?;
            let hot_nodes = &nodes[hot.first_page..hot.first_page + hot.pages];
            println!(
                "workload: {ops} updates in {:.1} s; hot set on node 0: {:.1}%, whole region on node 0: {:.1}%",
                start.elapsed().as_secs_f64(),
                share_on(hot_nodes, 0) * 100.0,
                share_on(&nodes, 0) * 100.0
            );
        }
    }
    Ok(())
}
