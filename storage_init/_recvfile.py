"""Receive a plain-TCP body straight into a file: the native loop of ``_recvfile.c``.

The connection (`backends._wire`) decides when a body can go this way; the engine
says where its bytes go and which CRC they feed (a `FileRun`). Off Linux's libc,
or without the compiled library, `available` is False and bodies take the Python
loop (`Engine._receive`), byte for byte the same.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from ._native import libc_calls, library
from .writer import WRITE_PIECE, local_error

if TYPE_CHECKING:
    import mmap
    from pathlib import Path

__all__ = ["FileRun", "available", "receive_to_file"]


@dataclass(slots=True)
class FileRun:
    """Where a body's next bytes go, and the CRC they feed.

    Attributes:
        path: the file's destination, for errors.
        fd: the open file.
        offset: where the run's first byte goes.
        crc_kind: the library's number of the CRC to compute (`_crc`), or -1.
        crc: before the run, the CRC of the bytes before it; after, of those and
            the run's `received` bytes.
        received: bytes of the run received, written and CRC'd (after the call,
            whatever its outcome).
        mutex: the file's `TempFile.write_mutex`, held around each chunk's
            writes; None: no lock.
    """

    path: Path
    fd: int
    offset: int
    crc_kind: int = -1
    crc: int = 0
    received: int = 0
    mutex: ctypes.Array[ctypes.c_char] | None = None


class _Io(ctypes.Structure):
    _fields_ = [
        ("recv", ctypes.c_void_p),
        ("pwrite", ctypes.c_void_p),
        ("errno_location", ctypes.c_void_p),
        ("lock", ctypes.c_void_p),
        ("unlock", ctypes.c_void_p),
    ]


@cache
def _io() -> _Io | None:
    """The C library's calls the loop makes, or None where they are not found."""
    calls = libc_calls(
        "recv",
        "pwrite",
        "__errno_location",
        "pthread_mutex_lock",
        "pthread_mutex_unlock",
    )
    return None if calls is None else _Io(*calls)


def available() -> bool:
    """Whether the native loop can run here (the library and libc's calls found)."""
    return library() is not None and _io() is not None


def receive_to_file(
    sock: int,
    buffer: bytearray | mmap.mmap,
    chunk: int,
    run: FileRun,
    count: int,
    *,
    have: int = 0,
) -> bool:
    """Receive `count` bytes from socket `sock` into `run`, `chunk` bytes at a time.

    Blocks, with the GIL released: call it from a worker thread. `buffer` holds
    a chunk (at least `chunk` bytes); its first `have` bytes are the run's first
    bytes, already received (with the response's head). Afterwards
    `run.received` and `run.crc` count the bytes written and CRC'd, those
    included, whatever the outcome.

    Returns:
        True once all `count` bytes are in; False if the peer closed first.

    Raises:
        OSError: a receive failed; BlockingIOError when no byte came within the
            socket's ``SO_RCVTIMEO``.
        LocalIOError: a write to the file failed.
        RuntimeError: the loop is not `available`.
        ValueError: `buffer` is smaller than `chunk`, or `have` more than a
            chunk or than `count`.
    """
    native, io = library(), _io()
    if native is None or io is None:
        msg = "the native receive loop is not available"
        raise RuntimeError(msg)
    if len(buffer) < chunk:
        msg = "the buffer is smaller than a chunk"
        raise ValueError(msg)
    if not 0 <= have <= min(chunk, count):
        msg = "more bytes in hand than a chunk or the run"
        raise ValueError(msg)
    state = (ctypes.c_uint64 * 3)(0, run.crc, 0)
    status: int = native.recv_to_file(
        ctypes.byref(io),
        sock,
        (ctypes.c_char * len(buffer)).from_buffer(buffer),
        chunk,
        have,
        run.fd,
        run.offset,
        count,
        WRITE_PIECE,
        run.crc_kind,
        state,
        run.mutex,
    )
    run.received, run.crc = state[0], state[1]
    if status == -1:
        raise OSError(state[2], os.strerror(state[2]))
    if status == -2:
        error = OSError(state[2], os.strerror(state[2]))
        raise local_error(error, run.path) from error
    return status == 0
