"""MD5 of many spans of a file at once, 16 to a SIMD vector (`_md5x16.c`).

A multipart ETag is the MD5 of its parts' MD5s, and the parts are independent
messages. One MD5 runs at ~0.6 GiB/s whatever the CPU (a serial chain of steps);
16 of them advance together in the lanes of one vector for about the cost of one
(9.7 GiB/s on this machine's AVX-512, measured on bytes in cache). So parts are
read back from the written file 64 KiB per lane at a time, into one buffer that
stays in the L2 cache, and hashed there.

The kernel is a C library built with the wheel when a C compiler is at hand
(`hatch_build.py`) and loaded with ctypes, which releases the GIL for the call.
Without it `available()` is false and callers use hashlib.
"""

from __future__ import annotations

import ctypes
import os
import struct
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import IntegrityError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["LIBRARY", "STEP", "available", "md5_spans"]

#: The compiled kernel, beside this module.
LIBRARY = Path(__file__).with_name("_md5x16.so")

LANES = 16

#: Bytes read per lane per call: 16 lanes' worth (1 MiB) stays in the L2 cache
#: between the read and the hashing; 32-128 KiB all ran at the same speed.
STEP = 64 * 1024

_IV = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)
#: Room after a lane's data for the padding of its last block.
_TAIL = 128


@cache
def _kernel() -> Any:
    """Return the loaded ``md5x16`` function, or None if it cannot be loaded."""
    try:
        library = ctypes.CDLL(str(LIBRARY))
    except OSError:
        return None
    function = library.md5x16
    function.restype = None
    function.argtypes = [
        ctypes.POINTER(ctypes.c_uint32),
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.POINTER(ctypes.c_uint32),
    ]
    return function


def available() -> bool:
    """Whether the multi-lane kernel is built and loads on this machine."""
    return _kernel() is not None


class _Lane:
    """One span being hashed in one lane: which, and how far."""

    __slots__ = ("end", "index", "length", "pos")

    def __init__(self, index: int, offset: int, length: int) -> None:
        self.index = index
        self.pos = offset
        self.end = offset + length
        self.length = length


def md5_spans(fd: int, spans: Sequence[tuple[int, int]]) -> list[bytes]:
    """Return the MD5 digest of each ``(offset, length)`` span of file `fd`, in order.

    Blocking: run it in a thread. Memory: one buffer of 16 x (64 KiB + 128) bytes.

    Raises:
        RuntimeError: the kernel is not `available`.
        IntegrityError: the file ends before a span does.
    """
    kernel = _kernel()
    if kernel is None:
        msg = f"the MD5 kernel {LIBRARY.name} is not built"
        raise RuntimeError(msg)
    slot = STEP + _TAIL
    buffer = bytearray(slot * LANES)
    views = [memoryview(buffer)[j * slot : (j + 1) * slot] for j in range(LANES)]
    base = ctypes.addressof((ctypes.c_char * len(buffer)).from_buffer(buffer))
    pointers = (ctypes.c_void_p * LANES)(*(base + j * slot for j in range(LANES)))
    blocks = (ctypes.c_uint32 * LANES)()
    state = (ctypes.c_uint32 * (4 * LANES))()
    digests: list[bytes] = [b""] * len(spans)
    lanes: list[_Lane | None] = [None] * LANES
    queue = iter(enumerate(spans))
    try:
        while True:
            for j in range(LANES):
                if lanes[j] is None and (item := next(queue, None)) is not None:
                    index, (offset, length) = item
                    lanes[j] = _Lane(index, offset, length)
                    for word in range(4):
                        state[word * LANES + j] = _IV[word]
            if not any(lanes):
                return digests
            for j, lane in enumerate(lanes):
                blocks[j] = 0 if lane is None else _fill(fd, lane, views[j])
            kernel(state, pointers, blocks)
            for j, lane in enumerate(lanes):
                if lane is not None and lane.pos == lane.end:
                    words = (state[word * LANES + j] for word in range(4))
                    digests[lane.index] = struct.pack("<4I", *words)
                    lanes[j] = None
    finally:
        # The views pin the buffer; release them so that it can be freed at once.
        for view in views:
            view.release()


def _fill(fd: int, lane: _Lane, view: memoryview) -> int:
    """Read the lane's next bytes into `view`, pad the last; return its blocks."""
    n = min(STEP, lane.end - lane.pos)
    got = 0
    while got < n:
        read = os.preadv(fd, [view[got:n]], lane.pos + got)
        if read <= 0:
            msg = f"file shorter than expected at byte {lane.pos + got}"
            raise IntegrityError(msg)
        got += read
    lane.pos += n
    if lane.pos < lane.end:
        return n // 64
    # The last bytes: 0x80, zeros to 56 mod 64, the message length in bits.
    padded = n + 1 + (55 - n) % 64 + 8
    view[n] = 0x80
    view[n + 1 : padded - 8] = bytes(padded - 8 - n - 1)
    view[padded - 8 : padded] = struct.pack("<Q", (lane.length * 8) % (1 << 64))
    return padded // 64
