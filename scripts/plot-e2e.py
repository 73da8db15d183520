#!/usr/bin/env python3
"""Draws `cargo xtask vm bench e2e`'s results: the share of the hot set on
node 0 over time, one panel per scenario, one line per system (its first
repetition; the legend gives the median precision over the repetitions).

Usage: plot-e2e.py E2E_JSON OUT_PNG
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    report = json.load(open(sys.argv[1], encoding="utf-8"))
    scenarios = []
    for run in report["runs"]:
        if run["scenario"] not in scenarios:
            scenarios.append(run["scenario"])
    fig, axes = plt.subplots(len(scenarios), 1, figsize=(9, 3.2 * len(scenarios)), squeeze=False)
    median_precision = {(c["scenario"], c["system"]): c["precision"] for c in report.get("cells", [])}
    for ax, sc in zip(axes[:, 0], scenarios):
        for run in report["runs"]:
            if run["scenario"] != sc or run.get("rep", 0) != 0:
                continue
            t = [s["t"] for s in run["timeline"]]
            hot = [100.0 * s["hot_on_node0"] for s in run["timeline"]]
            precision = median_precision.get((sc, run["system"]), run["precision"])
            label = f'{run["label"]} (precision {100.0 * precision:.0f}%)'
            ax.plot(t, hot, label=label, linewidth=1.6)
        ax.set_title(sc, fontsize=10)
        ax.set_ylabel("hot set on node 0 (%)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[-1, 0].set_xlabel("seconds since the workload started")
    fig.suptitle(f'emulated CXL box, Linux {report["kernel"]}, scans: {report["scan"]}', fontsize=10)
    # tight_layout leaves the suptitle out: keep about 0.4 in above the plots for it.
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))
    fig.savefig(sys.argv[2], dpi=110)
    print(f"plot: {sys.argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
