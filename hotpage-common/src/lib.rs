//! Types shared between hotpage's eBPF programs (C) and userspace.
//!
//! Every type here mirrors `include/hotpage_common.h` field for field. Both sides
//! assert the sizes; a test in `hotpage-ebpf` reads the layout from the built
//! object's BTF and compares it with these definitions.
#![no_std]

/// Base page size on x86-64.
pub const PAGE_SHIFT: u32 = 12;
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;

/// Memory section size on x86-64 (`SECTION_SIZE_BITS`): 128 MiB.
pub const SECTION_SIZE_BITS: u32 = 27;
/// `PFN_SECTION_SHIFT`: pages per section as a shift.
pub const PFN_SECTION_SHIFT: u32 = SECTION_SIZE_BITS - PAGE_SHIFT;
/// `PAGES_PER_SECTION`: 32768.
pub const PAGES_PER_SECTION: u64 = 1 << PFN_SECTION_SHIFT;

/// Folio order of a PMD-mapped THP on x86-64 (2 MiB).
pub const PMD_ORDER: u8 = 9;

/// Largest folio order believed when read from the kernel (a PUD, 1 GiB);
/// `HOTPAGE_MAX_FOLIO_ORDER` on the C side.
pub const MAX_FOLIO_ORDER: u8 = 18;

/// Base pages of a folio of `order` (clamped to [`MAX_FOLIO_ORDER`]).
pub const fn folio_pages(order: u8) -> u64 {
    let order = if order > MAX_FOLIO_ORDER { MAX_FOLIO_ORDER } else { order };
    1 << order
}

/// The first pfn of the folio of `order` that holds `pfn`: folios are
/// naturally aligned, so it is `pfn` rounded down to the folio's size.
pub const fn folio_head(pfn: u64, order: u8) -> u64 {
    pfn & !(folio_pages(order) - 1)
}

/// `NUMA_NO_NODE`.
pub const NO_NODE: i32 = -1;

/// Event sources. The numbers are pghot's `enum pghot_src`, so a bit mask of
/// enabled sources means the same as `vm.pghot_enabled_sources`.
pub mod source {
    pub const HINT_FAULT: u16 = 0;
    pub const HW_SAMPLE: u16 = 1;
    pub const PGTABLE_SCAN: u16 = 2;
    pub const COUNT: usize = 3;
}

/// `HotpageEvent::flags` bits.
pub mod event_flags {
    /// Fault on a PMD-mapped THP; `pfn` is the head page.
    pub const PMD: u8 = 0x1;
    /// The kernel gave no pfn; userspace resolves `vaddr` through pagemap.
    pub const NEED_PFN: u8 = 0x2;
    /// The access was a write, when the hook knows.
    pub const WRITE: u8 = 0x4;
    /// `latency_ms` holds the scan-to-fault latency.
    pub const LATENCY: u8 = 0x8;
    /// A DAMON region, not one page: `vaddr..pfn` is `[start, end)` of the
    /// target's address space, `latency_ms` its `nr_accesses` in the last
    /// aggregation interval, `reserved` its age. Userspace expands it to pages.
    pub const REGION: u8 = 0x10;
}

/// One lower-tier access, as it crosses the ring buffer (`struct hotpage_event`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HotpageEvent {
    /// Page frame number of the folio's first page.
    pub pfn: u64,
    /// User virtual address of the access.
    pub vaddr: u64,
    /// CLOCK_MONOTONIC nanoseconds (`bpf_ktime_get_ns`).
    pub time_ns: u64,
    /// Thread-group id (process id) of the accessing task.
    pub pid: u32,
    /// Node of the accessing CPU.
    pub nid: i32,
    /// Node holding the page, from the tier map (`NO_NODE` when unknown).
    pub page_nid: i32,
    /// One of [`source`].
    pub source: u16,
    /// Folio order: 0 for a base page, 9 for a PMD THP.
    pub order: u8,
    /// [`event_flags`] bits.
    pub flags: u8,
    /// Milliseconds from the scan that made the page's entry PROT_NONE to this
    /// hint fault, when `flags` has [`event_flags::LATENCY`].
    pub latency_ms: u32,
    pub reserved: u32,
}

