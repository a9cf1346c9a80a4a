"""Run a command and measure it: wall time, CPU seconds of its tree, peak RSS.

The command is started by a tiny launcher process, not forked from the caller:
Linux carries a forked parent's RSS high-water mark into the child across exec, so
forking from a large process (pytest, the harness) would inflate the child's peak.
The launcher waits for the command and reports ``getrusage(RUSAGE_CHILDREN)``:
user and system CPU of the whole process tree, and the largest peak RSS in it. It
also times the command itself, from just before the fork to the reaped exit, so
the launcher's own start-up (a Python interpreter's, ~20 ms) is in no tool's wall
time: what a tool costs to start is its own figure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_LAUNCHER = """
import json, os, resource, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status = os.waitpid(pid, 0)
wall = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
sys.stderr.write("\\n@@measure " + json.dumps({
    "code": os.waitstatus_to_exitcode(status), "wall": wall,
    "user": usage.ru_utime, "system": usage.ru_stime,
    "maxrss": usage.ru_maxrss * 1024}) + "\\n")
"""


@dataclass(frozen=True)
class Measured:
    """What one run of a command cost.

    Attributes:
        code: exit code.
        wall: seconds from the fork that starts the command to its exit.
        user: user CPU seconds of the command's process tree.
        system: system CPU seconds of the command's process tree.
        max_rss: the largest peak RSS of any process in the tree, in bytes.
        stderr: what the command wrote to stderr.
    """

    code: int
    wall: float
    user: float
    system: float
    max_rss: int
    stderr: str

    @property
    def cpu(self) -> float:
        """User plus system CPU seconds."""
        return self.user + self.system


def run_measured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 1800,
) -> Measured:
    """Run `argv` to completion through the launcher and return its `Measured`."""
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _LAUNCHER, *argv],
        env=dict(env if env is not None else os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
        check=False,
    )
    stderr, _, tail = proc.stderr.rpartition("\n@@measure ")
    data = json.loads(tail)
    return Measured(
        code=data["code"],
        wall=data["wall"],
        user=data["user"],
        system=data["system"],
        max_rss=data["maxrss"],
        stderr=stderr,
    )


def empty_dest(dest: Path) -> None:
    """Make `dest` an empty directory and flush dirty pages, before a measured run.

    Every run starts the same way: nothing of the previous run's output left to
    overwrite, and none of its writes still waiting to reach the disk.
    """
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    os.sync()
