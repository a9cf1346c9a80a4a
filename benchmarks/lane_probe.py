"""Where one storage-init run spends its time on many small files: one run, in process.

The by-hand figures for the small-file path (`benchmarks/FINDINGS.md`) come from
this: it runs the command line in this process and reports

- the main thread's CPU: the event loop's (and the imports this module has not
  already made);
- context switches, voluntary and involuntary (``getrusage``): a thread that
  waits for the GIL, or for a lock, sleeps and is woken, one switch each
  (``--switch-interval`` changes how soon a waiting thread asks for the GIL);
- the cyclic GC: collections per generation and the time they took
  (`gc.callbacks`, CPU time of the collecting thread);
- the lane: how many worker tasks it started;
- hashing: CPU seconds of the threads in the MD5 kernel's calls
  (`md5x16_mapped`) and in hashlib's read-backs (`hash_written_range`);
- a lane worker's steps per small file, in thread CPU: making the temp file,
  the native GET (`_recvfile.get_to_file`: send, head, body, write, CRC), the
  Python around it (`fetch_to_file` less the native call), verifying and
  renaming (`_verified`), and the whole of `_fetch_small` (a file checked by its
  MD5 ETag is verified and renamed later, by the thread that hashes its batch:
  its `_verified` is counted, but not in the whole);
- when the first small file's GET went out, counted from the kernel's start
  of the process (`_local.process_age`, 10 ms ticks): imports, listing and
  the lane's start together. This process imports the same modules as the
  command, and a few of its own (argparse, cProfile) before them;
- with ``--profile``: cProfile of the event loop's thread (where it waits:
  locks, thread starts), the top entries by own time.

Run it from a checkout (``PYTHONPATH=CHECKOUT``) to compare code: what a checkout
lacks is reported as absent. The figures vary with the machine's load; compare
runs alternated by hand, or use `benchmarks.alternate` for wall and CPU time.

usage: python -m benchmarks.lane_probe URL DEST [--profile] [--switch-interval S]
(the endpoint and keys from the environment, as for storage-init)
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import resource
import sys
import threading
import time
from collections import Counter
from typing import Any


class _ThreadCpu:
    """Total thread CPU seconds spent in calls to wrapped functions."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._lock = threading.Lock()

    def wrap(self, func: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return func(*args, **kwargs)
            finally:
                spent = time.thread_time() - started
                with self._lock:
                    self.seconds += spent
                    self.calls += 1

        return timed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("url")
    parser.add_argument("dest")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--switch-interval",
        type=float,
        help="seconds (sys.setswitchinterval; Python's default 0.005): how often a"
        " thread waiting for the GIL asks for it",
    )
    args = parser.parse_args()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)

    gc_seconds: dict[int, float] = {}
    gc_count: Counter[int] = Counter()
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.thread_time()
        else:
            spent = time.thread_time() - gc_started[0]
            gen = info["generation"]
            gc_seconds[gen] = gc_seconds.get(gen, 0.0) + spent
            gc_count[info["generation"]] += 1

    from storage_init import _lane, _local, _md5lanes, _recvfile, engine, verify
    from storage_init.backends import _fetch
    from storage_init.cli import main as cli_main

    steps = {
        name: _ThreadCpu() for name in ("temp", "native", "fetch", "verified", "whole")
    }
    for owner, attr, name in (
        (engine.Engine, "_small_temp", "temp"),
        (_recvfile, "get_to_file", "native"),
        (_fetch._BlockingGet, "fetch_to_file", "fetch"),
        (engine, "_verified", "verified"),
        (engine.Engine, "_fetch_small", "whole"),
    ):
        setattr(owner, attr, steps[name].wrap(getattr(owner, attr)))

    first_get: list[float | None] = []
    native_get = _recvfile.get_to_file

    def noting_first(*args: Any, **kwargs: Any) -> Any:
        if not first_get:  # a race between two workers only makes it a tick later
            first_get.append(_local.process_age())
        return native_get(*args, **kwargs)

    _recvfile.get_to_file = noting_first

    kernel_cpu, readback_cpu = _ThreadCpu(), _ThreadCpu()
    kernel = _md5lanes._kernel()
    if kernel is not None:
        kernel.spans = kernel_cpu.wrap(kernel.spans)
    verify.FileDigest.hash_written_range = readback_cpu.wrap(  # type: ignore[method-assign]
        verify.FileDigest.hash_written_range
    )
    workers = [0]
    start_worker = _lane.Lane._worker

    async def counted(self: Any) -> None:
        workers[0] += 1
        await start_worker(self)

    _lane.Lane._worker = counted  # type: ignore[method-assign]

    gc.callbacks.append(on_gc)
    profile = cProfile.Profile() if args.profile else None
    sys.argv = ["storage-init", args.url, args.dest]
    started = time.perf_counter()
    loop_started = time.thread_time()
    if profile is not None:
        profile.enable()
    try:
        code = cli_main()
    finally:
        if profile is not None:
            profile.disable()
    wall = time.perf_counter() - started
    loop_cpu = time.thread_time() - loop_started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        f"exit {code}  wall {wall:.2f} s  user {usage.ru_utime:.2f}"
        f"  system {usage.ru_stime:.2f}  (whole process, imports included)\n"
        f"main thread (imports after this module's, event loop): {loop_cpu:.2f} CPU s\n"
        f"context switches: {usage.ru_nvcsw} voluntary, {usage.ru_nivcsw} involuntary\n"
        "gc: "
        + "  ".join(
            f"gen{g} {gc_count[g]} collections {gc_seconds[g]:.3f} s"
            for g in sorted(gc_count)
        )
        + f"\nlane workers started: {workers[0]}\n"
        f"MD5 kernel calls: {kernel_cpu.calls}, {kernel_cpu.seconds:.3f} CPU s"
        + ("" if kernel is not None else " (kernel not built)")
        + f"\nhashlib read-backs: {readback_cpu.calls},"
        f" {readback_cpu.seconds:.3f} CPU s\n"
        + _lane_steps(steps)
        + "\n"
        + _first_get(first_get)
    )
    if profile is not None:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(15)
        print(out.getvalue())
    return 0


def _first_get(first: list[float | None]) -> str:
    """One line: when the first small file's GET went out."""
    if not first:
        return "first small-file GET: none (no file went natively down the lane)"
    if first[0] is None:
        return "first small-file GET: unknown (no /proc/self/stat)"
    return f"first small-file GET: {1000 * first[0]:.0f} ms after the process started"


def _lane_steps(steps: dict[str, _ThreadCpu]) -> str:
    """One line: a lane worker's thread CPU per small file, step by step (ms)."""
    files = steps["whole"].calls
    if not files:
        return "lane per file: no small file went down the lane"

    def ms(seconds: float) -> str:
        return f"{1000 * seconds / files:.3f}"

    around = steps["fetch"].seconds - steps["native"].seconds
    return (
        f"lane per file ({files} files, thread CPU ms): whole"
        f" {ms(steps['whole'].seconds)}, temp file {ms(steps['temp'].seconds)},"
        f" native GET {ms(steps['native'].seconds)}, Python around it"
        f" {ms(around)}, verify and rename {ms(steps['verified'].seconds)}"
    )


if __name__ == "__main__":
    sys.exit(main())
