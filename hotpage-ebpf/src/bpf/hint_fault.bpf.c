// SPDX-License-Identifier: GPL-2.0-only
/*
 * NUMA hint faults. fentry on the function that decides hint-fault migration:
 * numa_migrate_check() since 6.10, numa_migrate_prep() with the same first
 * three arguments before. Userspace picks the attach target from the running
 * kernel's BTF; the program is the same for both.
 */
#define HOTPAGE_SOURCE HOTPAGE_SRC_HINT_FAULT
#include "hotpage.bpf.h"

#define X86_PAGE_PRESENT	0x1ULL
/* Physical address bits 12..51 (PTE) and 21..51 (PMD leaf). */
#define X86_PTE_PFN_MASK	0x000ffffffffff000ULL
#define X86_PMD_PFN_MASK	0x000fffffffe00000ULL
#define X86_PAGE_SHIFT		12

/*
 * A NUMA hint fault's entry is PROT_NONE, i.e. not present; x86 stores the pfn
 * of such entries inverted (L1TF mitigation), so invert before masking.
 */
static __always_inline __u64 entry_pfn(__u64 entry, __u64 mask)
{
	if (entry && !(entry & X86_PAGE_PRESENT))
		entry = ~entry;
	return (entry & mask) >> X86_PAGE_SHIFT;
}

/*
 * folio_order(): 0 unless the folio is large (PG_head set on the folio).
 * fentry arguments are BTF-typed, so fields are read with direct (PROBE_MEM)
 * loads at CO-RE-relocated offsets rather than bpf_probe_read_kernel() calls.
 */
static __always_inline __u8 folio_order_of(struct folio *folio)
{
	unsigned long order = 0;

	if (!(folio->flags & (1UL << bpf_core_enum_value(enum pageflags, PG_head))))
		return 0;
	if (bpf_core_field_exists(folio->_flags_1))
		order = folio->_flags_1 & 0xff;
	else if (bpf_core_field_exists(folio->_folio_order))
		order = folio->_folio_order;
	return order <= HOTPAGE_MAX_FOLIO_ORDER ? order : 0;
}

/* Where this kernel keeps the scan stamp; userspace fills it from BTF (word NONE: no latency). */
const volatile struct hotpage_stamp_layout stamp_layout = {};

/*
 * Scan-to-fault latency in ms, or -1. In tiering mode the kernel stamps a
 * lower-tier folio with jiffies_to_msecs(jiffies) >> buckets when a scan makes
 * its entry PROT_NONE; at this hook (before numa_hint_fault_latency() rewrites
 * it) the stamp is still the scan's. Mirrors StampLayout::read() in
 * hotpage-common, which the unit tests exercise on recorded words.
 */
static __always_inline __s64 scan_latency(struct folio *folio, int page_nid)
{
	__u32 bits = stamp_layout.bits, buckets = stamp_layout.buckets & 31;
	__u64 word, mask, stamp, now_ms;

	if (stamp_layout.word == HOTPAGE_STAMP_NONE || !stamp_layout.hz || !bits || bits > 32)
		return -1;
	word = folio->flags;
	/* Self-check: a wrong layout shows as node bits that are not the page's node. */
	if (stamp_layout.word == HOTPAGE_STAMP_FLAGS && stamp_layout.node_bits &&
	    stamp_layout.node_bits < 32 &&
	    ((word >> (stamp_layout.node_shift & 63)) & ((1ULL << stamp_layout.node_bits) - 1)) !=
		    (__u64)page_nid) {
		count(HOTPAGE_CNT_STAMP_MISMATCH);
		return -1;
	}
	mask = (1ULL << bits) - 1;
	if (stamp_layout.word == HOTPAGE_STAMP_FLAGS) {
		stamp = (word >> (stamp_layout.shift & 63)) & mask;
	} else {
		if (!bpf_core_field_exists(folio->_last_cpupid))
			return -1;
		stamp = (__u32)folio->_last_cpupid & mask;
	}
	if (stamp == mask) {
		count(HOTPAGE_CNT_STAMP_UNSET);
		return -1;
	}
	/* jiffies_to_msecs() is an unsigned int: the stamp holds its low bits. */
	now_ms = (__u32)(bpf_jiffies64() * 1000 / stamp_layout.hz);
	return (now_ms - (stamp << buckets)) & (mask << buckets);
}

SEC("fentry/numa_migrate_check")
int BPF_PROG(hint_fault, struct folio *folio, struct vm_fault *vmf, unsigned long addr)
{
	__u8 order, flags = 0;
	__u64 pfn, page_pfn;
	__s64 latency;
	int nid;

	count(HOTPAGE_CNT_SEEN);

	if (vmf->pte) {
		page_pfn = entry_pfn(vmf->orig_pte.pte, X86_PTE_PFN_MASK);
		/*
		 * A PTE-mapped large folio (mTHP) has one record, its first pfn's,
		 * and is moved and verified by its first page's address: the
		 * folio is mapped in one piece, so step back as many pages.
		 */
		order = folio_order_of(folio);
		pfn = page_pfn & ~((1ULL << order) - 1);
		addr -= (page_pfn - pfn) << X86_PAGE_SHIFT;
	} else {
		/* addr is already the PMD-aligned address of the folio. */
		pfn = entry_pfn(vmf->orig_pmd.pmd, X86_PMD_PFN_MASK);
		order = 9;
		flags |= HOTPAGE_EV_PMD;
	}
	if (!pfn) {
		count(HOTPAGE_CNT_NO_PFN);
		return 0;
	}

	nid = lower_tier_nid(pfn);
	if (nid == HOTPAGE_NO_NODE) {
		count(HOTPAGE_CNT_FILTERED);
		return 0;
	}

	if (vmf->flags & bpf_core_enum_value(enum fault_flag, FAULT_FLAG_WRITE))
		flags |= HOTPAGE_EV_WRITE;
	latency = scan_latency(folio, nid);
	if (latency >= 0)
		flags |= HOTPAGE_EV_LATENCY;
	emit(pfn, addr, bpf_get_current_pid_tgid() >> 32, nid, order, flags,
	     latency >= 0 ? (__u32)latency : 0);
	return 0;
}
