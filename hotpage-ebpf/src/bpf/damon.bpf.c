// SPDX-License-Identifier: GPL-2.0-only
/*
 * DAMON's access reports: tp_btf on damon:damon_aggregated, which the kdamond
 * fires for every region of every target at the end of each aggregation
 * interval. Only the kdamond hotpage started counts (its pid in damon_owner;
 * other DAMON users' regions are dropped), and only regions seen accessed.
 * Each becomes one HOTPAGE_EV_REGION event; userspace finds the region's
 * lower-tier pages in the target's pagemap. The tracepoint's arguments moved
 * between kernels ((target_id, r, n), (t, target_id, r, n), ...): userspace
 * reads their positions from the kernel's BTF. The target's process comes
 * from the target pointer where there is one, else from its index in the
 * context (target_id), which userspace maps to the pid it configured.
 */
#define HOTPAGE_SOURCE HOTPAGE_SRC_PGTABLE_SCAN
#include "hotpage.bpf.h"

/* The kdamond thread hotpage started; 0: none yet, drop everything. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} damon_owner SEC(".maps");

/* Target index (target_id) → pid, as userspace configured the targets. */
#define HOTPAGE_DAMON_MAX_TARGETS 64
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, HOTPAGE_DAMON_MAX_TARGETS);
	__type(key, __u32);
	__type(value, __u32);
} damon_targets SEC(".maps");

/* Positions among the tracepoint's arguments; HOTPAGE_DAMON_NO_ARG: absent. */
#define HOTPAGE_DAMON_NO_ARG 0xff
const volatile __u32 region_arg = 1;
const volatile __u32 target_arg = HOTPAGE_DAMON_NO_ARG;
const volatile __u32 target_id_arg = 0;
/* Regions accessed fewer times than this in their interval are not reported. */
const volatile __u32 min_nr_accesses = 1;

/*
 * Argument i of the tracepoint. The verifier wants every ctx load at a fixed
 * offset from ctx itself, and clang would otherwise share one load between
 * the cases (ctx + 8*i, then a load from the moved pointer): hence one asm
 * load per case.
 */
#define CTX_ARG(off) ({ __u64 __v; asm volatile("%0 = *(u64 *)(%1 + " #off ")" : "=r"(__v) : "r"(ctx)); __v; })

static __always_inline __u64 arg(__u64 *ctx, __u32 i)
{
	switch (i) {
	case 0: return CTX_ARG(0);
	case 1: return CTX_ARG(8);
	case 2: return CTX_ARG(16);
	case 3: return CTX_ARG(24);
	default: return 0;
	}
}

SEC("tp_btf/damon_aggregated")
int damon_aggregated(__u64 *ctx)
{
	struct damon_region *r;
	struct damon_target *t;
	__u32 zero = 0, *owner, nr_accesses, age;
	__u64 start, end;
	int pid;

	count(HOTPAGE_CNT_SEEN);
	owner = bpf_map_lookup_elem(&damon_owner, &zero);
	if (!owner || !*owner || (__u32)(bpf_get_current_pid_tgid() >> 32) != *owner) {
		count(HOTPAGE_CNT_FILTERED);
		return 0;
	}
	r = (struct damon_region *)arg(ctx, region_arg);
	if (!r) {
		count(HOTPAGE_CNT_NO_PFN);
		return 0;
	}
	nr_accesses = BPF_CORE_READ(r, nr_accesses);
	if (nr_accesses < min_nr_accesses) {
		count(HOTPAGE_CNT_FILTERED);
		return 0;
	}
	pid = 0;
	if (target_arg != HOTPAGE_DAMON_NO_ARG) {
		t = (struct damon_target *)arg(ctx, target_arg);
		if (t)
			pid = BPF_CORE_READ(t, pid, numbers[0].nr);
	} else if (target_id_arg != HOTPAGE_DAMON_NO_ARG) {
		__u32 id = (__u32)arg(ctx, target_id_arg);
		__u32 *p = bpf_map_lookup_elem(&damon_targets, &id);

		if (p)
			pid = *p;
	}
	start = BPF_CORE_READ(r, ar.start);
	end = BPF_CORE_READ(r, ar.end);
	age = BPF_CORE_READ(r, age);
	if (!pid || end <= start) {
		count(HOTPAGE_CNT_NO_PFN);
		return 0;
	}
	emit_ext(end, start, pid, HOTPAGE_NO_NODE, 0, HOTPAGE_EV_REGION | HOTPAGE_EV_NEED_PFN,
		 nr_accesses, age);
	return 0;
}
