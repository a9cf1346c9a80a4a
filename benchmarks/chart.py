"""Draw benchmarks/results/latest.json as a PNG (run in the plot virtualenv).

    python chart.py latest.json latest.png

Top: median wall time per tool for each workload (whiskers: min and max). Middle:
the median CPU seconds of the tool's process tree. Bottom (when the run has a
scaling series): median wall time against model size, one line per tool.
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
    scaling = [r for r in runs if r["seed"].startswith("scaling ")]
    seeds = list(dict.fromkeys(r["seed"] for r in runs if r not in scaling))
    # The harness's own order (runs come in a shuffled one); older results lack it.
    tools = data.get("tools") or list(dict.fromkeys(r["tool"] for r in runs))
    rows = 3 if scaling else 2
    fig, all_axes = plt.subplots(rows, 1, figsize=(14, 4.5 * rows))
    axes = all_axes[:2]
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
    for panel in axes:
        panel.set_xticks([x + 0.4 - width / 2 for x in range(len(seeds))])
        panel.set_xticklabels([s.replace(", ", "\n") for s in seeds], fontsize=8)
    if scaling:
        panel = all_axes[2]
        sizes = sorted({float(r["seed"].split()[1]) for r in scaling})
        for tool in tools:
            points = []
            for size in sizes:
                values = [
                    r["wall"]
                    for r in scaling
                    if r["tool"] == tool and float(r["seed"].split()[1]) == size
                ]
                if values:
                    points.append((size, statistics.median(values)))
            if points:
                panel.plot(*zip(*points, strict=True), marker="o", label=tool)
        panel.set_xlabel("model size, GiB (SDK upload, CRC64NVME)")
        panel.set_ylabel("wall s")
        panel.set_xscale("log", base=2)
        panel.set_xticks(sizes, [f"{s:g}" for s in sizes])
        panel.grid(alpha=0.3)
        panel.legend(ncols=3, fontsize=8)
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
