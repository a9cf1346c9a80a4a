"""Choose, compute and check each file's checksum.

The choice is made for cost (`choose_check`). CRCs cost almost nothing and combine
across ranges, so no second pass is needed; MD5 costs about 1.5 CPU seconds per GiB
here, and only runs in order. In order of preference:

1. a full-object CRC (``crc64nvme``, then ``crc32c``, then ``crc32``), computed per
   range by the writer threads and combined;
2. a composite CRC (``base64(CRC(part CRCs))-N``), with ranges aligned to the parts;
3. a multipart ETag (``md5(part MD5s)-N``), with ranges aligned to the parts;
4. the MD5 ETag of a single-part object: hashed by the writer when the object is one
   range, otherwise by one sequential pass over the finished file;
5. the size alone.

``strict`` adds the stored SHA-256 (single-part uploads only) and fails files for
which nothing but the size is known. Hashing is done by `RangeDigest.update`, which
the writer threads call in offset order within each range.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._crc import CRC_ALGORITHMS, CrcAlgorithm, crc_algorithm
from .errors import IntegrityError
from .models import MiB, ObjectInfo, VerifyMode

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ._plan import ByteRange

__all__ = ["Check", "FileDigest", "RangeDigest", "choose_check", "hash_file"]

_MD5_RE = re.compile(r"^[0-9a-f]{32}$")
_MULTIPART_ETAG_RE = re.compile(r"^[0-9a-f]{32}-(\d+)$")
_COMPOSITE_RE = re.compile(r"^[A-Za-z0-9+/=]+-(\d+)$")


@dataclass(frozen=True, slots=True)
class Check:
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
    expected: Mapping[str, str] = field(default_factory=dict)
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


def choose_check(info: ObjectInfo, mode: VerifyMode) -> Check:
    """Return the cheapest `Check` that `info` allows under `mode`.

    Raises:
        IntegrityError: `mode` is strict and the store offers no checksum.
    """
    if mode in (VerifyMode.OFF, VerifyMode.SIZE):
        return Check(mode.value)
    check = _full_crc(info) or _composite_crc(info) or _etag(info)
    if mode is VerifyMode.STRICT:
        sha = info.checksums.get("sha256", "")
        if sha and "-" not in sha:
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
    """Running digests of one range, fed in offset order by one writer at a time.

    Segment values (CRC ints, MD5 digests) are appended as each segment completes.
    """

    __slots__ = (
        "_crc",
        "_md5",
        "_pos",
        "_running",
        "_seg",
        "_seg_end",
        "_seg_start",
        "_whole",
        "crcs",
        "md5s",
    )

    def __init__(self, check: Check, byte_range: ByteRange, *, whole: bool) -> None:
        self._crc = check.crc
        self._md5: Any = (
            hashlib.md5(usedforsecurity=False) if check.segment_md5 else None
        )
        self._whole = [hashlib.new(n) for n in check.whole] if whole else []
        segments = byte_range.segments or (byte_range.length,)
        self._seg = list(reversed(segments))
        self._pos = 0
        self._seg_start = 0
        self._seg_end = self._seg.pop()
        self._running = 0
        self.crcs: list[tuple[int, int]] = []  # (crc, length) per segment
        self.md5s: list[bytes] = []

    def update(self, data: bytes | memoryview) -> None:
        """Hash the next `data` bytes of the range."""
        for h in self._whole:
            h.update(data)
        view = memoryview(data)
        while view:
            room = self._seg_end - self._pos
            piece, view = view[:room], view[room:]
            if self._crc is not None:
                self._running = self._crc.update(piece, self._running)
            if self._md5 is not None:
                self._md5.update(piece)
            self._pos += len(piece)
            if self._pos == self._seg_end:
                self._close_segment()
            if not piece:
                # More bytes than the range holds: the size check reports it.
                break

    def _close_segment(self) -> None:
        self.crcs.append((self._running, self._seg_end - self._seg_start))
        self._running = 0
        self._seg_start = self._seg_end
        if self._md5 is not None:
            self.md5s.append(self._md5.digest())
            self._md5 = hashlib.md5(usedforsecurity=False)
        if self._seg:
            self._seg_end += self._seg.pop()

    def whole_digests(self) -> dict[str, bytes]:
        """Digests of the whole range, for checks that need file order."""
        return {h.name: h.digest() for h in self._whole}


class FileDigest:
    """The digests of a whole file, from its ranges in order."""

    def __init__(self, check: Check, ranges: Sequence[ByteRange]) -> None:
        self.check = check
        # One range: its writer sees the file in order, so whole-file digests are
        # computed on the way. Otherwise `hash_file` makes one pass at the end.
        self.whole_in_writer = len(ranges) == 1
        self.ranges = [
            RangeDigest(check, r, whole=self.whole_in_writer) for r in ranges
        ]
        self.needs_pass = bool(check.whole) and not self.whole_in_writer

    def verify(self, *, size: int, written: int, whole: Mapping[str, bytes]) -> None:
        """Compare what was computed with what the store said.

        Args:
            size: the expected size.
            written: the bytes actually written.
            whole: whole-file digests from `hash_file`, when `needs_pass`.

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
                got = f"{check.crc.encode(check.crc.update(joined, 0))}-{len(segments)}"
            else:
                value = 0
                for crc, length in segments:
                    value = check.crc.combine(value, crc, length)
                got = check.crc.encode(value)
            _compare(name, check.expected[name], got)
        if check.segment_md5:
            md5s = [d for r in self.ranges for d in r.md5s]
            md5 = hashlib.md5(b"".join(md5s), usedforsecurity=False)
            got = f"{md5.hexdigest()}-{len(md5s)}"
            _compare("multipart ETag", check.expected["etag"], got)
        digests = dict(whole)
        if self.whole_in_writer:
            digests.update(self.ranges[0].whole_digests())
        if "md5" in check.whole:
            _compare("MD5 ETag", check.expected["md5"], digests["md5"].hex())
        if "sha256" in check.whole:
            got = base64.b64encode(digests["sha256"]).decode()
            _compare("sha256", check.expected["sha256"], got)


def _compare(what: str, expected: str, got: str) -> None:
    if expected != got:
        msg = f"{what} mismatch: expected {expected}, computed {got}"
        raise IntegrityError(msg)


def hash_file(fd: int, size: int, names: Sequence[str]) -> dict[str, bytes]:
    """Hash the first `size` bytes of `fd` in order. Blocking: run it in a thread.

    Reads with `os.pread`, so the descriptor's offset is left alone.
    """
    hashers = [hashlib.new(n) for n in names]
    block = 8 * MiB
    offset = 0
    while offset < size:
        data = os.pread(fd, min(block, size - offset), offset)
        if not data:
            break
        for h in hashers:
            h.update(data)
        offset += len(data)
    return {h.name: h.digest() for h in hashers}
