"""The manifest that makes a rerun close to free.

Every file renamed into place is recorded, as one JSON line, in
``DEST/.storage-init-manifest.jsonl``: path, size, ETag, how it was verified, and
the local file's size and mtime when it was written. A rerun skips a listed object
whose size and ETag match its entry while the local file still has the recorded
size and mtime; anything else is downloaded again. An archive that was unpacked (and
deleted) is skipped on the strength of its entry alone. The name starts with a dot, so
model servers that list or glob the directory do not see it; Hugging Face, vLLM,
TGI and Triton all ignore hidden files.

Lines are appended as files complete (written out at least once a second), so a run
killed half-way still lets the next one skip what was finished; a run that completes
rewrites the manifest compactly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any, NamedTuple, TextIO

if TYPE_CHECKING:
    from pathlib import Path

    from .models import FileReport, ObjectInfo

__all__ = ["MANIFEST_NAME", "Entry", "Manifest"]

log = logging.getLogger(__name__)

MANIFEST_NAME = ".storage-init-manifest.jsonl"
#: Seconds between writes of appended lines. A write per line cost 67 us of the
#: event loop's time per file (1000 small files: 0.07 s).
FLUSH_INTERVAL = 1.0


# A NamedTuple, not a frozen dataclass: defining it at import costs a tenth
# (README, "Start-up is mostly imports").
class Entry(NamedTuple):
    """What was written for one path, and from which object version."""

    path: str
    source: str
    size: int
    etag: str
    verification: str
    verified: bool
    mtime_ns: int
    #: The file was an archive, unpacked into the destination and deleted.
    unpacked: bool = False

    def as_json(self) -> str:
        """One manifest line, without the newline."""
        return json.dumps(
            {
                "path": self.path,
                "source": self.source,
                "size": self.size,
                "etag": self.etag,
                "verification": self.verification,
                "verified": self.verified,
                "mtime_ns": self.mtime_ns,
                "unpacked": self.unpacked,
            },
            ensure_ascii=False,
        )


def _parse(line: str) -> Entry | None:
    try:
        data: Any = json.loads(line)
        return Entry(
            path=str(data["path"]),
            source=str(data["source"]),
            size=int(data["size"]),
            etag=str(data["etag"]),
            verification=str(data["verification"]),
            verified=bool(data["verified"]),
            mtime_ns=int(data["mtime_ns"]),
            unpacked=bool(data.get("unpacked", False)),
        )
    except (ValueError, KeyError, TypeError):
        return None


class Manifest:
    """The manifest of one destination directory, for one source.

    Every method blocks on small local I/O; `load`, `record` and `compact` are
    called once per run or per finished file.

    Args:
        dest: the destination directory.
        source: the source URI (redacted), recorded with each entry.
    """

    def __init__(self, dest: Path, source: str) -> None:
        self.path = dest / MANIFEST_NAME
        self._source = source
        self._entries: dict[str, Entry] = {}
        self._others: list[Entry] = []
        self._current: dict[str, Entry] = {}
        self._out: TextIO | None = None
        self._flushed = 0.0
        self._closed = False

    def load(self) -> None:
        """Read earlier entries; a missing or corrupt manifest counts as empty."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except (FileNotFoundError, UnicodeDecodeError):
            return
        except OSError as exc:
            log.warning("ignoring unreadable manifest %s: %s", self.path, exc.strerror)
            return
        for line in text.splitlines():
            entry = _parse(line)
            if entry is None:
                continue
            if entry.source == self._source:
                self._entries[entry.path] = entry
            else:
                self._others.append(entry)

    @property
    def has_entries(self) -> bool:
        """Whether an earlier run of this source left entries (else nothing to skip)."""
        return bool(self._entries)

    def unchanged(
        self, rel: str, info: ObjectInfo, local: Path, *, strict: bool
    ) -> Entry | None:
        """Return the entry of `rel` if the local file is still that object's bytes.

        Args:
            rel: the path relative to the destination.
            info: what the store lists for the object now.
            local: the local path of `rel`.
            strict: only trust entries whose checksum was verified.
        """
        entry = self._entries.get(rel)
        if entry is None or not info.etag or entry.etag != info.etag:
            return None
        if entry.size != info.size or (strict and not entry.verified):
            return None
        if entry.unpacked:
            # An archive unpacked by an earlier run: the same version is in place
            # (``--force`` downloads and unpacks it again).
            self._current[rel] = entry
            return entry
        try:
            stat = local.stat()
        except OSError:
            return None
        if stat.st_size != entry.size or stat.st_mtime_ns != entry.mtime_ns:
            return None
        self._current[rel] = entry
        return entry

    def record(self, report: FileReport, info: ObjectInfo, mtime_ns: int) -> None:
        """Append the entry of a file just renamed into place, `mtime_ns` its mtime.

        Lines reach the file at most `FLUSH_INTERVAL` seconds apart (and when the
        manifest is closed or compacted): a run killed in between downloads the
        last few files again on its rerun, which is all a lost line costs.
        """
        if not info.etag or self._closed:
            # Closed: the run failed meanwhile; the file stays, its line is lost.
            return
        try:
            entry = Entry(
                path=report.path,
                source=self._source,
                size=report.size,
                etag=info.etag,
                verification=report.verification,
                verified=report.verified,
                mtime_ns=mtime_ns,
            )
            if self._out is None:
                self._out = self.path.open("a", encoding="utf-8")
            self._out.write(entry.as_json() + "\n")
            now = time.monotonic()
            if now - self._flushed >= FLUSH_INTERVAL:
                self._out.flush()
                self._flushed = now
        except OSError as exc:
            # The manifest only saves work on reruns; never fail a download for it.
            log.warning("cannot update the manifest %s: %s", self.path, exc.strerror)
            return
        self._current[report.path] = entry

    def mark_unpacked(self, rel: str) -> None:
        """Record that the archive at `rel` was unpacked, then deleted."""
        entry = self._current.get(rel)
        if entry is not None:
            self._current[rel] = entry._replace(unpacked=True)

    def close(self) -> None:
        """Stop appending (after a failure, the appended lines stay).

        Lines still buffered are written now; if they cannot be (a full disk), a
        warning says so and the download goes on, as in `record`.
        """
        self._closed = True
        out, self._out = self._out, None
        if out is None:
            return
        try:
            out.close()
        except OSError as exc:
            log.warning("cannot update the manifest %s: %s", self.path, exc.strerror)

    def compact(self) -> None:
        """Rewrite the manifest with this run's files (and other sources' entries).

        A manifest that holds exactly those lines already (a first download's:
        one line appended per file) is left as it is. Replacing it frees the old
        file's blocks, and where a file system discards freed blocks at once
        (ext4 without a journal, mounted with ``discard``, as this project's
        test machine is), that waits for the disk behind the writeback of the
        download: 0.24 s at the end of a 4 GiB model, in the run whose kernel
        stacks were sampled (``submit_bio_wait < blkdev_issue_discard <
        ext4_free_blocks < ... < __dentry_kill``, under the rename; see
        `benchmarks.stall_probe`).
        """
        self.close()
        entries = [*self._others, *self._current.values()]
        lines = [e.as_json() + "\n" for e in entries]
        with (
            contextlib.suppress(OSError, UnicodeDecodeError),
            self.path.open(encoding="utf-8") as held,
        ):
            if sorted(held) == sorted(lines):
                return
        temp = self.path.with_name(self.path.name + ".tmp")
        try:
            temp.write_text("".join(lines), encoding="utf-8")
            temp.replace(self.path)
        except OSError as exc:
            log.warning("cannot rewrite the manifest %s: %s", self.path, exc.strerror)
            temp.unlink(missing_ok=True)
