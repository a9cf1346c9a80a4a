"""The journal that lets a large file resume after the process was killed.

Beside ``.NAME.TOKEN.partial`` lies ``.NAME.TOKEN.partial.json``: which ranges of the
partial file are complete. The token is derived from the object's ETag and size and
from the range plan, so a journal can only describe the same bytes at the same
offsets. A range is recorded after its last byte was written, so after a SIGKILL a
rerun fetches only the ranges that were in flight. Resumed ranges are read back and
hashed like fresh ones: the journal says where bytes are, never what they are, so
bytes damaged between the runs fail the checksum (and the file starts over).
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from ._plan import ByteRange

__all__ = ["JOURNAL_SUFFIX", "RangeJournal", "resume_token"]

log = logging.getLogger(__name__)

JOURNAL_SUFFIX = ".json"


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
        path: the journal file (the partial file's path plus ``.json``).
        token: the `resume_token` of the download.
    """

    def __init__(self, path: Path, token: str) -> None:
        self.path = path
        self._token = token
        self.done: set[int] = set()

    def load(self) -> None:
        """Read completed ranges; a missing, foreign or corrupt journal is empty."""
        try:
            data: Any = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("token") != self._token:
                return
            self.done = {int(index) for index in data["done"]}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            self.done = set()

    def record(self, index: int) -> None:
        """Mark range `index` complete and save."""
        self.done.add(index)
        data = {"token": self._token, "done": sorted(self.done)}
        temp = self.path.with_name(self.path.name + ".tmp")
        try:
            temp.write_text(json.dumps(data), encoding="utf-8")
            temp.replace(self.path)
        except OSError as exc:
            # Only a later resume needs it; the download itself goes on.
            log.warning("cannot update %s: %s", self.path, exc.strerror)

    def remove(self) -> None:
        """Delete the journal (the file completed, or its download was abandoned)."""
        self.path.unlink(missing_ok=True)
        self.path.with_name(self.path.name + ".tmp").unlink(missing_ok=True)
