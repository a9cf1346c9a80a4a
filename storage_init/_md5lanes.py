"""MD5 of many spans of a file at once, 16 to a SIMD vector (`_md5x16.c`).

A multipart ETag is the MD5 of its parts' MD5s, and the parts are independent
messages. One MD5 runs at ~0.6 GiB/s whatever the CPU (a serial chain of steps);
16 of them advance together in the lanes of one vector for about the cost of one
(4.25 GiB/s on this machine's AVX-512 with the read-back, hashlib 0.52:
`benchmarks/kernels.py`). So parts are read back from the written file 64 KiB
per lane at a time, into one buffer that stays in the L2 cache, and hashed there:
reads and hashing both in the kernel.

The kernel is part of the package's C library (`_native`); ctypes releases the GIL
for the call. Without the library `available()` is false and callers use hashlib.
"""

from __future__ import annotations

import ctypes
import os
import struct
from functools import cache
from typing import TYPE_CHECKING

from ._native import LIBRARY, library
from .errors import IntegrityError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["LANES", "LIBRARY", "STEP", "available", "md5_spans"]

LANES = 16

#: Bytes read per lane per call: 16 lanes' worth (1 MiB) stays in the L2 cache
#: between the read and the hashing; 32-128 KiB all ran at the same speed.
STEP = 64 * 1024

_IV = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)
#: Room after a lane's data for the padding of its last block.
_TAIL = 128


class _Kernel:
    """The library's `md5x16_spans`, and libc's pread for it to call."""

    def __init__(self, library: ctypes.CDLL) -> None:
        u32p = ctypes.POINTER(ctypes.c_uint32)
        u64p = ctypes.POINTER(ctypes.c_uint64)
        self.spans = library.md5x16_spans
        self.spans.restype = ctypes.c_int
        self.spans.argtypes = [
            ctypes.c_void_p,  # pread
            ctypes.c_int,  # fd
            u32p,  # state
            u64p,  # pos
            u64p,  # end
            u64p,  # length
            ctypes.c_uint32,  # active lanes
            ctypes.c_void_p,  # buffer
            ctypes.c_uint32,  # slot
            ctypes.c_uint32,  # step
            u32p,  # failed lane
        ]
        pread = ctypes.CDLL(None).pread
        self.pread = ctypes.cast(pread, ctypes.c_void_p).value


@cache
def _kernel() -> _Kernel | None:
    """Return the loaded kernel, or None if the library is not built."""
    native = library()
    return None if native is None else _Kernel(native)


def available() -> bool:
    """Whether the multi-lane kernel is built and loads on this machine."""
    return _kernel() is not None


def md5_spans(
    fd: int, spans: Sequence[tuple[int, int]], *, kernel: _Kernel | None = None
) -> list[bytes]:
    """Return the MD5 digest of each ``(offset, length)`` span of file `fd`, in order.

    Blocking: run it in a thread. Memory: one buffer of 16 x (64 KiB + 128) bytes.
    The reading and hashing run in the kernel, without the GIL, until a span is
    complete: reading in Python, each of the 17 calls per step would wait for the
    GIL behind the threads receiving the download (5 ms each, at worst).

    Args:
        fd: the file, open for reading.
        spans: ``(offset, length)`` pairs; they may overlap.
        kernel: another build of the kernel (tests: each CPU variant); default
            the package's.

    Raises:
        RuntimeError: the kernel is not `available`.
        IntegrityError: the file ends before a span does.
        OSError: a read failed.
    """
    kernel = kernel or _kernel()
    if kernel is None:
        msg = f"the MD5 kernel {LIBRARY.name} is not built"
        raise RuntimeError(msg)
    slot = STEP + _TAIL
    buffer = (ctypes.c_char * (slot * LANES))()
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
                owner[j], (offset, size) = item
                pos[j], end[j], length[j] = offset, offset + size, size
                for word in range(4):
                    state[word * LANES + j] = _IV[word]
                active |= 1 << j
        if not active:
            return digests
        done = kernel.spans(
            kernel.pread, fd, state, pos, end, length, active,
            ctypes.addressof(buffer), slot, STEP, ctypes.byref(failed),
        )  # fmt: skip
        if done < 0:
            _reread(fd, pos[failed.value], end[failed.value])
            continue  # the read went through this time (EINTR): go on
        for j in range(LANES):
            if done >> j & 1:
                words = (state[word * LANES + j] for word in range(4))
                digests[owner[j]] = struct.pack("<4I", *words)
                owner[j] = -1
                active &= ~(1 << j)


def _reread(fd: int, offset: int, end: int) -> None:
    """Repeat a read the kernel could not make, to raise what went wrong.

    Raises:
        IntegrityError: the file ends before `end`.
        OSError: the read fails.
    """
    want = min(STEP, end - offset)
    got = os.pread(fd, want, offset)
    if len(got) < want:
        msg = f"file shorter than expected at byte {offset + len(got)}"
        raise IntegrityError(msg)
