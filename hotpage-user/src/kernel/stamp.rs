//! Where the running kernel keeps a lower-tier folio's NUMA scan stamp, so
//! the hint-fault program can turn it into a scan-to-fault latency.
//!
//! The stamp sits in the `LAST_CPUPID` bits of `folio->flags`, whose position
//! follows from compile-time widths (`include/linux/page-flags-layout.h`,
//! `mmzone.h`) that BTF does not hold as numbers. They are derived from what
//! it does hold: enum sizes and array lengths (`__NR_PAGEFLAGS`,
//! `__MAX_NR_ZONES`, `zonelist._zonerefs`, `lru_gen_folio`), plus the exact
//! `NR_CPUS` from sysfs. The program checks the node bits of every word it
//! reads against the page's node, so a wrong derivation shows as a counter,
//! never as wrong latencies.

use std::path::Path;

use btf_rs::{Btf, Type};
use hotpage_common::{StampLayout, stamp_word};
use thiserror::Error;

use super::hz::{HzError, kernel_hz};
use crate::sys::sysfs::read_u64;

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum StampError {
    #[error("this kernel has no NUMA balancing (task_numa_fault is not in its BTF), so no scan stamp")]
    NoNumaBalancing,
    #[error("kernel BTF lacks {0}, needed to place the scan stamp in folio->flags")]
    Missing(&'static str),
    #[error(
        "this kernel uses classic SPARSEMEM (no vmemmap), whose section bits in folio->flags cannot be \
         derived from BTF"
    )]
    NoVmemmap,
    #[error("{0}")]
    Inconsistent(String),
    #[error("{0}")]
    Hz(#[from] HzError),
}

/// The compile-time facts `page-flags-layout.h` works from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlagsFacts {
    /// `__NR_PAGEFLAGS`.
    pub nr_pageflags: u32,
    /// `__MAX_NR_ZONES`.
    pub max_nr_zones: u32,
    /// `MAX_NUMNODES`.
    pub max_numnodes: u32,
    /// `CONFIG_NR_CPUS`.
    pub nr_cpus: u32,
    /// `(MAX_NR_GENS, MAX_NR_TIERS)` with `CONFIG_LRU_GEN`.
    pub lru_gen: Option<(u32, u32)>,
    /// `CONFIG_SPARSEMEM_VMEMMAP`: no section bits in `flags`.
    pub vmemmap: bool,
    /// `folio->_last_cpupid` exists (`LAST_CPUPID_NOT_IN_PAGE_FLAGS`).
    pub last_cpupid_field: bool,
}

/// `order_base_2()`: bits to hold `n` distinct values.
fn order_base_2(n: u32) -> u32 {
    if n <= 1 { 0 } else { 32 - (n - 1).leading_zeros() }
}

