/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Types shared between the eBPF programs and userspace. Mirrors
 * hotpage-common/src/lib.rs field for field; both sides assert the sizes and
 * a test compares the layout found in the built object's BTF with the Rust one.
 */
#ifndef HOTPAGE_COMMON_H
#define HOTPAGE_COMMON_H

/* Event sources; the numbers are pghot's (enum pghot_src). */
#define HOTPAGE_SRC_HINT_FAULT		0
#define HOTPAGE_SRC_HW_SAMPLE		1
#define HOTPAGE_SRC_PGTABLE_SCAN	2
#define HOTPAGE_NR_SOURCES		3

/* hotpage_event.flags */
#define HOTPAGE_EV_PMD		0x1	/* fault on a PMD-mapped THP: pfn is the head */
#define HOTPAGE_EV_NEED_PFN	0x2	/* no pfn from the kernel: userspace resolves vaddr */
#define HOTPAGE_EV_WRITE	0x4	/* the access was a write, when the hook knows */
#define HOTPAGE_EV_LATENCY	0x8	/* latency_ms holds the scan-to-fault latency */
/*
 * A DAMON region, not one page: vaddr..pfn is [start, end) of the target
 * process's address space, latency_ms its nr_accesses in the last aggregation
 * interval, reserved its age (in aggregation intervals). Userspace expands it.
 */
#define HOTPAGE_EV_REGION	0x10

#define HOTPAGE_NO_NODE		(-1)

/* Largest folio order believed when read from the kernel (a PUD, 1 GiB). */
#define HOTPAGE_MAX_FOLIO_ORDER	18

/* One lower-tier access, as it crosses the ring buffer. */
struct hotpage_event {
	__u64 pfn;		/* page frame number of the folio's first page */
	__u64 vaddr;		/* user virtual address of the access */
	__u64 time_ns;		/* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	__u32 pid;		/* tgid of the accessing task */
	__s32 nid;		/* node of the accessing CPU */
	__s32 page_nid;		/* node holding the page, from the tier map */
	__u16 source;		/* HOTPAGE_SRC_* */
	__u8 order;		/* folio order: 0 base page, 9 PMD THP on x86-64 */
	__u8 flags;		/* HOTPAGE_EV_* */
	__u32 latency_ms;	/* scan-to-fault latency, ms, with HOTPAGE_EV_LATENCY */
	__u32 reserved;
};
_Static_assert(sizeof(struct hotpage_event) == 48, "hotpage_event size");

/* Per-CPU counters each program keeps (index into the `counters` map). */
#define HOTPAGE_CNT_SEEN	0	/* hook invocations */
#define HOTPAGE_CNT_NO_PFN	1	/* entry held no decodable pfn */
#define HOTPAGE_CNT_FILTERED	2	/* pfn not on a lower-tier node */
#define HOTPAGE_CNT_EMITTED	3	/* events written to the ring */
#define HOTPAGE_CNT_DROPPED	4	/* ring full: event lost */
#define HOTPAGE_CNT_WAKEUPS	5	/* forced consumer wake-ups */
#define HOTPAGE_CNT_STAMP_UNSET	6	/* folio carried no scan stamp */
#define HOTPAGE_CNT_STAMP_MISMATCH 7	/* flags word failed the layout self-check */
#define HOTPAGE_NR_COUNTERS	8

/* hotpage_stamp_layout.word: where the kernel keeps the scan stamp. */
#define HOTPAGE_STAMP_NONE		0	/* unknown: no latency */
#define HOTPAGE_STAMP_FLAGS		1	/* folio->flags, LAST_CPUPID bits */
#define HOTPAGE_STAMP_LAST_CPUPID	2	/* folio->_last_cpupid */

/* How to read a lower-tier folio's scan stamp (userspace derives it from BTF). */
struct hotpage_stamp_layout {
	__u32 word;		/* HOTPAGE_STAMP_* */
	__u32 shift;		/* LAST_CPUPID_PGSHIFT */
	__u32 bits;		/* LAST_CPUPID_SHIFT */
	__u32 buckets;		/* PAGE_ACCESS_TIME_BUCKETS */
	__u32 node_shift;	/* NODES_PGSHIFT, for the self-check */
	__u32 node_bits;	/* NODES_WIDTH; 0 skips the self-check */
	__u32 hz;		/* the kernel's HZ */
	__u32 reserved;
};
_Static_assert(sizeof(struct hotpage_stamp_layout) == 32, "hotpage_stamp_layout size");

/* Lower-tier memory, as pfn ranges sorted by start_pfn. */
#define HOTPAGE_MAX_RANGES	64

struct hotpage_pfn_range {
	__u64 start_pfn;	/* first pfn */
	__u64 end_pfn;		/* one past the last pfn */
	__s32 nid;		/* the node the range belongs to */
	__u32 reserved;
};
_Static_assert(sizeof(struct hotpage_pfn_range) == 24, "hotpage_pfn_range size");

struct hotpage_tier_map {
	__u32 nr_ranges;	/* valid entries in ranges[] */
	__u32 reserved;
	struct hotpage_pfn_range ranges[HOTPAGE_MAX_RANGES];
};
_Static_assert(sizeof(struct hotpage_tier_map) == 8 + 24 * HOTPAGE_MAX_RANGES,
	       "hotpage_tier_map size");

#endif /* HOTPAGE_COMMON_H */
