"""MD5 of many spans of files at once, 16 to a SIMD vector (`_md5x16.c`).

A multipart ETag is the MD5 of its parts' MD5s, and the parts are independent
messages. One MD5 runs at ~0.6 GiB/s whatever the CPU (a serial chain of steps);
16 of them advance together in the lanes of one vector for about the cost of one
(`benchmarks/kernels.py`: hashlib 0.52 GiB/s on this machine). Parts are hashed
from the written file through read-only maps of it, 1 MiB per lane at a time:
from the page cache, with no copy (a read-back through a buffer cost as much
again as the hashing, in the kernel's copy).

`LaneHasher` keeps each message's state between calls, so parts can be hashed as
their bytes land, not only once whole: the last parts of a file are then hashed
while they arrive instead of after (at 16 lanes' speed, one 50 MB part takes as
long to hash as 16 do).

The kernel is part of the package's C library (`_native`); ctypes releases the GIL
for the call. Without the library `available()` is false and callers use hashlib.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import struct
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from ._native import LIBRARY, libc_calls, library
from .errors import IntegrityError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "LANES",
    "LIBRARY",
    "MIN_STEP",
    "STEP",
    "LaneHasher",
    "available",
    "md5_spans",
]

LANES = 16

#: Bytes per lane per step: mapped at once (16 MiB for 16 lanes, counted in the
#: RSS while mapped). By hand, 1-4 MiB hashed 16 x 50 MiB in 0.12-0.15 s, 256 KiB
#: in 0.17.
STEP = 1024 * 1024

#: Unless eager, `LaneHasher.advance` waits until 16 spans have at least this much
#: landed and not hashed: a call costs as much with one busy lane as with 16.
MIN_STEP = 4 * 1024 * 1024
_IV = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)
#: Bytes per lane of the buffer for the last blocks, padded.
_PAD = 128


class _Mapper(ctypes.Structure):
    _fields_ = [
        ("mmap", ctypes.c_void_p),
        ("munmap", ctypes.c_void_p),
        ("page", ctypes.c_uint64),
    ]


class _Kernel:
    """The library's `md5x16_mapped`, and libc's mmap and munmap for it to call.

    Raises:
        OSError: the C library has no mmap or munmap.
    """

    def __init__(self, library: ctypes.CDLL) -> None:
        u32p = ctypes.POINTER(ctypes.c_uint32)
        u64p = ctypes.POINTER(ctypes.c_uint64)
        self.spans = library.md5x16_mapped
        self.spans.restype = ctypes.c_int
        self.spans.argtypes = [
            ctypes.c_void_p,  # struct mapper *
            ctypes.POINTER(ctypes.c_int),  # fd per lane
            u32p,  # state
            u64p,  # pos
            u64p,  # stop
            u64p,  # end
            u64p,  # length
            ctypes.c_uint32,  # active lanes
            ctypes.c_void_p,  # pad
            ctypes.c_uint64,  # window
            u32p,  # failed lane
        ]
        calls = libc_calls("mmap", "munmap")
        if calls is None:
            msg = "the C library has no mmap"
            raise OSError(msg)
        self.mapper = _Mapper(*calls, os.sysconf("SC_PAGE_SIZE"))


@cache
def _kernel() -> _Kernel | None:
    """Return the loaded kernel, or None if the library is not built."""
    native = library()
    if native is None:
        return None
    try:
        return _Kernel(native)
    except OSError:
        return None


def available() -> bool:
    """Whether the multi-lane kernel is built and loads on this machine."""
    return _kernel() is not None


@dataclass(slots=True)
class _Span:
    """One message: `length` bytes of file `fd` from `start`."""

    fd: int
    start: int
    length: int
    #: The next byte to hash, and the MD5 state (A, B, C, D) before it.
    pos: int = 0
    state: tuple[int, int, int, int] = _IV
    digest: bytes | None = None

    @property
    def end(self) -> int:
        return self.start + self.length


class LaneHasher:
    """The MD5s of many spans of files, advanced 16 at a time as their bytes land.

    Blocking: call it from one thread at a time. Memory: maps of `STEP` bytes per
    lane while a call runs (page cache, not copied) and a few KiB.

    Args:
        spans: ``(fd, offset, length)`` per message; they may overlap.
        kernel: another build of the kernel (tests: each CPU variant); default
            the package's.

    Raises:
        RuntimeError: the kernel is not `available`.
    """

    def __init__(
        self, spans: Sequence[tuple[int, int, int]], *, kernel: _Kernel | None = None
    ) -> None:
        kernel = kernel or _kernel()
        if kernel is None:
            msg = f"the MD5 kernel {LIBRARY.name} is not built"
            raise RuntimeError(msg)
        self._kernel = kernel
        self._spans = [_Span(fd, start, n, pos=start) for fd, start, n in spans]
        self._open = list(range(len(self._spans)))
        #: Set when a file could not be mapped: hashlib from then on.
        self._unmapped = False
        self._pad = (ctypes.c_char * (_PAD * LANES))()
        self._fd = (ctypes.c_int * LANES)()
        self._state = (ctypes.c_uint32 * (4 * LANES))()
        self._pos = (ctypes.c_uint64 * LANES)()
        self._stop = (ctypes.c_uint64 * LANES)()
        self._end = (ctypes.c_uint64 * LANES)()
        self._length = (ctypes.c_uint64 * LANES)()
        self._failed = ctypes.c_uint32()

    @property
    def done(self) -> bool:
        """Whether every span is hashed."""
        return not self._open

    @property
    def hashed(self) -> list[int]:
        """Per span, the bytes hashed so far (its length once it has its digest)."""
        return [s.pos - s.start for s in self._spans]

    @property
    def digests(self) -> list[bytes]:
        """The spans' MD5s, in order.

        Raises:
            RuntimeError: not `done`.
        """
        if self._open:
            msg = f"{len(self._open)} spans not hashed yet"
            raise RuntimeError(msg)
        return [s.digest or b"" for s in self._spans]

    def advance(self, landed: Sequence[int], *, eager: bool) -> bool:
        """Hash the spans' bytes that have landed; return whether all are hashed.

        Args:
            landed: per span, the offset up to which its file holds its bytes
                (clamped to the span; bytes before it must not change).
            eager: hash all there is: the last bytes are on their way, and time
                matters more than CPU. Otherwise only while 16 spans each have
                `MIN_STEP` bytes or more to go, the same number each, so that no
                lane idles (a call costs as much with one busy lane as with 16).

        Raises:
            IntegrityError: a file ends before a span's landed bytes do.
            OSError: a read failed (where a file cannot be mapped).
        """
        while self._open:
            if self._unmapped:
                self._hash_read(landed)
                return not self._open
            lanes, stops = self._plan(landed, eager=eager)
            if not lanes or not self._run(lanes, stops):
                return False
        return True

    def _plan(
        self, landed: Sequence[int], *, eager: bool
    ) -> tuple[list[int], list[int]]:
        """The spans to hash next (up to 16) and where each stops."""
        ready: list[tuple[int, int, int]] = []  # (bytes to go, index, stop)
        for i in self._open:
            span = self._spans[i]
            top = min(max(landed[i], span.pos), span.end)
            ahead = top - span.pos
            if top == span.end or ahead >= (64 if eager else MIN_STEP):
                ready.append((ahead, i, top))
        ready.sort(key=lambda r: (-r[0], r[1]))
        ready = ready[:LANES]
        if eager:
            return [i for _, i, _ in ready], [top for _, _, top in ready]
        if len(ready) < LANES:
            return [], []
        # The same number of bytes for every lane: whole blocks of the smallest;
        # a span that has landed whole and would be left with less than a block
        # is finished.
        share = ready[-1][0] - ready[-1][0] % 64
        lanes, stops = [], []
        for _, i, top in ready:
            span = self._spans[i]
            stop = span.pos + share
            lanes.append(i)
            stops.append(span.end if top == span.end and span.end - stop < 64 else stop)
        return lanes, stops

    def _run(self, lanes: list[int], stops: list[int]) -> bool:
        """One kernel call over `lanes`, up to `stops`; keep what it did.

        Returns whether it got anywhere (the planner's stops always should).
        """
        spans = [self._spans[i] for i in lanes]
        sizes: dict[int, int] = {}
        for span, stop in zip(spans, stops, strict=True):
            # A map past the end of a file would fault when read: check first.
            size = sizes.get(span.fd)
            if size is None:
                size = sizes[span.fd] = os.fstat(span.fd).st_size
            if stop > size:
                msg = (
                    f"file shorter than expected at byte {size} (a span ends at {stop})"
                )
                raise IntegrityError(msg)
        k, state = self._kernel, self._state
        active = 0
        for j, (span, stop) in enumerate(zip(spans, stops, strict=True)):
            self._fd[j] = span.fd
            self._pos[j], self._stop[j] = span.pos, stop
            self._end[j], self._length[j] = span.end, span.length
            for word in range(4):
                state[word * LANES + j] = span.state[word]
            active |= 1 << j
        done: int = k.spans(
            ctypes.byref(k.mapper), self._fd, state, self._pos, self._stop,
            self._end, self._length, active, ctypes.addressof(self._pad), STEP,
            ctypes.byref(self._failed),
        )  # fmt: skip
        if done < 0:
            # A file system that cannot map files (few, but some FUSE ones):
            # hashlib, reading through a buffer, gets there too, from the start.
            self._unmapped = True
            for span in self._spans:
                span.pos, span.state = span.start, _IV
            return True
        moved = done > 0
        for j, span in enumerate(spans):
            moved = moved or int(self._pos[j]) != span.pos
            words = (state[0 * LANES + j], state[1 * LANES + j],
                     state[2 * LANES + j], state[3 * LANES + j])  # fmt: skip
            span.pos, span.state = self._pos[j], words
            if done >> j & 1:
                span.digest = struct.pack("<4I", *words)
        self._open = [i for i in self._open if self._spans[i].digest is None]
        return moved

    def _hash_read(self, landed: Sequence[int]) -> None:
        """Hash the spans that have landed whole with hashlib (no maps)."""
        for i in self._open:
            span = self._spans[i]
            if landed[i] >= span.end:
                (span.digest,) = _md5_read(span.fd, [(span.start, span.length)])
        self._open = [i for i in self._open if self._spans[i].digest is None]


def md5_spans(
    fd: int, spans: Sequence[tuple[int, int]], *, kernel: _Kernel | None = None
) -> list[bytes]:
    """Return the MD5 digest of each ``(offset, length)`` span of file `fd`, in order.

    Blocking: run it in a thread. Memory: as `LaneHasher`.

    Args:
        fd: the file, open for reading.
        spans: ``(offset, length)`` pairs; they may overlap.
        kernel: another build of the kernel (tests: each CPU variant); default
            the package's.

    Raises:
        RuntimeError: the kernel is not `available`.
        IntegrityError: the file ends before a span does.
        OSError: a read failed (where the file cannot be mapped).
    """
    hasher = LaneHasher([(fd, o, n) for o, n in spans], kernel=kernel)
    hasher.advance([o + n for o, n in spans], eager=True)
    return hasher.digests


def _md5_read(fd: int, spans: Sequence[tuple[int, int]]) -> list[bytes]:
    """`md5_spans` with hashlib, reading `STEP` bytes at a time.

    Raises:
        IntegrityError: the file ends before a span does.
        OSError: a read failed.
    """
    digests = []
    for offset, size in spans:
        md5 = hashlib.md5(usedforsecurity=False)
        pos, end = offset, offset + size
        while pos < end:
            block = os.pread(fd, min(STEP, end - pos), pos)
            if not block:
                msg = f"file shorter than expected at byte {pos}"
                raise IntegrityError(msg)
            md5.update(block)
            pos += len(block)
        digests.append(md5.digest())
    return digests
