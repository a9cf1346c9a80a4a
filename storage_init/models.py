"""Value objects shared by the engine, the backends and the public API.

Everything here is a frozen dataclass or an enum: reports can be handed to callers
and across threads without copies.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "DownloadReport",
    "FileReport",
    "KiB",
    "MiB",
    "ObjectInfo",
    "ProgressCallback",
    "TransferStats",
    "VerifyMode",
]

KiB = 1024
MiB = 1024**2


class VerifyMode(enum.StrEnum):
    """How hard to check each downloaded file.

    - ``auto``: the size, plus the cheapest full-object checksum the store offers.
    - ``strict``: like ``auto``, plus a SHA-256 when the store has one; a file for
      which the store offers no checksum at all is an error.
    - ``size``: the size only.
    - ``off``: nothing beyond what the transport checks (Content-Range, length).
    """

    AUTO = "auto"
    STRICT = "strict"
    SIZE = "size"
    OFF = "off"


_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectInfo:
    """What a store says about one object.

    Attributes:
        key: the full key in the bucket.
        size: the object size in bytes.
        etag: the entity tag without quotes, used to pin the version downloaded.
        checksums: stored checksums by lowercase algorithm name (``crc64nvme``,
            ``crc32c``, ``crc32``, ``sha256``, ``sha1``), each as the store encodes
            it (base64 of the big-endian digest; ``-N`` suffix when composite).
        checksum_type: ``FULL_OBJECT`` or ``COMPOSITE`` when the store says so.
        etag_is_md5: whether the ETag is an MD5 (single part) or an MD5 of part
            MD5s (``-N``); false under SSE-KMS and SSE-C.
        parts_count: how many parts a multipart upload had, when known.
        detailed: whether checksums were asked for (a HEAD with checksum mode), as
            opposed to what a listing returns.
        ranges_ok: whether the server answers byte ranges; if not, the object is
            fetched in one GET and a retry starts it over.
    """

    key: str
    size: int
    etag: str | None = None
    checksums: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    checksum_type: str | None = None
    etag_is_md5: bool = True
    parts_count: int | None = None
    detailed: bool = False
    ranges_ok: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class FileReport:
    """The outcome for one downloaded file.

    Attributes:
        path: the path relative to the destination directory.
        size: bytes written.
        seconds: wall time from the first request to the rename.
        verification: how the file was checked, for example ``crc64nvme``,
            ``multipart-etag``, ``md5-etag``, ``size`` or ``unchanged (...)``.
        verified: whether a checksum (not only the size) matched.
        resumed: bytes reused from an interrupted earlier run, not fetched again.
    """

    path: str
    size: int
    seconds: float
    verification: str
    verified: bool
    resumed: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dictionary."""
        return {
            "path": self.path,
            "size": self.size,
            "seconds": round(self.seconds, 6),
            "verification": self.verification,
            "verified": self.verified,
            "resumed": self.resumed,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadReport:
    """The outcome of downloading one source into one destination.

    Attributes:
        source: the source URI, redacted.
        destination: the destination directory.
        files: one entry per file written, sorted by path.
        seconds: wall time of the whole pair.
        unpacked: how many files were unpacked from a downloaded archive (which
            is then deleted); 0 when the source was not an archive.
    """

    source: str
    destination: str
    files: tuple[FileReport, ...]
    seconds: float
    unpacked: int = 0

    @property
    def bytes(self) -> int:
        """Total bytes written."""
        return sum(f.size for f in self.files)

    @property
    def verified_files(self) -> int:
        """How many files matched a checksum, beyond their size."""
        return sum(f.verified for f in self.files)

    def as_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dictionary."""
        return {
            "source": self.source,
            "destination": self.destination,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 6),
            "unpacked": self.unpacked,
            "files": [f.as_dict() for f in self.files],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferStats:
    """A snapshot of a running download, across all its pairs.

    Attributes:
        bytes_done: bytes written to disk so far.
        bytes_total: bytes of every file listed so far (grows while listing).
        files_done: files verified and renamed into place.
        files_total: files listed so far.
        seconds: time since the download started.
    """

    bytes_done: int
    bytes_total: int
    files_done: int
    files_total: int
    seconds: float


class ProgressCallback(Protocol):
    """Called from the event loop after each write and each finished file.

    It must be cheap and must not block: it runs on the hot path.
    """

    def __call__(self, stats: TransferStats, /) -> None:
        """Receive the latest statistics."""
