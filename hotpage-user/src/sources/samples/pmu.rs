//! Which memory-sampling hardware this machine has, from
//! `/sys/bus/event_source/devices/*`, and the exact `perf_event_attr` hotpage
//! opens for it. Event terms are placed with the PMU's own sysfs `format/`
//! files, as perf does, so no bit position is hard-coded here.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::{
    sources::samples::perf_event::{PerfEventAttr, attr_flags, perf_type, sample_type, sw_event},
    sys::sysfs::{SysfsError, read_text, read_u64},
};

const DEVICES: &str = "sys/bus/event_source/devices";

/// perf's default load-latency threshold for `perf mem` (cycles).
pub const PEBS_LDLAT: u64 = 30;
/// Ops between IBS samples, as pghot v7's IBS memory profiler uses by default.
pub const IBS_PERIOD: u64 = 10_000;
/// Loads between PEBS load-latency samples.
pub const PEBS_PERIOD: u64 = 10_000;

#[derive(Debug, Error)]
pub enum PmuError {
    #[error(
        "no memory-sampling PMU under {0} (neither AMD ibs_op nor Intel cpu/mem-loads; a VM usually has \
         none): use the hint-fault source, or `samples = \"software\"` to sample page faults instead"
    )]
    None(PathBuf),
    #[error("{0}")]
    Sysfs(#[from] SysfsError),
    #[error("{path}: cannot parse {what:?}")]
    Format { path: PathBuf, what: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    /// AMD Instruction-Based Sampling, op side (`ibs_op`).
    IbsOp,
    /// Intel PEBS load latency (`cpu/mem-loads,ldlat=N/P`).
    PebsLoadLatency,
    /// `PERF_COUNT_SW_PAGE_FAULTS`: no PMU needed; every page fault (NUMA hint
    /// faults included) with its address.
    SoftwarePageFaults,
}

/// A sampling event: what to open, and how to describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sampler {
    pub kind: SamplerKind,
    /// The PMU's sysfs name (`ibs_op`, `cpu`, `cpu_core`, `software`).
    pub pmu: String,
    pub pmu_type: u32,
    pub config: u64,
    pub config1: u64,
    pub precise_ip: u64,
    /// Events between samples at start; the CPU budget moves it.
    pub default_period: u64,
    /// The PMU gives a physical address (`PERF_SAMPLE_PHYS_ADDR`).
    pub phys_addr: bool,
    pub exclude_kernel: bool,
    /// Periods are multiples of this (IBS ignores the low 4 bits).
    pub period_align: u64,
    pub min_period: u64,
    /// Extra facts for the description (`L3-miss only`, `ldlat 30`).
    pub notes: Vec<String>,
}

/// One `format/<term>` file: `config:19`, `config1:0-15`, `config:0-7,32-35`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Format {
    field: usize,
    bits: Vec<(u32, u32)>,
}

fn parse_format(path: &Path) -> Result<Format, PmuError> {
    let text = read_text(path)?;
    let bad = || PmuError::Format { path: path.to_owned(), what: text.trim().to_owned() };
    let (field, spec) = text.trim().split_once(':').ok_or_else(bad)?;
    let field = match field {
        "config" => 0,
        "config1" => 1,
        "config2" => 2,
        _ => return Err(bad()),
    };
    let mut bits = Vec::new();
    for part in spec.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
            None => {
                let b = part.parse().map_err(|_| bad())?;
                (b, b)
            }
        };
        if lo > hi || hi > 63 {
            return Err(bad());
        }
        bits.push((lo, hi));
    }
    Ok(Format { field, bits })
}

/// Places `value` into `fields` (config, config1, config2) as the format says.
fn place(fields: &mut [u64; 3], f: &Format, mut value: u64) {
    for &(lo, hi) in &f.bits {
        let width = hi - lo + 1;
        let mask = if width == 64 { u64::MAX } else { (1u64 << width) - 1 };
        fields[f.field] |= (value & mask) << lo;
        value = if width == 64 { 0 } else { value >> width };
    }
}

fn parse_number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

impl Sampler {
    /// The memory-sampling hardware of the machine under `root`: AMD ibs_op
    /// first, then Intel PEBS load latency on `cpu` or (hybrid) `cpu_core`.
    pub fn detect(root: &Path) -> Result<Self, PmuError> {
        let dev = root.join(DEVICES);
        if dev.join("ibs_op/type").exists() {
            return Self::ibs_op(&dev.join("ibs_op"));
        }
        for pmu in ["cpu", "cpu_core"] {
            if dev.join(pmu).join("events/mem-loads").exists() {
                return Self::pebs(&dev.join(pmu), pmu);
            }
        }
        Err(PmuError::None(dev))
    }

