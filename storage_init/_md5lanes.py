"""MD5 of many spans of files at once, 16 to a SIMD vector (`_md5x16.c`).

A multipart ETag is the MD5 of its parts' MD5s, and the parts are independent
messages; so are small files, each with its own MD5 ETag. One MD5 runs at
~0.6 GiB/s whatever the CPU (a serial chain of steps); 16 of them advance
together in the lanes of one vector for about the cost of one
(`benchmarks/kernels.py`: hashlib 0.52 GiB/s on this machine). Spans are hashed
from the written files through read-only maps of them, 1 MiB per lane at a time:
from the page cache, with no copy (a read-back through a buffer cost as much
again as the hashing, in the kernel's copy).

The kernel is part of the package's C library (`_native`); ctypes releases the GIL
for the call. Without the library `available()` is false and callers use hashlib.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import struct
from functools import cache
from typing import TYPE_CHECKING

from ._native import LIBRARY, libc_calls, library
from .errors import IntegrityError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["HALF", "LANES", "LIBRARY", "STEP", "available", "md5_spans"]

LANES = 16
#: Spans that a call with lanes 8-15 idle hashes at up to 1.6x the speed per lane
#: (AVX2: one vector to step, not two; 50 MiB spans by hand: 1 in 0.15 s, 8 in
#: 0.20, against 0.24 and 0.30 stepping both).
HALF = 8

#: Bytes per lane per step: mapped at once (16 MiB for 16 lanes, counted in the
#: RSS while mapped). By hand, 1-4 MiB hashed 16 x 50 MiB in 0.12-0.15 s, 256 KiB
#: in 0.17.
STEP = 1024 * 1024

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


def md5_spans(
    spans: Sequence[tuple[int, int, int]], *, kernel: _Kernel | None = None
) -> list[bytes]:
    """Return the MD5 digest of each ``(fd, offset, length)`` span, in order.

    The spans may lie in one file (the parts of a multipart upload) or in many
    (small files), and may overlap. A call's cost is that of its longest lane
    per 16 spans, however many lanes are busy (with `HALF` or fewer, about
    0.6 of it): give it many spans at once.

    Blocking: run it in a thread. Memory: maps of `STEP` bytes per lane (page
    cache, not copied) and a few KiB.

    Args:
        spans: ``(fd, offset, length)``: a file open for reading, and where in it.
        kernel: another build of the kernel (tests: each CPU variant); default
            the package's.

    Raises:
        RuntimeError: the kernel is not `available`.
        IntegrityError: a file ends before its span does.
        OSError: a read failed (where a file cannot be mapped).
    """
    kernel = kernel or _kernel()
    if kernel is None:
        msg = f"the MD5 kernel {LIBRARY.name} is not built"
        raise RuntimeError(msg)
    # A map past the end of a file would fault when read: check first (the
    # engine's temp files have their full size from the start).
    sizes = {fd: os.fstat(fd).st_size for fd in {fd for fd, _, _ in spans}}
    if short := [(fd, o + n) for fd, o, n in spans if o + n > sizes[fd]]:
        fd, at = short[0]
        msg = f"file shorter than expected at byte {sizes[fd]} (a span ends at {at})"
        raise IntegrityError(msg)
    fds = (ctypes.c_int * LANES)()
    pad = (ctypes.c_char * (_PAD * LANES))()
    state = (ctypes.c_uint32 * (4 * LANES))()
    pos = (ctypes.c_uint64 * LANES)()
    end = (ctypes.c_uint64 * LANES)()
    length = (ctypes.c_uint64 * LANES)()
    failed = ctypes.c_uint32()
    owner = [-1] * LANES
    digests: list[bytes] = [b""] * len(spans)
    queue = iter(enumerate(spans))
    active = 0
    while True:
        for j in range(LANES):
            if owner[j] < 0 and (item := next(queue, None)) is not None:
                owner[j], (fds[j], offset, size) = item
                pos[j], end[j], length[j] = offset, offset + size, size
                for word in range(4):
                    state[word * LANES + j] = _IV[word]
                active |= 1 << j
        if not active:
            return digests
        done = kernel.spans(
            ctypes.byref(kernel.mapper), fds, state, pos, end, length, active,
            ctypes.addressof(pad), STEP, ctypes.byref(failed),
        )  # fmt: skip
        if done < 0:
            # A file system that cannot map files (few, but some FUSE ones):
            # hashlib, reading through a buffer, gets there too.
            return _md5_read(spans)
        for j in range(LANES):
            if done >> j & 1:
                words = (state[word * LANES + j] for word in range(4))
                digests[owner[j]] = struct.pack("<4I", *words)
                owner[j] = -1
                active &= ~(1 << j)


def _md5_read(spans: Sequence[tuple[int, int, int]]) -> list[bytes]:
    """`md5_spans` with hashlib, reading `STEP` bytes at a time.

    Raises:
        IntegrityError: the file ends before a span does.
        OSError: a read failed.
    """
    digests = []
    for fd, offset, size in spans:
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