const _: () = assert!(size_of::<HotpageEvent>() == 48);
const _: () = assert!(align_of::<HotpageEvent>() == 8);

impl HotpageEvent {
    /// Decodes an event from a ring-buffer record. Returns `None` when the
    /// record is shorter than an event (a producer from another build).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < size_of::<Self>() {
            return None;
        }
        // SAFETY: the length is checked above; every bit pattern is a valid
        // HotpageEvent (plain integers), and read_unaligned needs no alignment.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }
}

/// Per-CPU counters each program keeps, as indexes into its `counters` map.
pub mod counter {
    /// Hook invocations.
    pub const SEEN: u32 = 0;
    /// The entry held no decodable pfn.
    pub const NO_PFN: u32 = 1;
    /// The pfn is not on a lower-tier node.
    pub const FILTERED: u32 = 2;
    /// Events written to the ring.
    pub const EMITTED: u32 = 3;
    /// Ring full: event lost.
    pub const DROPPED: u32 = 4;
    /// Forced consumer wake-ups.
    pub const WAKEUPS: u32 = 5;
    /// Hint faults whose folio carried no scan stamp (fresh or just migrated).
    pub const STAMP_UNSET: u32 = 6;
    /// Hint faults whose `flags` word failed the layout self-check (its node
    /// bits are not the page's node): the latency was not trusted.
    pub const STAMP_MISMATCH: u32 = 7;
    pub const COUNT: u32 = 8;
    /// Names in index order, for display and metrics.
    pub const NAMES: [&str; COUNT as usize] =
        ["seen", "no_pfn", "filtered", "emitted", "dropped", "wakeups", "stamp_unset", "stamp_mismatch"];
}

/// Where a kernel keeps a lower-tier folio's scan stamp (`StampLayout::word`).
pub mod stamp_word {
    /// Unknown: hint faults carry no latency.
    pub const NONE: u32 = 0;
    /// In `folio->flags`, in the `LAST_CPUPID` bits.
    pub const FLAGS: u32 = 1;
    /// In `folio->_last_cpupid` (`LAST_CPUPID_NOT_IN_PAGE_FLAGS` kernels).
    pub const LAST_CPUPID: u32 = 2;
}

/// How the hint-fault program turns a folio's scan stamp into a scan-to-fault
/// latency (`struct hotpage_stamp_layout`, a `.rodata` constant of the
/// program). In NUMA balancing's tiering mode the kernel stamps each
/// lower-tier folio with `jiffies_to_msecs(jiffies) >> buckets` when a scan
/// makes its entry PROT_NONE, in the `LAST_CPUPID` bits (`folio_xchg_access_time()`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StampLayout {
    /// One of [`stamp_word`].
    pub word: u32,
    /// `LAST_CPUPID_PGSHIFT` (0 when the stamp has its own field).
    pub shift: u32,
    /// `LAST_CPUPID_SHIFT`: the stamp's width in bits.
    pub bits: u32,
    /// `PAGE_ACCESS_TIME_BUCKETS`: the stamp holds milliseconds >> buckets.
    pub buckets: u32,
    /// Self-check: the `NODES_PGSHIFT` and `NODES_WIDTH` of `folio->flags`
    /// (width 0 skips the check).
    pub node_shift: u32,
    pub node_bits: u32,
    /// The kernel's `HZ`, to turn jiffies into the stamp's milliseconds.
    pub hz: u32,
    pub reserved: u32,
}

const _: () = assert!(size_of::<StampLayout>() == 32);

/// What a stamp says at a hint fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StampReading {
    /// Milliseconds from the scan to the fault.
    Latency(u32),
    /// All ones: the kernel has not stamped the folio since it was allocated or migrated.
    Unset,
    /// The word's node bits name another node: the layout is wrong for this kernel.
    Mismatch,
    /// No layout known.
    Unknown,
}