    fn ibs_op(dir: &Path) -> Result<Self, PmuError> {
        let pmu_type = read_u64(&dir.join("type"))? as u32;
        let mut fields = [0u64; 3];
        let mut notes = Vec::new();
        // Count dispatched ops, not cycles: the period is then "1 in N ops".
        if dir.join("format/cnt_ctl").exists() {
            place(&mut fields, &parse_format(&dir.join("format/cnt_ctl"))?, 1);
            notes.push("dispatched ops".to_owned());
        }
        // Zen 4+: only ops that missed the L3, the ones that reach memory.
        if dir.join("format/l3missonly").exists() {
            place(&mut fields, &parse_format(&dir.join("format/l3missonly"))?, 1);
            notes.push("L3-miss only".to_owned());
        }
        Ok(Self {
            kind: SamplerKind::IbsOp,
            pmu: "ibs_op".into(),
            pmu_type,
            config: fields[0],
            config1: fields[1],
            // The ibs_op PMU itself is precise; precise_ip is for cycles:pp redirected to it.
            precise_ip: 0,
            default_period: IBS_PERIOD,
            phys_addr: true,
            // Kernel-mode samples are dropped in the BPF program (user addresses only).
            exclude_kernel: false,
            period_align: 16,
            min_period: 0x100,
            notes,
        })
    }

    fn pebs(dir: &Path, pmu: &str) -> Result<Self, PmuError> {
        let pmu_type = read_u64(&dir.join("type"))? as u32;
        let path = dir.join("events/mem-loads");
        let text = read_text(&path)?;
        let mut fields = [0u64; 3];
        let mut ldlat_seen = false;
        for term in text.trim().split(',') {
            let (name, value) = term.split_once('=').unwrap_or((term, "1"));
            let mut value = parse_number(value)
                .ok_or_else(|| PmuError::Format { path: path.clone(), what: term.to_owned() })?;
            if name == "ldlat" {
                // perf mem's threshold, not the event's minimum.
                value = PEBS_LDLAT;
                ldlat_seen = true;
            }
            place(&mut fields, &parse_format(&dir.join("format").join(name))?, value);
        }
        if !ldlat_seen && dir.join("format/ldlat").exists() {
            place(&mut fields, &parse_format(&dir.join("format/ldlat"))?, PEBS_LDLAT);
        }
        // perf's `P` modifier: the PMU's highest precise level.
        let precise_ip = read_u64(&dir.join("caps/max_precise")).unwrap_or(2).clamp(1, 3);
        Ok(Self {
            kind: SamplerKind::PebsLoadLatency,
            pmu: pmu.to_owned(),
            pmu_type,
            config: fields[0],
            config1: fields[1],
            precise_ip,
            default_period: PEBS_PERIOD,
            phys_addr: true,
            exclude_kernel: true,
            period_align: 1,
            min_period: 100,
            notes: vec![format!("ldlat {PEBS_LDLAT}")],
        })
    }

    /// Page faults as samples, where no PMU samples memory (VMs, the box).
    pub fn software() -> Self {
        Self {
            kind: SamplerKind::SoftwarePageFaults,
            pmu: "software".into(),
            pmu_type: perf_type::SOFTWARE,
            config: sw_event::PAGE_FAULTS,
            config1: 0,
            precise_ip: 0,
            default_period: 1,
            // The fault address is virtual; the page is often not there yet.
            phys_addr: false,
            exclude_kernel: true,
            period_align: 1,
            min_period: 1,
            notes: Vec::new(),
        }
    }

    /// The attribute for one system-wide event per CPU, opened disabled.
    pub fn attr(&self, period: u64) -> PerfEventAttr {
        let mut a = PerfEventAttr::new(self.pmu_type, self.config);
        a.config1 = self.config1;
        a.sample_period = self.align(period);
        a.sample_type = sample_type::TID | sample_type::ADDR;
        if self.phys_addr {
            a.sample_type |= sample_type::PHYS_ADDR;
        }
        a.flags = attr_flags::DISABLED;
        if self.exclude_kernel {
            a.flags |= attr_flags::EXCLUDE_KERNEL | attr_flags::EXCLUDE_HV;
        }
        a.set_precise_ip(self.precise_ip);
        a
    }