impl FlagsFacts {
    /// The stamp's place, as `page-flags-layout.h` computes it on 64-bit.
    pub fn layout(&self, hz: u32) -> Result<StampLayout, StampError> {
        if !self.vmemmap {
            return Err(StampError::NoVmemmap);
        }
        let sections = 0;
        let zones = match self.max_nr_zones {
            0..=1 => 0,
            2 => 1,
            3..=4 => 2,
            5..=8 => 3,
            n => return Err(StampError::Inconsistent(format!("__MAX_NR_ZONES {n} is more than 8"))),
        };
        if !self.max_numnodes.is_power_of_two() {
            return Err(StampError::Inconsistent(format!(
                "MAX_NUMNODES {} is not a power of two",
                self.max_numnodes
            )));
        }
        let nodes_shift = self.max_numnodes.trailing_zeros();
        let (lru_gen, lru_refs) = match self.lru_gen {
            Some((gens, tiers)) => (order_base_2(gens + 1), tiers.saturating_sub(2)),
            None => (0, 0),
        };
        let cpupid_shift = 8 + order_base_2(self.nr_cpus);
        let avail = 64u32.checked_sub(self.nr_pageflags).ok_or_else(|| {
            StampError::Inconsistent(format!("__NR_PAGEFLAGS {} is more than 64", self.nr_pageflags))
        })?;
        let nodes = if zones + lru_gen + sections + nodes_shift <= avail { nodes_shift } else { 0 };
        let cpupid =
            if zones + lru_gen + sections + nodes + cpupid_shift <= avail { cpupid_shift } else { 0 };
        let _ = lru_refs; // below the stamp: it does not move it
        if (cpupid == 0) != self.last_cpupid_field {
            return Err(StampError::Inconsistent(format!(
                "the derived layout puts last_cpupid {} folio->flags, but the BTF {} a _last_cpupid field",
                if cpupid == 0 { "outside" } else { "in" },
                if self.last_cpupid_field { "has" } else { "has no" }
            )));
        }
        let node_shift = 64 - sections - nodes;
        let zones_shift = node_shift - zones;
        let buckets = 12u32.saturating_sub(cpupid_shift);
        let (word, shift) = if cpupid == 0 {
            (stamp_word::LAST_CPUPID, 0)
        } else {
            (stamp_word::FLAGS, zones_shift - cpupid)
        };
        Ok(StampLayout {
            word,
            shift,
            bits: cpupid_shift,
            buckets,
            node_shift,
            node_bits: nodes,
            hz,
            reserved: 0,
        })
    }

    /// Reads the facts from the kernel's BTF; `NR_CPUS` from sysfs under
    /// `root` (`kernel_max` is `NR_CPUS - 1` exactly; the BTF gives it only
    /// rounded up to 64).
    pub fn from_btf(btf: &Btf, root: &Path) -> Result<Self, StampError> {
        if !has_func(btf, "task_numa_fault") {
            return Err(StampError::NoNumaBalancing);
        }
        let nr_pageflags =
            enum_value(btf, "pageflags", "__NR_PAGEFLAGS").ok_or(StampError::Missing("__NR_PAGEFLAGS"))?;
        let max_nr_zones =
            enum_value(btf, "zone_type", "__MAX_NR_ZONES").ok_or(StampError::Missing("__MAX_NR_ZONES"))?;
        // _zonerefs[MAX_ZONES_PER_ZONELIST + 1], MAX_ZONES_PER_ZONELIST = MAX_NUMNODES * MAX_NR_ZONES.
        let zonerefs = member_elems(btf, "zonelist", "_zonerefs")
            .ok_or(StampError::Missing("struct zonelist._zonerefs"))?;
        if max_nr_zones == 0 || zonerefs == 0 || (zonerefs - 1) % max_nr_zones != 0 {
            return Err(StampError::Inconsistent(format!(
                "zonelist._zonerefs has {zonerefs} entries, not a multiple of {max_nr_zones} zones plus one"
            )));
        }
        let max_numnodes = (zonerefs - 1) / max_nr_zones;
        let nr_cpus = match read_u64(&root.join("sys/devices/system/cpu/kernel_max")) {
            Ok(max) => max as u32 + 1,
            Err(_) => {
                let longs =
                    member_elems(btf, "cpumask", "bits").ok_or(StampError::Missing("struct cpumask.bits"))?;
                if longs < 2 {
                    return Err(StampError::Inconsistent(
                        "NR_CPUS is 64 or less and /sys/devices/system/cpu/kernel_max is unreadable".into(),
                    ));
                }
                longs * 64
            }
        };
        let lru_gen = match member_elems(btf, "lru_gen_folio", "timestamps") {
            None => None,
            Some(gens) => {
                // avg_total[ANON_AND_FILE][MAX_NR_TIERS]; pahole may flatten it.
                let total = member_elems(btf, "lru_gen_folio", "avg_total")
                    .ok_or(StampError::Missing("struct lru_gen_folio.avg_total"))?;
                Some((gens, total / 2))
            }
        };
        let vmemmap = ["vmemmap_populate", "vmemmap_populate_basepages", "vmemmap_populate_hugepages"]
            .iter()
            .any(|f| has_func(btf, f));
        let last_cpupid_field = member_elems(btf, "folio", "_last_cpupid").is_some();
        Ok(Self { nr_pageflags, max_nr_zones, max_numnodes, nr_cpus, lru_gen, vmemmap, last_cpupid_field })
    }
}

