// SPDX-License-Identifier: GPL-2.0-only
/*
 * Benchmark baseline: an empty perf_event program. Attached where hotpage's
 * programs attach, it measures what the hook costs before hotpage does anything.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("perf_event")
int empty(void *ctx)
{
	return 0;
}
