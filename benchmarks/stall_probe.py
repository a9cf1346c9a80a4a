"""What a download and its server wait for: one run, sampled from /proc.

The reading of the idle time at the large end of the scaling series
(`benchmarks/FINDINGS.md`) comes from this. It runs a command (``DEST`` in it
becomes a fresh destination, made by `benchmarks.measure.fresh_dest` as the harness
makes them) and, every `--interval` seconds until it exits, samples

- the CPU: cores busy and in iowait (``/proc/stat``);
- the page cache: ``Dirty`` and ``Writeback`` (``/proc/meminfo``);
- every thread of the command and of the server (`--server-pid`): running, or
  in uninterruptible sleep (D) with its kernel stack (``/proc/PID/task/TID/stack``,
  readable by root; the wait channel otherwise).

It prints a row per half second and, per process, the kernel stacks its threads
were found waiting in, most frequent first (a count is thread samples: several
threads at once count several times).

usage: python -m benchmarks.stall_probe --server-pid PID [--interval S] -- CMD...
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import time
from pathlib import Path

from benchmarks.measure import fresh_dest

#: Where the fresh destinations go (the harness's work directory).
WORK = Path(__file__).resolve().parent.parent / ".bench" / "stall-probe"

#: Kernel frames kept per waiting thread.
FRAMES = 9


def _cpu() -> list[int]:
    with open("/proc/stat") as stat:
        return [int(v) for v in stat.readline().split()[1:]]


def _meminfo_mib(*names: str) -> list[int]:
    fields = {}
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            key, value = line.split(":", 1)
            fields[key] = int(value.split()[0]) // 1024
    return [fields[name] for name in names]


def _waiting_in(task: Path) -> str:
    """The kernel stack of a thread in D state, innermost first (or its wchan)."""
    try:
        frames = (task / "stack").read_text().splitlines()[:FRAMES]
        return " < ".join(f.split()[-1].split("+")[0] for f in frames if f)
    except OSError:
        return (task / "wchan").read_text().strip() or "?"


def _threads(pid: int) -> tuple[int, list[str]]:
    """Threads of `pid` running, and where those in D state wait."""
    running, waiting = 0, []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0, []
    for task in tasks:
        try:
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state == "R":
                running += 1
            elif state == "D":
                waiting.append(_waiting_in(task))
        except OSError:
            continue  # the thread left meanwhile
    return running, waiting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("command", nargs="+")
    args = parser.parse_args()
    dest = fresh_dest(WORK)
    argv = [str(dest) if a == "DEST" else a for a in args.command]
    rows: dict[int, list[tuple[float, ...]]] = collections.defaultdict(list)
    waits = {
        "command": collections.Counter[str](),
        "server": collections.Counter[str](),
    }
    started = time.monotonic()
    before = _cpu()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    while process.poll() is None:
        time.sleep(args.interval)
        now = _cpu()
        delta = [a - b for a, b in zip(now, before, strict=True)]
        before = now
        total = sum(delta) or 1
        cores = os.cpu_count() or 1
        # user, nice, system, irq, softirq: busy; iowait apart.
        busy = sum(delta[i] for i in (0, 1, 2, 5, 6)) / total * cores
        iowait = delta[4] / total * cores
        running = {}
        for who, pid in (("command", process.pid), ("server", args.server_pid)):
            running[who], waiting = _threads(pid)
            waits[who].update(waiting)
        dirty, writeback = _meminfo_mib("Dirty", "Writeback")
        at = time.monotonic() - started
        rows[int(at * 2)].append(
            (busy, iowait, running["command"], running["server"], dirty, writeback)
        )
    print(f"wall {time.monotonic() - started:.2f} s, exit {process.returncode}")
    print("    t  busy  iowait  R(command)  R(server)  Dirty MiB  Writeback MiB")
    for half in sorted(rows):
        xs = rows[half]
        mean = [sum(x[i] for x in xs) / len(xs) for i in range(4)]
        peak = [max(x[i] for x in xs) for i in (4, 5)]
        print(
            f"{half / 2:5.1f}  {mean[0]:4.2f}  {mean[1]:6.2f}  {mean[2]:10.1f}"
            f"  {mean[3]:9.1f}  {peak[0]:9.0f}  {peak[1]:13.0f}"
        )
    for who, counter in waits.items():
        for stack, count in counter.most_common(5):
            print(f"{who} waiting, {count} samples: {stack}")


if __name__ == "__main__":
    main()