/// The stamp's place on the running kernel, with its `HZ`.
pub fn stamp_layout(btf: &Btf, root: &Path, release: &str) -> Result<StampLayout, StampError> {
    let facts = FlagsFacts::from_btf(btf, root)?;
    let hz = kernel_hz(root, release)?;
    facts.layout(hz)
}

/// One line for `hotpage check` and the start-up log.
pub fn describe(layout: &StampLayout) -> String {
    match layout.word {
        stamp_word::FLAGS => format!(
            "folio->flags bits {}..{} ({} ms buckets), node bits {}..{}, HZ {}",
            layout.shift,
            layout.shift + layout.bits - 1,
            1u32 << layout.buckets,
            layout.node_shift,
            layout.node_shift + layout.node_bits.max(1) - 1,
            layout.hz
        ),
        stamp_word::LAST_CPUPID => {
            format!(
                "folio->_last_cpupid, {} bits ({} ms buckets), HZ {}",
                layout.bits,
                1u32 << layout.buckets,
                layout.hz
            )
        }
        _ => "none".into(),
    }
}

fn has_func(btf: &Btf, name: &str) -> bool {
    btf.resolve_types_by_name(name).is_ok_and(|ts| ts.iter().any(|t| matches!(t, Type::Func(_))))
}

fn enum_value(btf: &Btf, enum_name: &str, member: &str) -> Option<u32> {
    btf.resolve_types_by_name(enum_name).ok()?.into_iter().find_map(|t| match t {
        Type::Enum(e) => {
            e.members.iter().find(|m| btf.resolve_name(*m).is_ok_and(|n| n == member)).map(|m| m.val())
        }
        _ => None,
    })
}

