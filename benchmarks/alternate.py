"""Alternate a few tools on one S3 URL, run after run, against a running SeaweedFS.

The by-hand figures of `benchmarks/FINDINGS.md` come from this: each round runs the
tools in turn (the order reversed every other round), each into a new destination
under ``--dest`` after ``sync`` (`fresh_dest`), measured like `benchmarks.run`
(`run_measured`). Every run is printed with the tool that ran just before it,
and the medians are given per tool and per (tool, predecessor): a tool's cost
can depend on what the previous run left in the kernel (see `benchmarks/FINDINGS.md`
on the model and s5cmd).

A tool is a name from `benchmarks.run.TOOLS`, optionally with environment
settings: ``storage-init:STORAGE_INIT_SMALL_FILE_CONCURRENCY=16``. ``storage-init``
is the checkout installed as the image has it (built once per invocation);
``storage-init-tree`` runs the checkout in place, on this interpreter, so that
``storage-init-tree:PYTHONPATH=OLD_CHECKOUT`` compares another version of it.

With ``--server-pid`` (SeaweedFS's, e.g. from ``.bench/seaweedfs/pid``) each run
also reports the CPU seconds the server spent meanwhile: on two cores the tool and
the server share them.

usage: python -m benchmarks.alternate URL TOOL[,TOOL...] [--rounds N] [--dest DIR]
       [--server-pid PID]
(the endpoint and keys from the environment: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, as the server scripts print them)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from benchmarks.installs import WORK
from benchmarks.measure import Measured, fresh_dest, run_measured
from benchmarks.run import TOOLS, _process_cpu

#: A run and the server's CPU seconds meanwhile (None: not measured).
Timed = tuple[Measured, float | None]


def _medians(runs: list[Timed]) -> str:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    walls = [m.wall for m, _ in runs]
    servers = [server for _, server in runs if server is not None]
    return (
        f"wall {med(walls):5.2f} s ({min(walls):.2f}-{max(walls):.2f})  "
        f"user {med([m.user for m, _ in runs]):4.2f}  "
        f"system {med([m.system for m, _ in runs]):4.2f}  "
        + (f"server {med(servers):4.2f}  " if servers else "")
        + f"n={len(runs)}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("url")
    parser.add_argument("tools", help="comma-separated, each NAME[:VAR=VALUE...]")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--dest", type=Path, default=WORK / "out")
    parser.add_argument("--server-pid", type=int, help="report this process's CPU")
    args = parser.parse_args()
    tools = args.tools.split(",")
    for tool in tools:
        if tool.split(":")[0] not in TOOLS:
            parser.error(f"unknown tool {tool!r} (known: {', '.join(TOOLS)})")
    env = dict(os.environ)

    def server_cpu() -> float | None:
        return None if args.server_pid is None else _process_cpu(args.server_pid)

    by_tool: dict[str, list[Timed]] = defaultdict(list)
    by_pair: dict[tuple[str, str], list[Timed]] = defaultdict(list)
    before = "-"
    for rnd in range(args.rounds):
        for tool in tools if rnd % 2 == 0 else tools[::-1]:
            name, *settings = tool.split(":")
            tool_env = {**env, **dict(s.split("=", 1) for s in settings)}
            dest = fresh_dest(args.dest)
            served = server_cpu()
            m = run_measured(TOOLS[name](args.url, dest, tool_env), env=tool_env)
            after = server_cpu()
            if m.code:
                print(m.stderr[-2000:], file=sys.stderr)
                return 1
            server = None if after is None or served is None else after - served
            by_tool[tool].append((m, server))
            by_pair[tool, before].append((m, server))
            print(
                f"{rnd} {tool:<40} after {before:<40} wall {m.wall:5.2f} s  "
                f"user {m.user:4.2f}  system {m.system:4.2f}"
                + ("" if server is None else f"  server {server:4.2f}"),
                flush=True,
            )
            before = tool
    shutil.rmtree(args.dest, ignore_errors=True)
    print("\nmedian (min-max):")
    for tool, runs in by_tool.items():
        print(f"{tool:<40} {_medians(runs)}")
    for (tool, prev), runs in by_pair.items():
        print(f"{tool:<40} after {prev:<40} {_medians(runs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
