/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The few kernel types hotpage reads, declared by hand. preserve_access_index
 * makes every field access a CO-RE relocation, so offsets come from the running
 * kernel's BTF at load time; only names and types must match. Fields that live
 * in anonymous unions in the kernel are declared flat: the relocation search
 * descends into anonymous members.
 */
#ifndef HOTPAGE_KERNEL_TYPES_H
#define HOTPAGE_KERNEL_TYPES_H

typedef struct {
	unsigned long pte;
} pte_t;

typedef struct {
	unsigned long pmd;
} pmd_t;

/* include/linux/page-flags.h; values relocated from the kernel's enum. */
enum pageflags {
	PG_head = 6,
};

/* include/linux/mm_types.h; values relocated from the kernel's enum. */
enum fault_flag {
	FAULT_FLAG_WRITE = 1,
};

struct folio {
	unsigned long flags;
	unsigned long _flags_1;		/* 6.8+: low byte is the folio order */
	unsigned char _folio_order;	/* before 6.8 */
	int _last_cpupid;		/* only with LAST_CPUPID_NOT_IN_PAGE_FLAGS */
} __attribute__((preserve_access_index));

struct vm_fault {
	unsigned long address;
	enum fault_flag flags;
	pte_t orig_pte;			/* union with orig_pmd */
	pmd_t orig_pmd;
	pte_t *pte;			/* NULL for a PMD (THP) fault */
} __attribute__((preserve_access_index));

struct perf_sample_data {
	__u64 sample_flags;
	__u64 phys_addr;
} __attribute__((preserve_access_index));

struct bpf_perf_event_data_kern {
	struct perf_sample_data *data;
} __attribute__((preserve_access_index));

/* include/linux/pid.h: numbers[] is a flexible array; [0] is the init namespace's. */
struct upid {
	int nr;
} __attribute__((preserve_access_index));

struct pid {
	struct upid numbers[1];
} __attribute__((preserve_access_index));

/* include/linux/damon.h */
struct damon_addr_range {
	unsigned long start;
	unsigned long end;
} __attribute__((preserve_access_index));

struct damon_region {
	struct damon_addr_range ar;
	unsigned int nr_accesses;
	unsigned int age;
} __attribute__((preserve_access_index));

struct damon_target {
	struct pid *pid;		/* NULL for physical-address monitoring */
} __attribute__((preserve_access_index));

#endif /* HOTPAGE_KERNEL_TYPES_H */