/// Elements of a struct member: 1 for a scalar, the product of the
/// dimensions for an array (nested or flattened alike). None when the
/// struct or the member is absent.
fn member_elems(btf: &Btf, strukt: &str, member: &str) -> Option<u32> {
    let s = btf.resolve_types_by_name(strukt).ok()?.into_iter().find_map(|t| match t {
        Type::Struct(s) => Some(s),
        _ => None,
    })?;
    let m = s.members.iter().find(|m| btf.resolve_name(*m).is_ok_and(|n| n == member))?;
    let mut elems = 1u32;
    let mut ty = btf.resolve_chained_type(m).ok()?;
    while let Type::Array(a) = &ty {
        elems = elems.checked_mul(a.len() as u32)?;
        ty = btf.resolve_chained_type(a).ok()?;
    }
    Some(elems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::btf_writer::BtfWriter;
    use hotpage_common::StampReading;

    /// Debian 12's 6.12.117+deb12-cloud-amd64 (the box's kernel): every
    /// number read from its BTF and /sys.
    fn box_kernel() -> FlagsFacts {
        FlagsFacts {
            nr_pageflags: 24,
            max_nr_zones: 5,
            max_numnodes: 1024,
            nr_cpus: 8192,
            lru_gen: Some((4, 4)),
            vmemmap: true,
            last_cpupid_field: false,
        }
    }

    #[test]
    fn the_box_kernel_keeps_the_stamp_in_bits_30_to_50() {
        let l = box_kernel().layout(250).unwrap();
        assert_eq!(
            l,
            StampLayout {
                word: stamp_word::FLAGS,
                shift: 30,
                bits: 21,
                buckets: 0,
                node_shift: 54,
                node_bits: 10,
                hz: 250,
                reserved: 0
            }
        );
        assert_eq!(describe(&l), "folio->flags bits 30..50 (1 ms buckets), node bits 54..63, HZ 250");
    }

    #[test]
    fn a_small_nr_cpus_config_buckets_the_stamp() {
        // NR_CPUS 4: LAST_CPUPID_SHIFT 10 < PAGE_ACCESS_TIME_MIN_BITS 12.
        let l = FlagsFacts { nr_cpus: 4, max_numnodes: 64, ..box_kernel() }.layout(1000).unwrap();
        assert_eq!((l.shift, l.bits, l.buckets, l.node_shift, l.node_bits), (64 - 6 - 3 - 10, 10, 2, 58, 6));
    }

    #[test]
    fn a_kernel_with_too_many_flags_keeps_the_stamp_in_its_own_field() {
        let facts = FlagsFacts { nr_pageflags: 28, last_cpupid_field: true, ..box_kernel() };
        let l = facts.layout(250).unwrap();
        assert_eq!((l.word, l.shift, l.bits), (stamp_word::LAST_CPUPID, 0, 21));
        // ... and a BTF that disagrees with the arithmetic is refused.
        let err = FlagsFacts { last_cpupid_field: true, ..box_kernel() }.layout(250).unwrap_err();
        assert!(err.to_string().contains("has a _last_cpupid field"), "{err}");
    }

    #[test]
    fn classic_sparsemem_is_refused() {
        let err = FlagsFacts { vmemmap: false, ..box_kernel() }.layout(250).unwrap_err();
        assert_eq!(err, StampError::NoVmemmap);
    }

    /// `folio->flags` words read at fentry of numa_migrate_check in the box
    /// (6.12.117+deb12-cloud-amd64, HZ 250), with the 64-bit jiffies of the
    /// fault and the page's node: `(word, jiffies, nid)`.
    fn recorded() -> Vec<(u64, u64, u32)> {
        let path = crate::test_fixtures::fixture("stamp-words-6.12.txt");
        let text = std::fs::read_to_string(&path).unwrap();
        let words: Vec<_> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let word = u64::from_str_radix(f[0].trim_start_matches("0x"), 16).unwrap();
                (word, f[1].parse().unwrap(), f[2].parse().unwrap())
            })
            .collect();
        assert!(words.len() >= 8, "{}", path.display());
        words
    }

    #[test]
    fn recorded_words_decode_to_the_latencies_the_kernel_computes() {
        let l = box_kernel().layout(250).unwrap();
        let words = recorded();
        let mut latencies = Vec::new();
        for &(word, jiffies, nid) in &words {
            // What should_numa_migrate_memory() computes there, in the kernel's own terms.
            let stamp = (word >> 30) & 0x1f_ffff;
            let kernel = ((jiffies * 4) as u32).wrapping_sub(stamp as u32) & 0x1f_ffff;
            assert_eq!(l.read(word, nid, jiffies), StampReading::Latency(kernel), "{word:#x}");
            latencies.push(kernel);
        }
        // Scans come every 100 ms to a few s in the box: every recorded fault is within minutes of its scan.
        assert!(latencies.iter().all(|&ms| ms < 120_000), "{latencies:?}");
        let (word, jiffies, nid) = words[0];
        assert_eq!(l.read(word, nid + 1, jiffies), StampReading::Mismatch, "node bits checked");
    }

    #[test]
    fn the_stamp_wraps_and_all_ones_means_unset() {
        let l = box_kernel().layout(250).unwrap();
        let node1 = 1u64 << 54;
        // Stamped at 0x1ffff0 ms (just before the 21-bit wrap), faulted 24 ms later.
        let jiffies = (0x20_0008u64 + (7 << 21)) / 4;
        assert_eq!(l.read(node1 | (0x1f_fff0 << 30), 1, jiffies), StampReading::Latency(24));
        assert_eq!(l.read(node1 | (0x1f_ffff << 30), 1, jiffies), StampReading::Unset);
        // The 32-bit truncation of jiffies_to_msecs(): 2^30 jiffies later is the same millisecond.
        assert_eq!(l.read(node1 | (0x1f_fff0 << 30), 1, jiffies + (1 << 30)), StampReading::Latency(24));
        assert_eq!(StampLayout::default().read(node1, 1, jiffies), StampReading::Unknown);
    }

    #[test]
    fn bucketed_stamps_read_in_their_units() {
        let l = FlagsFacts { nr_cpus: 4, max_numnodes: 64, ..box_kernel() }.layout(1000).unwrap();
        let stamp_ms = 4000u64;
        let word = (1u64 << l.node_shift) | ((stamp_ms >> l.buckets) << l.shift);
        assert_eq!(l.read(word, 1, 4100), StampReading::Latency(100));
    }

    /// The box kernel's facts as its BTF spells them (flattened arrays, as pahole writes them).
    fn box_btf(last_cpupid_field: bool) -> Btf {
        let mut w = BtfWriter::new();
        let ulong = w.int("unsigned long", 8);
        let int = w.int("int", 4);
        w.enumeration("pageflags", &[("PG_locked", 0), ("PG_head", 6), ("__NR_PAGEFLAGS", 24)]);
        w.enumeration("zone_type", &[("ZONE_DMA", 0), ("ZONE_NORMAL", 2), ("__MAX_NR_ZONES", 5)]);
        let zonerefs = w.array(ulong, int, 5121);
        w.strukt_with("zonelist", &[("_zonerefs", zonerefs)]);
        let bits = w.array(ulong, int, 128);
        w.strukt_with("cpumask", &[("bits", bits)]);
        let gens = w.array(ulong, int, 4);
        let tiers = w.array(ulong, int, 4);
        let avg_total = w.array(tiers, int, 2); // nested this time
        w.strukt_with("lru_gen_folio", &[("max_seq", ulong), ("timestamps", gens), ("avg_total", avg_total)]);
        let mut folio = vec![("flags", ulong)];
        if last_cpupid_field {
            folio.push(("_last_cpupid", int));
        }
        w.strukt_with("folio", &folio);
        w.func("task_numa_fault", &[("last_cpupid", int)], int);
        w.func("vmemmap_populate", &[("start", ulong)], int);
        Btf::from_bytes(&w.finish()).unwrap()
    }

    #[test]
    fn the_facts_come_from_btf_and_nr_cpus_from_sysfs() {
        let no_sysfs = Path::new("/nonexistent");
        assert_eq!(FlagsFacts::from_btf(&box_btf(false), no_sysfs).unwrap(), box_kernel());
        // kernel_max wins over the BTF's rounded-up cpumask.
        let root = std::env::temp_dir().join(format!("hotpage-stamp-{}", std::process::id()));
        std::fs::create_dir_all(root.join("sys/devices/system/cpu")).unwrap();
        std::fs::write(root.join("sys/devices/system/cpu/kernel_max"), "319\n").unwrap();
        let facts = FlagsFacts::from_btf(&box_btf(false), &root).unwrap();
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(facts.nr_cpus, 320);
        // The BTF's _last_cpupid field contradicts the arithmetic: refused, not guessed.
        let facts = FlagsFacts::from_btf(&box_btf(true), no_sysfs).unwrap();
        assert!(facts.layout(250).is_err());
    }

    #[test]
    fn a_kernel_without_numa_balancing_has_no_stamp() {
        let mut w = BtfWriter::new();
        w.int("int", 4);
        let btf = Btf::from_bytes(&w.finish()).unwrap();
        assert_eq!(FlagsFacts::from_btf(&btf, Path::new("/")), Err(StampError::NoNumaBalancing));
    }

    #[test]
    fn order_base_2_matches_the_kernel() {
        let got: Vec<u32> = [1, 2, 3, 4, 5, 8192, 8193].iter().map(|&n| order_base_2(n)).collect();
        assert_eq!(got, [0, 1, 2, 2, 3, 13, 14]);
    }
}
