"""Receive a plain-TCP body straight into a file: the native loop of ``_recvfile.c``.

The connection (`backends._wire`) decides when a body can go this way; the engine
says where its bytes go and which CRC they feed (a `FileRun`). Off Linux's libc,
or without the compiled library, `available` is False and bodies take the Python
loop (`Engine._receive`), byte for byte the same. A body that feeds no CRC
can move from the socket to the file by splice(2), never through user space
(`receive_to_file`; `FileRun.splice`, which the engine takes from
`TransferConfig.splice`).

`get_to_file` goes further for a small file: the request, the response's head and
the body in one call, the GIL released once.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, NamedTuple

from ._native import libc_calls, library
from .writer import WRITE_PIECE, local_error

if TYPE_CHECKING:
    import mmap
    from pathlib import Path

__all__ = [
    "CLOSED",
    "DONE",
    "NOT_PLAIN",
    "FileGet",
    "FileRun",
    "available",
    "checksum_table",
    "get_to_file",
    "receive_to_file",
]

#: `FileGet.outcome`: every byte of the body is in the file.
DONE = 0
#: `FileGet.outcome`: the peer closed the connection (`FileGet.head_received`
#: says whether before the response began).
CLOSED = 1
#: `FileGet.outcome`: not a plain 200 of the expected size (another status, other
#: framing, a head too long): nothing was written; the connection is spent.
NOT_PLAIN = 2


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
        splice: without a CRC, move the bytes by splice (`receive_to_file`);
            off by default, as `TransferConfig.splice`.
    """

    path: Path
    fd: int
    offset: int
    crc_kind: int = -1
    crc: int = 0
    received: int = 0
    mutex: ctypes.Array[ctypes.c_char] | None = None
    splice: bool = False


class _Io(ctypes.Structure):
    _fields_ = [
        ("recv", ctypes.c_void_p),
        ("pwrite", ctypes.c_void_p),
        ("errno_location", ctypes.c_void_p),
        ("lock", ctypes.c_void_p),
        ("unlock", ctypes.c_void_p),
        ("send", ctypes.c_void_p),
        ("splice", ctypes.c_void_p),
        ("pipe2", ctypes.c_void_p),
        ("fcntl", ctypes.c_void_p),
        ("close", ctypes.c_void_p),
        ("read", ctypes.c_void_p),
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
        "send",
        "splice",
        "pipe2",
        "fcntl",
        "close",
        "read",
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

    With ``run.splice``, a body with no CRC to compute (``run.crc_kind`` -1) goes
    from the socket to the file by splice(2), never through `buffer`: one copy
    in the kernel, not two (whether that is cheaper depends on the machine:
    `TransferConfig.splice`). A socket or file that cannot splice is received
    through `buffer` instead, byte for byte the same.

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
        int(run.splice),
    )
    run.received, run.crc = state[0], state[1]
    _raise_failure(status, state[2], run.path)
    return status == 0


def _raise_failure(status: int, errno: int, path: Path) -> None:
    """Raise what a native call's negative `status` says failed, if it does.

    Raises:
        OSError: -1, a send or a receive failed (`errno`).
        LocalIOError: -2, a write to `path` failed.
    """
    if status == -1:
        raise OSError(errno, os.strerror(errno))
    if status == -2:
        error = OSError(errno, os.strerror(errno))
        raise local_error(error, path) from error


# A NamedTuple, not a frozen dataclass: defining it at import costs a tenth
# (README, "Start-up is mostly imports").
class FileGet(NamedTuple):
    """What `get_to_file` did.

    Attributes:
        outcome: `DONE`, `CLOSED` or `NOT_PLAIN`.
        head: the response's head without its blank line, once it was whole.
        head_received: bytes of the response received before the body (0: none).
        received: body bytes written (and CRC'd).
        crc_kind: the library's number of the CRC computed (`_crc`), or -1.
        crc: the CRC of the `received` bytes.
    """

    outcome: int
    head: bytes
    head_received: int
    received: int
    crc_kind: int
    crc: int


@cache
def checksum_table(
    fields: tuple[tuple[str, int], ...], default: int
) -> tuple[bytes, ctypes.Array[ctypes.c_int]]:
    """`fields` (checksum field name, CRC kind) as `get_to_file` takes them.

    The first field a response holds says which CRC its body gets; with none of
    them, `default` (-1: none).
    """
    names = b"".join(name.lower().encode("ascii") + b"\0" for name, _ in fields)
    kinds = (ctypes.c_int * (len(fields) + 1))(*(k for _, k in fields), default)
    return names + b"\0", kinds


def get_to_file(
    sock: int,
    request: bytes,
    buffer: mmap.mmap,
    chunk: int,
    head_size: int,
    fd: int,
    size: int,
    table: tuple[bytes, ctypes.Array[ctypes.c_int]],
    path: Path,
) -> FileGet:
    """Send `request` on socket `sock`; receive a `size`-byte body into file `fd`.

    Blocks, with the GIL released: call it from a worker thread. The body goes
    from offset 0 on, `chunk` bytes at a time through `buffer`, whose next
    `head_size` bytes take the head (``len(buffer) >= chunk + head_size``); it
    gets the CRC `table` (`checksum_table`) picks from the head's fields.

    Raises:
        OSError: a send or a receive failed; BlockingIOError when no byte came
            within the socket's ``SO_RCVTIMEO``.
        LocalIOError: a write to the file failed.
        RuntimeError: the loop is not `available`.
        ValueError: `buffer` is too small.
    """
    native, io = library(), _io()
    if native is None or io is None:
        msg = "the native receive loop is not available"
        raise RuntimeError(msg)
    if len(buffer) < chunk + head_size:
        msg = "the buffer is smaller than a chunk and a head"
        raise ValueError(msg)
    state = (ctypes.c_uint64 * 5)()
    whole = (ctypes.c_char * len(buffer)).from_buffer(buffer)
    base = ctypes.addressof(whole)
    names, kinds = table
    status: int = native.get_to_file(
        ctypes.byref(io),
        sock,
        request,
        len(request),
        base + chunk,
        head_size,
        names,
        kinds,
        base,
        chunk,
        fd,
        size,
        WRITE_PIECE,
        state,
    )
    _raise_failure(status, state[2], path)
    head = buffer[chunk : chunk + state[3] - 4] if status == DONE else b""
    kind = state[4] - (1 << 64) if state[4] >> 63 else state[4]
    return FileGet(status, head, state[3], state[0], kind, state[1])
