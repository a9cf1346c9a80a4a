"""The journal that lets a large file resume after the process was killed.

Beside ``.NAME.TOKEN.partial`` lies ``.NAME.TOKEN.partial.journal``: which ranges of
the partial file are complete. The token is derived from the object's ETag and size
and from the range plan, so a journal can only describe the same bytes at the same
offsets. A range is recorded after its last byte was written, so after a SIGKILL a
rerun fetches only the ranges that were in flight. Resumed ranges are read back and
hashed like fresh ones: the journal says where bytes are, never what they are, so
bytes damaged between the runs fail the checksum (and the file starts over).

The journal is a text file: the token on its first line, then the index of each
completed range on a line of its own, appended as the range completes: one
``write`` on a descriptor kept open, where rewriting a JSON document and renaming
it into place cost ~0.4 ms of the event loop's time per range (an open, a write,
a close and a rename, each handing the GIL around). An append is one write of a
few bytes to the file's end (``O_APPEND``); a kill can only cut the last line
short, and a line without its newline is not counted.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from ._plan import ByteRange

__all__ = ["JOURNAL_SUFFIX", "RangeJournal", "resume_token"]

log = logging.getLogger(__name__)

JOURNAL_SUFFIX = ".journal"


def resume_token(etag: str, size: int, ranges: Sequence[ByteRange]) -> str:
    """A short name that changes whenever the object or the range plan does."""
    plan = ",".join(
        f"{r.start}:{r.end}:{'.'.join(map(str, r.segments))}" for r in ranges
    )
    digest = hashlib.sha256(f"{etag}\n{size}\n{plan}".encode()).hexdigest()
    return digest[:16]


class RangeJournal:
    """Completed ranges of one partial file. Blocking, tiny I/O.

    Args:
        path: the journal file (the partial file's path plus `JOURNAL_SUFFIX`).
        token: the `resume_token` of the download.
    """

    def __init__(self, path: Path, token: str) -> None:
        self.path = path
        self._token = token
        self.done: set[int] = set()
        self._fd: int | None = None

    def load(self) -> None:
        """Read completed ranges; a missing, foreign or corrupt journal is empty.

        A journal that is foreign or corrupt is deleted too, so that the ranges
        recorded from now on start a new one.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError:
            data = b""
        token, newline, rest = data.partition(b"\n")
        *lines, torn = rest.split(b"\n")  # torn: a last line cut short, or b""
        if (
            newline
            and token == self._token.encode("ascii")
            and all(line.isdigit() for line in lines)
        ):
            self.done = {int(line) for line in lines}
            if torn:
                # Cut off, or the next append would complete it into another
                # number.
                try:
                    os.truncate(self.path, len(data) - len(torn))
                except OSError:
                    self.done = set()
                    self.remove()
            return
        self.done = set()
        with contextlib.suppress(OSError):  # then the next load fails again: safe
            self.remove()

    def record(self, index: int) -> None:
        """Mark range `index` complete: append it to the journal."""
        self.done.add(index)
        try:
            if self._fd is None:
                self._fd = os.open(
                    self.path,
                    os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                    0o644,
                )
                if not os.fstat(self._fd).st_size:
                    os.write(self._fd, f"{self._token}\n".encode("ascii"))
            os.write(self._fd, b"%d\n" % index)
        except OSError as exc:
            # Only a later resume needs it; the download itself goes on.
            log.warning("cannot update %s: %s", self.path, exc.strerror)

    def remove(self) -> None:
        """Close and delete the journal (the file completed, or was abandoned)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        self.path.unlink(missing_ok=True)