    /// `period` made valid for this PMU.
    pub fn align(&self, period: u64) -> u64 {
        let p = period.max(self.min_period);
        p.div_ceil(self.period_align) * self.period_align
    }

    /// One line for `hotpage check` and `stats`.
    pub fn describe(&self) -> String {
        let name = match self.kind {
            SamplerKind::IbsOp => "AMD IBS op",
            SamplerKind::PebsLoadLatency => "Intel PEBS load latency",
            SamplerKind::SoftwarePageFaults => "software page faults (no PMU)",
        };
        let mut s = format!("{name} ({}, type {})", self.pmu, self.pmu_type);
        if !self.notes.is_empty() {
            s += &format!(", {}", self.notes.join(", "));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::{cxl_box, fixture};

    #[test]
    fn an_amd_zen4_host_uses_ibs_op_counting_ops_l3_misses_only() {
        let s = Sampler::detect(&fixture("pmu-amd-zen4")).unwrap();
        assert_eq!(s.kind, SamplerKind::IbsOp);
        let a = s.attr(s.default_period);
        // Field by field, from the fixture's sysfs (type 11; cnt_ctl config:19,
        // l3missonly config:16, Documentation/ABI/testing/sysfs-bus-event_source-devices-ibs).
        assert_eq!(a.type_, 11);
        assert_eq!(a.size, 136);
        assert_eq!(a.config, (1 << 19) | (1 << 16));
        assert_eq!(a.config1, 0);
        assert_eq!(a.sample_period, 10_000, "pghot v7's default: one sample per 10000 ops");
        assert_eq!(a.sample_period % 16, 0, "IBS ignores the low 4 bits of the period");
        assert_eq!(a.sample_type, sample_type::TID | sample_type::ADDR | sample_type::PHYS_ADDR);
        assert_eq!(a.flags, attr_flags::DISABLED);
        assert_eq!(a.precise_ip(), 0);
        assert_eq!(s.align(1000), 1008);
        assert!(s.describe().contains("L3-miss only"), "{}", s.describe());
    }

    #[test]
    fn an_intel_host_uses_pebs_mem_loads_with_perfs_latency_threshold() {
        let s = Sampler::detect(&fixture("pmu-intel-icx")).unwrap();
        assert_eq!(s.kind, SamplerKind::PebsLoadLatency);
        let a = s.attr(s.default_period);
        // cpu/events/mem-loads "event=0xcd,umask=0x1,ldlat=3" placed with
        // format event config:0-7, umask config:8-15, ldlat config1:0-15;
        // ldlat raised to perf mem's 30; precise_ip from caps/max_precise (perf's `P`).
        assert_eq!(a.type_, 4);
        assert_eq!(a.config, 0x01cd);
        assert_eq!(a.config1, 30);
        assert_eq!(a.precise_ip(), 3);
        assert_eq!(a.sample_period, 10_000);
        assert_eq!(a.sample_type, sample_type::TID | sample_type::ADDR | sample_type::PHYS_ADDR);
        assert_eq!(
            a.flags & !attr_flags::PRECISE_IP_MASK,
            attr_flags::DISABLED | attr_flags::EXCLUDE_KERNEL | attr_flags::EXCLUDE_HV
        );
    }

    #[test]
    fn a_vm_without_pmu_is_told_about_the_fallback() {
        let e = Sampler::detect(&fixture("pmu-none-vm")).unwrap_err().to_string();
        assert!(e.contains("no memory-sampling PMU") && e.contains("software"), "{e}");
        assert!(Sampler::detect(&cxl_box()).is_err());
        let s = Sampler::software();
        let a = s.attr(1);
        assert_eq!((a.type_, a.config, a.sample_period), (perf_type::SOFTWARE, sw_event::PAGE_FAULTS, 1));
        assert_eq!(a.sample_type, sample_type::TID | sample_type::ADDR);
        assert_eq!(a.flags, attr_flags::DISABLED | attr_flags::EXCLUDE_KERNEL | attr_flags::EXCLUDE_HV);
    }

    #[test]
    fn formats_with_several_ranges_place_every_bit() {
        let mut f = [0u64; 3];
        place(&mut f, &Format { field: 0, bits: vec![(0, 7), (32, 35)] }, 0x3ab);
        assert_eq!(f[0], 0xab | (0x3 << 32));
        place(&mut f, &Format { field: 1, bits: vec![(0, 15)] }, 30);
        assert_eq!(f[1], 30);
        assert_eq!(parse_number("0xcd"), Some(0xcd));
        assert_eq!(parse_number("3"), Some(3));
    }
}
