/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * What every hotpage source shares: the ring buffer, the per-CPU counters, the
 * lower-tier filter and the emit path. Each source is its own object (one
 * .bpf.c per source), so each gets its own copy of these maps; userspace reads
 * one ring per loaded source. Define HOTPAGE_SOURCE before including this.
 */
#ifndef HOTPAGE_BPF_H
#define HOTPAGE_BPF_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "hotpage_common.h"
#include "kernel_types.h"

#ifndef HOTPAGE_SOURCE
#error "define HOTPAGE_SOURCE before including hotpage.bpf.h"
#endif

char LICENSE[] SEC("license") = "GPL";

/* Events to userspace. Size in bytes (a power of two, page multiple); userspace may resize. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

/* Diagnostics (aya-log's kernel half is Rust-only): HOTPAGE_CNT_* per CPU, in events. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HOTPAGE_NR_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Lower-tier pfn ranges, written by userspace at start-up and on memory hotplug. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hotpage_tier_map);
} tier_map SEC(".maps");

/* Events per CPU between forced consumer wake-ups (1 = wake on every event). */
const volatile __u32 wakeup_every = 512;

/* Keeps struct hotpage_event in the object's BTF so tests can check its layout. */
const struct hotpage_event *hotpage_event_layout __attribute__((unused));

static __always_inline __u64 count(__u32 idx)
{
	__u64 *val = bpf_map_lookup_elem(&counters, &idx);

	if (!val)
		return 0;
	*val += 1;
	return *val;
}

/* Node of a lower-tier pfn, or HOTPAGE_NO_NODE: binary search over sorted ranges. */
static __always_inline int lower_tier_nid(__u64 pfn)
{
	struct hotpage_tier_map *map;
	__u32 zero = 0, lo = 0, hi, mid;
	struct hotpage_pfn_range *r;
	int i;

	map = bpf_map_lookup_elem(&tier_map, &zero);
	if (!map)
		return HOTPAGE_NO_NODE;
	hi = map->nr_ranges;
	if (hi > HOTPAGE_MAX_RANGES)
		hi = HOTPAGE_MAX_RANGES;

	/* log2(HOTPAGE_MAX_RANGES) + 1 halvings settle any search. */
	for (i = 0; i < 7; i++) {
		if (lo >= hi)
			break;
		mid = (lo + hi) / 2;
		r = &map->ranges[mid & (HOTPAGE_MAX_RANGES - 1)];
		if (pfn < r->start_pfn)
			hi = mid;
		else if (pfn >= r->end_pfn)
			lo = mid + 1;
		else
			return r->nid;
	}
	return HOTPAGE_NO_NODE;
}

/*
 * Writes one event. Wake-ups are batched: the consumer is woken every
 * wakeup_every events per CPU; its drain timer collects any tail.
 */
static __always_inline void emit_ext(__u64 pfn, __u64 vaddr, __u32 pid, int page_nid, __u8 order,
				     __u8 flags, __u32 latency_ms, __u32 extra)
{
	struct hotpage_event *ev;
	__u64 emitted, wake;

	ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count(HOTPAGE_CNT_DROPPED);
		return;
	}
	ev->pfn = pfn;
	ev->vaddr = vaddr;
	ev->time_ns = bpf_ktime_get_ns();
	ev->pid = pid;
	ev->nid = bpf_get_numa_node_id();
	ev->page_nid = page_nid;
	ev->source = HOTPAGE_SOURCE;
	ev->order = order;
	ev->flags = flags;
	ev->latency_ms = latency_ms;
	ev->reserved = extra;

	emitted = count(HOTPAGE_CNT_EMITTED);
	wake = BPF_RB_NO_WAKEUP;
	if (wakeup_every <= 1 || emitted % wakeup_every == 0) {
		wake = BPF_RB_FORCE_WAKEUP;
		count(HOTPAGE_CNT_WAKEUPS);
	}
	bpf_ringbuf_submit(ev, wake);
}

static __always_inline void emit(__u64 pfn, __u64 vaddr, __u32 pid, int page_nid, __u8 order,
				 __u8 flags, __u32 latency_ms)
{
	emit_ext(pfn, vaddr, pid, page_nid, order, flags, latency_ms, 0);
}

#endif /* HOTPAGE_BPF_H */
