#!/usr/bin/env python3
"""Checks Prometheus text exposition files with the reference Python parser.

Usage: check-prometheus.py FILE...   Exit 0 when every file parses and follows
hotpage's naming rules (hotpage_ prefix, counters ending in _total, base units,
no pid labels, histogram buckets cumulative up to +Inf = _count).
"""
import sys

from prometheus_client.parser import text_string_to_metric_families


def check(path):
    text = open(path, encoding="utf-8").read()
    # The parser adds "_total" to counter samples itself, so the rule is
    # checked on the text as written.
    for line in text.splitlines():
        parts = line.split()
        if parts[:2] == ["#", "TYPE"] and len(parts) == 4 and parts[3] == "counter":
            if not parts[2].endswith("_total"):
                raise ValueError(f"{parts[2]}: counter name without _total")
    families = list(text_string_to_metric_families(text))
    if not families:
        raise ValueError("no metric families")
    for fam in families:
        if not fam.name.startswith("hotpage_"):
            raise ValueError(f"{fam.name}: not hotpage_ prefixed")
        if fam.type == "counter" and not any(s.name.endswith("_total") for s in fam.samples):
            raise ValueError(f"{fam.name}: counter without _total samples")
        for s in fam.samples:
            if "pid" in s.labels:
                raise ValueError(f"{s.name}: pid label")
        if fam.type == "histogram":
            by_series = {}
            for s in fam.samples:
                key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
                by_series.setdefault(key, []).append(s)
            for key, samples in by_series.items():
                buckets = [s for s in samples if s.name.endswith("_bucket")]
                counts = [s.value for s in samples if s.name.endswith("_count")]
                values = [b.value for b in buckets]
                if values != sorted(values):
                    raise ValueError(f"{fam.name}{key}: buckets not cumulative")
                if buckets[-1].labels["le"] != "+Inf" or counts != [values[-1]]:
                    raise ValueError(f"{fam.name}{key}: +Inf bucket differs from _count")
    return len(families)


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    for path in sys.argv[1:]:
        try:
            n = check(path)
        except Exception as e:  # noqa: BLE001 - report any parse failure as one line
            print(f"{path}: {e}", file=sys.stderr)
            return 1
        print(f"{path}: {n} metric families parse")
    return 0


if __name__ == "__main__":
    sys.exit(main())
