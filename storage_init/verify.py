"""Choose, compute and check each file's checksum.

The choice is made for cost (`choose_check`). CRCs cost almost nothing and combine
across ranges, so no second pass is needed; MD5 costs about 1.2 CPU seconds per GiB
here, and only runs in order. In order of preference:

1. a full-object CRC (``crc64nvme``, then ``crc32c``, then ``crc32``), computed per
   range as bytes are written, and combined;
2. a composite CRC (``base64(CRC(part CRCs))-N``), with ranges aligned to the parts;
3. a full-object SHA-256 (S3's single-part checksum, an HTTP ``Digest`` or
   ``Repr-Digest``, or ``--sha256``): cheaper than MD5 on CPUs with SHA extensions;
4. a multipart ETag (``md5(part MD5s)-N``), with ranges aligned to the parts;
5. the MD5 ETag of a single-part object, or an HTTP ``Content-MD5``, hashed in order
   from the written file by a thread that trails the download;
6. the size alone.

``strict`` adds the stored SHA-256 (single-part uploads only) and fails files for
which nothing but the size is known. CRCs are computed inline as bytes are written
(`RangeDigest`); MD5 and SHA-256 by a thread reading the written ranges back in order
(`FileDigest.hash_written_range`), which keeps them off the event loop; the part MD5s
of a multipart ETag 16 at a time by the multi-lane kernel (`_parthash`, which hands
them to `FileDigest.adopt_part_md5s`), or else as the receiving threads write them;
small files' MD5 ETags 16 files at a time by the same kernel (`adopt_md5`).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import re
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from ._crc import CRC_ALGORITHMS, CrcAlgorithm, crc_algorithm
from .errors import IntegrityError
from .models import ObjectInfo, VerifyMode

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ._plan import ByteRange

__all__ = ["Check", "FileDigest", "RangeDigest", "choose_check", "listed_crc"]

_MD5_RE = re.compile(r"^[0-9a-f]{32}$")
_MULTIPART_ETAG_RE = re.compile(r"^[0-9a-f]{32}-(\d+)$")
_COMPOSITE_RE = re.compile(r"^[A-Za-z0-9+/=]+-(\d+)$")


# A NamedTuple, not a frozen dataclass: defining it at import costs a tenth
# (README, "Start-up is mostly imports").
class Check(NamedTuple):
    """What to compute for one file, and what it must equal.

    Attributes:
        label: how the report names the check (``crc64nvme``, ``multipart-etag``).
        crc: the CRC to run over each segment, if any.
        composite: compare the CRC of the segment CRCs (a composite checksum).
        segment_md5: compare the MD5 of the segment MD5s (a multipart ETag).
        whole: digests needed over the whole file in order (``md5``, ``sha256``).
        expected: expected values by name: a CRC name, ``etag``, ``md5``, ``sha256``.
        needs_parts: ranges must be built from the upload's parts.
        parts_count: the number of parts the expected value was built from.
    """

    label: str
    crc: CrcAlgorithm | None = None
    composite: bool = False
    segment_md5: bool = False
    whole: tuple[str, ...] = ()
    expected: Mapping[str, str] = MappingProxyType({})
    needs_parts: bool = False
    parts_count: int | None = None

    @property
    def verifies_content(self) -> bool:
        """Whether the check covers the bytes, not only the size."""
        return bool(self.crc or self.segment_md5 or self.whole)


def _full_crc(info: ObjectInfo) -> Check | None:
    if info.checksum_type == "COMPOSITE":
        return None
    for name in CRC_ALGORITHMS:
        value = info.checksums.get(name)
        if value and "-" not in value:
            return Check(name, crc=crc_algorithm(name), expected={name: value})
    return None


def listed_crc(info: ObjectInfo) -> CrcAlgorithm | None:
    """The full-object CRC that `info` already states, before any response."""
    check = _full_crc(info)
    return None if check is None else check.crc


def _composite_crc(info: ObjectInfo) -> Check | None:
    for name in CRC_ALGORITHMS:
        match = _COMPOSITE_RE.match(info.checksums.get(name, ""))
        if match:
            return Check(
                f"{name}-composite",
                crc=crc_algorithm(name),
                composite=True,
                expected={name: info.checksums[name]},
                needs_parts=True,
                parts_count=int(match.group(1)),
            )
    return None


def _etag(info: ObjectInfo) -> Check | None:
    etag = (info.etag or "").lower()
    if not info.etag_is_md5:
        return None
    match = _MULTIPART_ETAG_RE.match(etag)
    if match:
        return Check(
            "multipart-etag",
            segment_md5=True,
            expected={"etag": etag},
            needs_parts=True,
            parts_count=int(match.group(1)),
        )
    if _MD5_RE.match(etag):
        return Check("md5-etag", whole=("md5",), expected={"md5": etag})
    return None


def _sha256(info: ObjectInfo) -> Check | None:
    # SHA-256 (1.5 GB/s with SHA-NI) is both cheaper and stronger than MD5 here.
    sha = info.checksums.get("sha256", "")
    if sha and "-" not in sha:
        return Check("sha256", whole=("sha256",), expected={"sha256": sha})
    return None


def _content_md5(info: ObjectInfo) -> Check | None:
    # An MD5 the server states about the content (HTTP Content-MD5 or Digest).
    md5 = info.checksums.get("md5", "")
    if _MD5_RE.match(md5):
        return Check("content-md5", whole=("md5",), expected={"md5": md5})
    return None


def choose_check(info: ObjectInfo, mode: VerifyMode) -> Check:
    """Return the cheapest `Check` that `info` allows under `mode`.

    Raises:
        IntegrityError: `mode` is strict and the store offers no checksum.
    """
    if mode in (VerifyMode.OFF, VerifyMode.SIZE):
        return Check(mode.value)
    check = (
        _full_crc(info)
        or _composite_crc(info)
        or _sha256(info)
        or _etag(info)
        or _content_md5(info)
    )
    if mode is VerifyMode.STRICT:
        sha = info.checksums.get("sha256", "")
        if sha and "-" not in sha and (check is None or "sha256" not in check.whole):
            base = check or Check("")
            label = f"{base.label}+sha256" if base.label else "sha256"
            check = Check(
                label,
                crc=base.crc,
                composite=base.composite,
                segment_md5=base.segment_md5,
                whole=(*base.whole, "sha256"),
                expected={**base.expected, "sha256": sha},
                needs_parts=base.needs_parts,
                parts_count=base.parts_count,
            )
        if check is None:
            msg = "--verify strict: the store offers no checksum for this object"
            raise IntegrityError(msg)
    return check or Check("size")


class RangeDigest:
    """The CRC of each segment of one range, fed in offset order on the event loop.

    CRCs run inline because they cost little (about 10 GiB/s, see `_crc`);
    MD5 and SHA-256 do not, and run in a thread from the written file instead
    (`FileDigest.hash_written_range`).
    """

    __slots__ = ("_crc", "_ends", "_pos", "_running", "_seg_start", "crcs")

    def __init__(self, crc: CrcAlgorithm | None, byte_range: ByteRange) -> None:
        self._crc = crc
        ends, pos = [], 0
        for length in byte_range.parts:
            pos += length
            ends.append(pos)
        self._ends = ends[::-1]  # popped from the end: the next segment's end
        self._pos = 0
        self._seg_start = 0
        self._running = 0
        self.crcs: list[tuple[int, int]] = []  # (crc, length) per segment

    def update(self, data: bytes | memoryview) -> None:
        """Hash the next `data` bytes of the range."""
        crc = self._crc
        if crc is None:
            return
        view = memoryview(data)
        while view and self._ends:
            piece, view = view[: self.room], view[self.room :]
            self.advance(crc.update(piece, self._running), len(piece))

    @property
    def room(self) -> int:
        """Bytes left in the current segment (0 past the last, or without a CRC).

        Bytes CRC'd elsewhere (`native_crc`) must stop at its end, then `advance`.
        """
        return self._ends[-1] - self._pos if self._crc and self._ends else 0

    @property
    def native_crc(self) -> tuple[int, int] | None:
        """``(kind, running CRC)`` for native code to go on with, or None.

        -1 for the kind when there is no CRC to compute. None when the CRC is not
        the package library's (awscrt): the bytes must come through `update`.
        """
        if self._crc is None:
            return (-1, 0)
        if self._crc.native is None:
            return None
        return (self._crc.native, self._running)

    def advance(self, crc: int, length: int) -> None:
        """Record `length` more bytes, within `room`, whose running CRC is now `crc`.

        Raises:
            ValueError: `length` runs past the current segment.
        """
        if self._crc is None:
            return
        if length > self.room:
            msg = "bytes past the end of a segment"
            raise ValueError(msg)
        self._running = crc
        self._pos += length
        if self._pos == self._ends[-1]:
            self.crcs.append((self._running, self._pos - self._seg_start))
            self._running = 0
            self._seg_start = self._pos
            self._ends.pop()


class FileDigest:
    """The digests of a whole file, from its ranges.

    CRCs arrive through `update` (inline, as bytes are written). Digests that need
    order and cost CPU (segment MD5s for multipart ETags, whole-file MD5/SHA-256)
    are computed inline too for one-range files up to `inline_limit` bytes, where a
    thread hop would cost more than the hashing; otherwise by `hash_written_range`,
    called in range order from a thread once each range is on disk, so that they
    stay off the event loop while the download goes on.

    Segment MD5s need order only within their range (the ranges are aligned to the
    parts), so a range written by a worker thread (``update(..., threaded=True)``)
    has them computed there, as its bytes arrive: in parallel across ranges, and
    without reading the range back.
    """

    def __init__(
        self,
        check: Check,
        ranges: Sequence[ByteRange],
        *,
        inline_limit: int = 0,
        lanes: bool = False,
    ) -> None:
        self.check = check
        self.byte_ranges = list(ranges)
        self.ranges = [RangeDigest(check.crc, r) for r in ranges]
        ordered = check.segment_md5 or bool(check.whole)
        small = len(ranges) == 1 and ranges[0].length <= inline_limit
        self.inline = ordered and small
        self.deferred = ordered and not small
        #: Segment MD5s are left to the multi-lane kernel (`adopt_part_md5s`).
        self.lanes = (
            lanes
            and self.deferred
            and check.segment_md5
            and not check.whole
            and check.crc is None
        )
        self._whole = {
            name: hashlib.new(name, usedforsecurity=False) for name in check.whole
        }
        # Per range: ends of the segments still open, relative to the range start.
        self._ends = [list(itertools.accumulate(r.parts))[::-1] for r in ranges]
        self._pos = [0] * len(ranges)
        self._md5: list[Any] = [None] * len(ranges)
        self._md5s: list[list[bytes]] = [[] for _ in ranges]
        #: Per range: its segment MD5s are computed (fed as it was written, or
        #: hashed in lanes).
        self._fed = [False] * len(ranges)
        #: The whole file's MD5, computed elsewhere (`adopt_md5`).
        self._md5_adopted: bytes | None = None

    def update(
        self, index: int, data: bytes | memoryview, *, threaded: bool = False
    ) -> None:
        """Feed the next `data` bytes of range `index`, as they are written.

        Args:
            index: the range.
            data: its next bytes, in order.
            threaded: the caller is a worker thread, where segment MD5s may be
                computed at once (every update of the range must say so).
        """
        self.ranges[index].update(data)
        if self.inline:
            self._feed(index, memoryview(data))
        elif threaded and self._feeds_threaded:
            self._fed[index] = True
            self._feed(index, memoryview(data))

    @property
    def _feeds_threaded(self) -> bool:
        """Segment MD5s are computed by the receiving threads, as bytes arrive."""
        return bool(self.check.segment_md5 and not self._whole and not self.lanes)

    def native_crc(self, index: int) -> tuple[int, int] | None:
        """What native code receiving range `index` owes this digest, if it may.

        ``(kind, running CRC)`` as `RangeDigest.native_crc`: the bytes feed only
        the range's CRC here (ordered digests wait for a read-back). None when
        `update` must see them (inline or threaded MD5s, a CRC not the library's).
        """
        if self.inline or self._feeds_threaded:
            return None
        return self.ranges[index].native_crc

    def advance(self, index: int, crc: int, length: int) -> None:
        """Record `length` bytes of range `index` received natively (`native_crc`).

        They stop within the current segment (`RangeDigest.room`); `crc` is the
        range's running CRC after them.
        """
        self.ranges[index].advance(crc, length)

    def needs_readback(self, index: int) -> bool:
        """Whether range `index` must be read back for the ordered digests."""
        return self.deferred and not self._fed[index]

    @property
    def needs_md5_only(self) -> bool:
        """Whether a whole-file MD5 is all that is left to compute (`adopt_md5`)."""
        return (
            self.check.whole == ("md5",)
            and self.check.crc is None
            and not self.check.segment_md5
            and self.deferred
            and not any(self._fed)
        )

    def adopt_md5(self, md5: bytes) -> None:
        """Take the whole file's MD5, computed from the written file elsewhere.

        For a file that `needs_md5_only`: small files are hashed 16 at a time
        (`md5_spans`), not each through its own read-back.
        """
        self._md5_adopted = md5
        self._fed = [True] * len(self._fed)

    def _feed(self, index: int, block: memoryview) -> None:
        """Feed the ordered digests; ranges must come in order, bytes in order."""
        for h in self._whole.values():
            h.update(block)
        if not self.check.segment_md5:
            return
        ends = self._ends[index]
        while block and ends:
            if self._md5[index] is None:
                self._md5[index] = hashlib.md5(usedforsecurity=False)
            room = ends[-1] - self._pos[index]
            piece, block = block[:room], block[room:]
            self._md5[index].update(piece)
            self._pos[index] += len(piece)
            if self._pos[index] == ends[-1]:
                self._md5s[index].append(self._md5[index].digest())
                self._md5[index] = None
                ends.pop()

    def hash_written_range(
        self, fd: int, index: int, block_size: int, with_crc: bool = False
    ) -> None:
        """Read range `index` back from `fd` and feed the ordered digests.

        Blocking: run it in a thread, for ranges in increasing order. Reads go
        through one `block_size` buffer, the only memory this holds.

        Args:
            fd: the file, open for reading.
            index: the range.
            block_size: bytes read at a time.
            with_crc: feed the range's CRC too (a range this run did not fetch).
        """
        byte_range = self.byte_ranges[index]
        view = memoryview(bytearray(max(1, min(block_size, byte_range.length))))
        offset, end = byte_range.start, byte_range.end
        while offset < end:
            n = os.preadv(fd, [view[: min(end - offset, len(view))]], offset)
            if n <= 0:
                msg = f"file shorter than expected at byte {offset}"
                raise IntegrityError(msg)
            if with_crc:
                self.ranges[index].update(view[:n])
            if self.needs_readback(index):
                self._feed(index, view[:n])
            offset += n

    def part_spans(self, fd: int, index: int) -> list[tuple[int, int, int]]:
        """``(fd, offset, length)`` of each segment (upload part) of range `index`."""
        byte_range = self.byte_ranges[index]
        spans = []
        start = byte_range.start
        for length in byte_range.parts:
            spans.append((fd, start, length))
            start += length
        return spans

    def adopt_part_md5s(self, index: int, md5s: Sequence[bytes]) -> None:
        """Take range `index`'s segment MD5s, in order, computed from the file.

        Raises:
            ValueError: not one MD5 per segment.
        """
        if len(md5s) != len(self.byte_ranges[index].parts):
            msg = "one MD5 per segment expected"
            raise ValueError(msg)
        self._md5s[index] = list(md5s)
        self._fed[index] = True

    def verify(self, *, size: int, written: int) -> None:
        """Compare what was computed with what the store said.

        Args:
            size: the expected size.
            written: the bytes actually written.

        Raises:
            IntegrityError: the size or a checksum does not match.
        """
        if written != size:
            msg = f"size mismatch: expected {size} bytes, got {written}"
            raise IntegrityError(msg)
        check = self.check
        segments = [c for r in self.ranges for c in r.crcs]
        if check.crc is not None:
            name = check.crc.name
            if check.composite:
                joined = b"".join(check.crc.digest(c) for c, _ in segments)
                value = check.crc.update(joined, 0)
                got = f"{check.crc.encode(value)}-{len(segments)}"
            else:
                value = 0
                for crc, length in segments:
                    value = check.crc.combine(value, crc, length)
                got = check.crc.encode(value)
            _compare(name, check.expected[name], got)
        if check.segment_md5:
            md5s = [d for per_range in self._md5s for d in per_range]
            md5 = hashlib.md5(b"".join(md5s), usedforsecurity=False)
            got = f"{md5.hexdigest()}-{len(md5s)}"
            _compare("multipart ETag", check.expected["etag"], got)
        if "md5" in self._whole:
            adopted = self._md5_adopted
            got = self._whole["md5"].hexdigest() if adopted is None else adopted.hex()
            _compare("MD5 ETag", check.expected["md5"], got)
        if "sha256" in self._whole:
            got = base64.b64encode(self._whole["sha256"].digest()).decode()
            _compare("sha256", check.expected["sha256"], got)


def _compare(what: str, expected: str, got: str) -> None:
    if expected != got:
        msg = f"{what} mismatch: expected {expected}, computed {got}"
        raise IntegrityError(msg)
