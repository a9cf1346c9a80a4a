"""Draw benchmarks/results/latest.json as a PNG (run in the plot virtualenv).

    python chart.py latest.json latest.png

Top: median wall time per tool for each workload (whiskers: min and max). Bottom: the
median CPU seconds of the tool's process tree.
"""

import json
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main() -> int:
    data = json.load(open(sys.argv[1]))
    runs = data["runs"]
    seeds = list(dict.fromkeys(r["seed"] for r in runs))
    tools = list(dict.fromkeys(r["tool"] for r in runs))
    fig, axes = plt.subplots(2, 1, figsize=(12, 9), sharex=True)
    width = 0.8 / len(tools)
    for panel, (key, label) in zip(
        axes, [("wall", "wall s"), ("cpu", "CPU s")], strict=True
    ):
        for i, tool in enumerate(tools):
            medians, low, high = [], [], []
            for seed in seeds:
                values = [
                    r[key] for r in runs if r["seed"] == seed and r["tool"] == tool
                ]
                m = statistics.median(values) if values else 0.0
                medians.append(m)
                low.append(m - min(values) if values else 0)
                high.append(max(values) - m if values else 0)
            xs = [x + i * width for x in range(len(seeds))]
            panel.bar(xs, medians, width, label=tool, yerr=[low, high], capsize=2)
        panel.set_ylabel(label)
        panel.grid(axis="y", alpha=0.3)
    axes[0].legend(ncols=3, fontsize=8)
    axes[1].set_xticks([x + 0.4 - width / 2 for x in range(len(seeds))])
    axes[1].set_xticklabels([s.replace(", ", "\n") for s in seeds], fontsize=8)
    machine = data["machine"]
    fig.suptitle(
        f"storage-init and peers, SeaweedFS on the same {machine['cores']}-core "
        f"machine ({machine['cpu']})",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
