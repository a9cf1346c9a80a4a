"""Housekeeping of destination directories: temp files, journals, directories.

Everything here blocks; the engine calls it through `anyio.to_thread.run_sync`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ._resume import JOURNAL_SUFFIX, RangeJournal
from .writer import PARTIAL_SUFFIX, TempFile, local_error

if TYPE_CHECKING:
    from .manifest import Manifest

__all__ = ["commit_temp", "make_dirs", "open_temp", "prepare_dest", "sweep_partials"]

#: Journals of earlier versions (a JSON document, rewritten through a ``.tmp``
#: file): no run resumes from them any more, so they are swept like orphans.
_OLD_JOURNALS = (PARTIAL_SUFFIX + ".json", PARTIAL_SUFFIX + ".json.tmp")


def prepare_dest(dest: Path, manifest: Manifest) -> None:
    """Load the manifest; delete temp files a killed run left that cannot resume."""
    manifest.load()
    journal_suffix = PARTIAL_SUFFIX + JOURNAL_SUFFIX
    for root, _, names in os.walk(dest):
        present = set(names)
        for name in names:
            if name.endswith(PARTIAL_SUFFIX):
                orphan = name + JOURNAL_SUFFIX not in present
            elif name.endswith(journal_suffix):
                orphan = name.removesuffix(JOURNAL_SUFFIX) not in present
            elif name.endswith(_OLD_JOURNALS):
                orphan = True
            else:
                continue
            if orphan and name.startswith("."):
                Path(root, name).unlink(missing_ok=True)


def sweep_partials(dest: Path) -> None:
    """After a pair completed: delete resumable leftovers no file claimed."""
    suffixes = (PARTIAL_SUFFIX, PARTIAL_SUFFIX + JOURNAL_SUFFIX, *_OLD_JOURNALS)
    for root, _, names in os.walk(dest):
        for name in names:
            if name.startswith(".") and name.endswith(suffixes):
                Path(root, name).unlink(missing_ok=True)


def make_dirs(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise local_error(exc, path) from exc


def open_temp(
    final: Path, size: int, preallocate: bool, token: str | None
) -> tuple[TempFile, RangeJournal | None]:
    """Create `final`'s directories and temp file, and load its journal (blocking).

    With a `token`, a temp file left by a killed run is reopened together with the
    journal of its completed ranges.
    """
    make_dirs(final.parent)
    temp = TempFile(final, size, preallocate=preallocate, token=token)
    if token is None:
        return temp, None
    journal = RangeJournal(temp.path.with_name(temp.path.name + JOURNAL_SUFFIX), token)
    if temp.reopened:
        journal.load()
    else:
        journal.remove()
    return temp, journal


def commit_temp(temp: TempFile, journal: RangeJournal | None) -> int:
    """Rename `temp` into place, then delete its journal (blocking).

    Returns:
        The file's modification time in nanoseconds (`TempFile.commit`).

    Raises:
        LocalIOError: the rename failed; the journal is kept, for the caller's
            clean-up to remove with the temp file.

    Both run in the same worker thread, off the event loop: deleting a file
    frees its block, and where freed blocks are discarded at once (this
    project's ext4, without a journal, mounted ``discard``) the unlink waited
    0.24-0.54 s behind the download's writeback (`benchmarks.stall_probe`),
    which on the loop held up every other file. A process killed between the
    two leaves a journal without its temp file, which `sweep_partials` removes.
    """
    mtime_ns = temp.commit()
    if journal is not None:
        journal.remove()
    return mtime_ns


def process_age() -> float | None:
    """Seconds since this process started (Linux; 10 ms resolution), else None.

    For the start-up figure in the debug log: the kernel's start time of the
    process, not the interpreter's, so imports are counted.
    """
    try:
        # The command name may hold spaces: the fields after it are counted.
        fields = Path("/proc/self/stat").read_bytes().rsplit(b")", 1)[1].split()
        ticks = int(fields[19])  # field 22, starttime, in clock ticks since boot
        return time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf(
            "SC_CLK_TCK"
        )
    except (OSError, ValueError, IndexError, AttributeError):
        return None
