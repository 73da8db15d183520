//! The hot map's knobs, mirroring pghot's sysctls and their limits.

use hotpage_common::source;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::record::{RecordMode, UpdateParams, WINDOW_MIN_MS, precise_fmt};

/// `vm.pghot_enabled_sources` bits: one per source id (`1 << source`).
pub const SOURCE_HINT_FAULTS: u32 = 1 << source::HINT_FAULT;
pub const SOURCE_HW_HINTS: u32 = 1 << source::HW_SAMPLE;
pub const SOURCE_PGTABLE_SCAN: u32 = 1 << source::PGTABLE_SCAN;
/// The sources pghot v6 knows (`PGHOT_SRC_ENABLED_MASK`).
pub const KNOWN_SOURCES: u32 = SOURCE_HINT_FAULTS | SOURCE_HW_HINTS | SOURCE_PGTABLE_SCAN;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HotMapConfig {
    /// Record format: `default` (1 byte/page) or `precise` (4 bytes/page).
    pub mode: RecordMode,
    /// Bit mask of enabled sources (`vm.pghot_enabled_sources`): 1 hint faults, 2 hardware hints.
    pub enabled_sources: u32,
    /// Promotion target in default mode, and for accesses without a node (`vm.pghot_target_nid`).
    pub target_nid: u32,
    /// Accesses within the window that make a page ready (`vm.pghot_freq_threshold`).
    pub freq_threshold: u32,
    /// Window for counting accesses, ms (`vm.pghot_promote_freq_window_ms`).
    pub freq_window_ms: u32,
}

impl HotMapConfig {
    /// The kernel's defaults for a mode (both sources enabled; pghot enables
    /// hint faults by default and hardware hints when its IBS driver loads).
    pub fn defaults(mode: RecordMode) -> Self {
        Self {
            mode,
            enabled_sources: KNOWN_SOURCES,
            target_nid: 0,
            freq_threshold: 2,
            freq_window_ms: mode.default_window_ms(),
        }
    }

    /// Checks every knob against the kernel's limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.enabled_sources & !KNOWN_SOURCES != 0 {
            return Err(ConfigError::Sources(self.enabled_sources));
        }
        let max = self.mode.freq_max();
        if !(1..=max).contains(&self.freq_threshold) {
            return Err(ConfigError::Threshold { value: self.freq_threshold, max });
        }
        let wmax = self.mode.window_max_ms();
        if !(WINDOW_MIN_MS..=wmax).contains(&self.freq_window_ms) {
            return Err(ConfigError::Window {
                value: self.freq_window_ms,
                min: WINDOW_MIN_MS,
                max: wmax,
                mode: self.mode,
            });
        }
        if self.target_nid > precise_fmt::NID_MAX {
            return Err(ConfigError::TargetNid(self.target_nid));
        }
        Ok(())
    }

    pub fn source_enabled(&self, src: u16) -> bool {
        u32::from(src) < 32 && self.enabled_sources & (1 << src) != 0
    }

    pub(super) fn update_params(&self) -> UpdateParams {
        UpdateParams {
            freq_window_ms: self.freq_window_ms,
            freq_threshold: self.freq_threshold,
            target_nid: self.target_nid,
        }
    }
}

impl Default for HotMapConfig {
    fn default() -> Self {
        Self::defaults(RecordMode::Default)
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("enabled sources {0:#x} has unknown bits: 1 = hint faults, 2 = hardware hints")]
    Sources(u32),
    #[error("frequency threshold {value} is outside 1..={max}")]
    Threshold { value: u32, max: u32 },
    #[error(
        "frequency window {value} ms is outside {min}..={max} ms: the {mode:?} record's time field spans {max} ms"
    )]
    Window { value: u32, min: u32, max: u32, mode: RecordMode },
    #[error("target node {0} is beyond the record's 10-bit node field")]
    TargetNid(u32),
    #[error("target node {0} is not an online top-tier node")]
    TargetNotTopTier(u32),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_defaults_are_valid() {
        let d = HotMapConfig::defaults(RecordMode::Default);
        assert_eq!((d.freq_threshold, d.freq_window_ms, d.target_nid), (2, 3000, 0));
        d.validate().unwrap();
        let p = HotMapConfig::defaults(RecordMode::Precise);
        assert_eq!(p.freq_window_ms, 5000);
        p.validate().unwrap();
    }

    #[test]
    fn window_must_fit_the_time_field() {
        let mut c = HotMapConfig::defaults(RecordMode::Default);
        c.freq_window_ms = 3968;
        c.validate().unwrap();
        c.freq_window_ms = 3969;
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("spans 3968 ms"), "{e}");
        c.freq_window_ms = 999;
        assert!(c.validate().is_err());
        let mut p = HotMapConfig::defaults(RecordMode::Precise);
        p.freq_window_ms = 16383;
        p.validate().unwrap();
        p.freq_window_ms = 16384;
        assert!(p.validate().is_err());
    }

    #[test]
    fn threshold_range_follows_the_mode() {
        let mut c = HotMapConfig::defaults(RecordMode::Default);
        c.freq_threshold = 3;
        c.validate().unwrap();
        c.freq_threshold = 4;
        assert_eq!(c.validate(), Err(ConfigError::Threshold { value: 4, max: 3 }));
        c.freq_threshold = 0;
        assert!(c.validate().is_err());
        let mut p = HotMapConfig::defaults(RecordMode::Precise);
        p.freq_threshold = 7;
        p.validate().unwrap();
    }

    #[test]
    fn unknown_source_bits_are_refused() {
        let mut c = HotMapConfig { enabled_sources: 0b1000, ..HotMapConfig::default() };
        assert_eq!(c.validate(), Err(ConfigError::Sources(8)));
        assert!(c.source_enabled(3));
        c.enabled_sources = SOURCE_HINT_FAULTS;
        assert!(c.source_enabled(source::HINT_FAULT));
        assert!(!c.source_enabled(source::HW_SAMPLE));
    }
}