impl StampLayout {
    /// The reference for the decoding the hint-fault program does in C
    /// (`scan_latency()` in `hint_fault.bpf.c`): `word` is `folio->flags`
    /// (or `_last_cpupid`), `page_nid` the folio's node, `jiffies` the
    /// kernel's 64-bit jiffies at the fault.
    pub const fn read(&self, word: u64, page_nid: u32, jiffies: u64) -> StampReading {
        if self.word == stamp_word::NONE || self.hz == 0 || self.bits == 0 || self.bits > 32 {
            return StampReading::Unknown;
        }
        if self.word == stamp_word::FLAGS && self.node_bits > 0 && self.node_bits < 32 {
            let node = (word >> (self.node_shift & 63)) & ((1 << self.node_bits) - 1);
            if node != page_nid as u64 {
                return StampReading::Mismatch;
            }
        }
        let mask = (1u64 << self.bits) - 1;
        let shift = if self.word == stamp_word::FLAGS { self.shift & 63 } else { 0 };
        let stamp = (word >> shift) & mask;
        if stamp == mask {
            return StampReading::Unset;
        }
        let buckets = self.buckets & 31;
        // jiffies_to_msecs() returns an unsigned int: the stamp is the low bits of that.
        let now_ms = (jiffies.wrapping_mul(1000) / self.hz as u64) as u32 as u64;
        StampReading::Latency((now_ms.wrapping_sub(stamp << buckets) & (mask << buckets)) as u32)
    }
}

/// Maximum number of lower-tier pfn ranges the BPF filter holds.
pub const MAX_RANGES: usize = 64;

/// A lower-tier pfn range (`struct hotpage_pfn_range`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PfnRange {
    /// First pfn.
    pub start_pfn: u64,
    /// One past the last pfn.
    pub end_pfn: u64,
    /// Node the range belongs to.
    pub nid: i32,
    pub reserved: u32,
}

const _: () = assert!(size_of::<PfnRange>() == 24);

/// The lower-tier filter the programs consult (`struct hotpage_tier_map`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TierMap {
    /// Valid entries in `ranges`, sorted by `start_pfn`, not overlapping.
    pub nr_ranges: u32,
    pub reserved: u32,
    pub ranges: [PfnRange; MAX_RANGES],
}

const _: () = assert!(size_of::<TierMap>() == 8 + 24 * MAX_RANGES);

impl Default for TierMap {
    fn default() -> Self {
        Self { nr_ranges: 0, reserved: 0, ranges: [PfnRange::default(); MAX_RANGES] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_event_from_unaligned_bytes() {
        let ev = HotpageEvent {
            pfn: 0x4_2000,
            vaddr: 0x7f00_0000_1000,
            time_ns: 123,
            pid: 42,
            nid: 0,
            page_nid: 1,
            source: source::HINT_FAULT,
            order: PMD_ORDER,
            flags: event_flags::PMD | event_flags::LATENCY,
            latency_ms: 77,
            reserved: 0,
        };
        let mut buf = [0u8; 49];
        // SAFETY: HotpageEvent is plain old data of exactly 48 bytes.
        let raw: [u8; 48] = unsafe { core::mem::transmute(ev) };
        buf[1..].copy_from_slice(&raw);
        assert_eq!(HotpageEvent::from_bytes(&buf[1..]), Some(ev));
        assert_eq!(HotpageEvent::from_bytes(&buf[1..48]), None);
    }

    #[test]
    fn folio_head_and_pages() {
        assert_eq!((folio_head(0x1237, 0), folio_pages(0)), (0x1237, 1));
        assert_eq!((folio_head(0x1237, 4), folio_pages(4)), (0x1230, 16));
        assert_eq!((folio_head(0x1237, PMD_ORDER), folio_pages(PMD_ORDER)), (0x1200, 512));
        assert_eq!(folio_pages(40), 1 << MAX_FOLIO_ORDER, "clamped");
    }

    #[test]
    fn section_geometry_is_x86_64() {
        assert_eq!(PAGES_PER_SECTION, 32768);
        assert_eq!(PAGES_PER_SECTION * PAGE_SIZE, 128 << 20);
    }
}
