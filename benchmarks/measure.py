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

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
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


#: ext4's flag (``chattr +T``) for a directory whose subdirectories its
#: allocator spreads over the block groups, as it does the root's (Orlov).
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_FS_TOPDIR_FL = 0x00020000


def _spread_subdirectories(parent: Path) -> None:
    """Give `parent` ext4's top-directory flag; elsewhere (tmpfs, XFS) nothing."""
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = bytearray(4)
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags)
        value = int.from_bytes(flags, sys.byteorder) | _FS_TOPDIR_FL
        fcntl.ioctl(fd, _FS_IOC_SETFLAGS, value.to_bytes(4, sys.byteorder))
    except OSError:
        pass
    finally:
        os.close(fd)


def fresh_dest(parent: Path) -> Path:
    """A new, empty destination under `parent` for one measured run.

    The destinations of earlier runs are removed and dirty pages flushed first,
    so that no run overwrites another's output or waits on its writes. Not one
    directory emptied and reused: on an ext4 without a journal (this machine's
    root), allocating an inode skips those freed in the last 5 s, 305 s while
    their inode table block is dirty (which the new files' inodes make it), and
    every skip is a buffer-cache lookup (``recently_deleted``). Into the emptied
    directory of a previous run, 1000 files of 100 KiB cost storage-init 1.9-2.0
    s of system CPU, into a new one 0.4-0.6 (by hand; perf: ``recently_deleted``
    and ``find_get_block_common``, 21 % of the samples): a cost that grew with
    every run before and fell on whichever tool came next. The new directory
    sits under a parent with the top-directory flag, so that ext4 places it (and
    its files) in a group of its own choosing, away from the inodes just freed.
    """
    parent.mkdir(parents=True, exist_ok=True)
    _spread_subdirectories(parent)
    for old in parent.iterdir():
        shutil.rmtree(old, ignore_errors=True)
    dest = parent / f"run-{time.monotonic_ns():x}"
    dest.mkdir()
    os.sync()
    return dest
