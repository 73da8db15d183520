#!/bin/sh
# Captures the /proc and /sys files hotpage reads into a fixture tree, so a
# machine's topology can be replayed in tests (every reader takes a root path).
# Usage: capture-fixture.sh OUT_DIR     (runs under busybox sh too)
# Symlinks (node*/memoryN) are stored as files holding the link target.
set -eu
out=${1:?usage: capture-fixture.sh OUT_DIR}
mkdir -p "$out"

copy() {
	src=$1
	[ -e "$src" ] || return 0
	dst="$out$src"
	mkdir -p "$(dirname "$dst")"
	if [ -L "$src" ]; then
		readlink "$src" > "$dst"
	else
		cat "$src" > "$dst" 2>/dev/null || rm -f "$dst"
	fi
}

for f in /proc/version /proc/meminfo /proc/vmstat /proc/zoneinfo \
	/proc/sys/kernel/numa_balancing /proc/sys/kernel/numa_balancing_promote_rate_limit_MBps \
	/sys/kernel/mm/transparent_hugepage/enabled \
	/sys/devices/system/memory/block_size_bytes \
	/sys/devices/system/node/online /sys/devices/system/node/possible \
	/sys/devices/system/node/has_cpu /sys/devices/system/node/has_memory \
	/sys/devices/system/node/has_normal_memory; do
	copy "$f"
done
for n in /sys/devices/system/node/node[0-9]*; do
	[ -d "$n" ] || continue
	for f in cpulist distance meminfo numastat vmstat; do copy "$n/$f"; done
	for m in "$n"/memory[0-9]*; do [ -e "$m" ] && copy "$m"; done
	for f in "$n"/access*/initiators/*_latency "$n"/access*/initiators/*_bandwidth; do
		[ -e "$f" ] && copy "$f"
	done
done
for m in /sys/devices/system/memory/memory[0-9]*; do
	[ -d "$m" ] || continue
	for f in online phys_index state valid_zones removable; do copy "$m/$f"; done
done
for t in /sys/devices/virtual/memory_tiering/memory_tier*; do
	[ -d "$t" ] && copy "$t/nodelist"
done
if [ -d /sys/bus/event_source/devices ]; then
	ls /sys/bus/event_source/devices > "$out/event_source_devices.txt"
fi
echo "captured into $out"
