//! hotpage's eBPF objects, compiled from `src/bpf/*.bpf.c` by `build.rs`.
//!
//! Each source of page accesses is one object with its own ring buffer,
//! counters and lower-tier filter (see `src/bpf/hotpage.bpf.h`).

/// 8-byte aligned bytes: object parsers read ELF headers in place.
#[repr(C, align(8))]
struct Aligned<B: ?Sized>(B);

macro_rules! object {
    ($name:literal) => {{
        static ALIGNED: &Aligned<[u8]> =
            &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/", $name, ".bpf.o")));
        &ALIGNED.0
    }};
}

/// NUMA hint faults: `fentry` on `numa_migrate_check` / `numa_migrate_prep`.
pub const HINT_FAULT: &[u8] = object!("hint_fault");
/// Memory-access samples: a `perf_event` program.
pub const HW_SAMPLE: &[u8] = object!("hw_sample");

/// DAMON's region reports: a `tp_btf` program on `damon:damon_aggregated`.
pub const DAMON: &[u8] = object!("damon");

/// Benchmark baseline: an empty `perf_event` program named `empty`.
pub const BASELINE: &[u8] = object!("baseline");

/// Program names inside the objects.
pub mod program {
    pub const HINT_FAULT: &str = "hint_fault";
    pub const HW_SAMPLE: &str = "hw_sample";
    pub const DAMON: &str = "damon_aggregated";
    pub const BASELINE: &str = "empty";
}

/// Map names shared by every object.
pub mod map {
    pub const EVENTS: &str = "events";
    pub const COUNTERS: &str = "counters";
    pub const TIER_MAP: &str = "tier_map";
    /// DAMON object only: the pid of the kdamond hotpage started (`u32`).
    pub const DAMON_OWNER: &str = "damon_owner";
    /// DAMON object only: target index → pid (`u32` → `u32`, 64 entries).
    pub const DAMON_TARGETS: &str = "damon_targets";
}

/// `.rodata` knobs shared by every object.
pub mod global {
    /// Events per CPU between forced consumer wake-ups (`u32`).
    pub const WAKEUP_EVERY: &str = "wakeup_every";
    /// Sample object only: read the sample's physical address (`u32`, 0 or 1).
    pub const WANT_PHYS_ADDR: &str = "want_phys_addr";
    /// Hint-fault object only: where the kernel keeps the scan stamp
    /// (`hotpage_common::StampLayout`).
    pub const STAMP_LAYOUT: &str = "stamp_layout";
    /// DAMON object only: positions of the region pointer, the target
    /// pointer and the target index among the tracepoint's arguments (`u32`,
    /// [`DAMON_NO_ARG`](crate::DAMON_NO_ARG) when absent), and the fewest
    /// accesses reported.
    pub const REGION_ARG: &str = "region_arg";
    pub const TARGET_ARG: &str = "target_arg";
    pub const TARGET_ID_ARG: &str = "target_id_arg";
    pub const MIN_NR_ACCESSES: &str = "min_nr_accesses";
}

/// A DAMON tracepoint argument this kernel does not pass.
pub const DAMON_NO_ARG: u32 = 0xff;
/// Targets the DAMON object maps from index to pid.
pub const DAMON_MAX_TARGETS: usize = 64;

/// Every source's object, by the name userspace and tests use for them.
pub const OBJECTS: &[(&str, &[u8])] =
    &[("hint_fault", HINT_FAULT), ("hw_sample", HW_SAMPLE), ("damon", DAMON)];
