// SPDX-License-Identifier: GPL-2.0-only
/*
 * Memory-access samples. A perf_event program on a sampling event that
 * userspace opens per CPU (AMD ibs_op, Intel PEBS load latency, or a software
 * event where there is no PMU) with PERF_SAMPLE_ADDR and, where the PMU gives
 * it, PERF_SAMPLE_PHYS_ADDR. With a physical address the pfn is filtered here;
 * without one the event carries pid + vaddr and userspace resolves the pfn.
 */
#define HOTPAGE_SOURCE HOTPAGE_SRC_HW_SAMPLE
#include "hotpage.bpf.h"
#include <linux/bpf_perf_event.h>
#include <linux/perf_event.h>

/* Set by userspace when its events request PERF_SAMPLE_PHYS_ADDR (bool as u32). */
const volatile __u32 want_phys_addr = 0;

/* User addresses end below the canonical hole on x86-64. */
#define USER_ADDR_MAX		0x00007fffffffffffULL
#define PAGE_SHIFT		12

SEC("perf_event")
int hw_sample(struct bpf_perf_event_data *ctx)
{
	struct bpf_perf_event_data_kern *kctx = (void *)ctx;
	struct perf_sample_data *data;
	__u64 vaddr, phys = 0, pfn;
	__u32 pid;
	int nid;

	count(HOTPAGE_CNT_SEEN);

	vaddr = ctx->addr;
	pid = bpf_get_current_pid_tgid() >> 32;
	if (!vaddr || vaddr > USER_ADDR_MAX || !pid) {
		count(HOTPAGE_CNT_NO_PFN);
		return 0;
	}

	/* Two probe reads: only when the event can carry a physical address. */
	if (want_phys_addr) {
		data = BPF_CORE_READ(kctx, data);
		if (data && (BPF_CORE_READ(data, sample_flags) & PERF_SAMPLE_PHYS_ADDR))
			phys = BPF_CORE_READ(data, phys_addr);
	}
	if (!phys) {
		/* No physical address: userspace resolves and filters. */
		emit(0, vaddr, pid, HOTPAGE_NO_NODE, 0, HOTPAGE_EV_NEED_PFN, 0);
		return 0;
	}

	pfn = phys >> PAGE_SHIFT;
	nid = lower_tier_nid(pfn);
	if (nid == HOTPAGE_NO_NODE) {
		count(HOTPAGE_CNT_FILTERED);
		return 0;
	}
	emit(pfn, vaddr, pid, nid, 0, 0, 0);
	return 0;
}
