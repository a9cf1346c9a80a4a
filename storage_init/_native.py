"""The package's compiled kernels: one shared library, loaded with ctypes.

``_kernels.so`` is built with the wheel from ``_md5x16.c`` (MD5 of 16 messages at
once), ``_crcfold.c`` (CRC-64/NVME, CRC-32C and CRC-32 by carry-less
multiplication) and ``_recvfile.c`` (a body's receive loop: socket, file, CRC;
a small file's whole GET) when a C compiler is at hand (``hatch_build.py``). It
needs no Python headers and links against nothing, so one build serves every
Python; ctypes releases the GIL for each call. Without it, or with a build of other
sources (its `ABI` differs), `library` is None and callers fall back (hashlib for
MD5, awscrt for CRCs, Python's receive loop).
"""

from __future__ import annotations

import ctypes
import logging
from functools import cache
from pathlib import Path
from typing import TypeVar

__all__ = [
    "ABI",
    "LIBRARY",
    "libc_calls",
    "library",
    "library_holding_gil",
    "pointer",
]

log = logging.getLogger(__name__)

#: The compiled library, beside this module.
# Not "_native.so": Python would import that name as an extension module.
LIBRARY = Path(__file__).with_name("_kernels.so")
#: The interface these modules call (``_abi.c``): a library of another is not used.
ABI = 5


_U64 = ctypes.c_uint64
_Handle = TypeVar("_Handle", bound=ctypes.CDLL)


def _declare(native: _Handle) -> _Handle:
    """Give the functions of a handle on the library their C signatures."""
    native.crc_update.restype = _U64
    native.crc_update.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, _U64]
    native.crc_combine.restype = _U64
    native.crc_combine.argtypes = [ctypes.c_int, _U64, _U64, _U64]
    native.recv_to_file.restype = ctypes.c_int
    native.recv_to_file.argtypes = [
        ctypes.c_void_p,  # struct io *
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_size_t,  # chunk
        ctypes.c_size_t,  # have
        ctypes.c_int,
        ctypes.c_int64,
        _U64,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.POINTER(_U64),
        ctypes.c_void_p,  # pthread_mutex_t *, or NULL
        ctypes.c_int,  # splice
    ]
    native.get_to_file.restype = ctypes.c_int
    native.get_to_file.argtypes = [
        ctypes.c_void_p,  # struct io *
        ctypes.c_int,
        ctypes.c_char_p,  # request
        ctypes.c_size_t,
        ctypes.c_void_p,  # head buffer
        ctypes.c_size_t,
        ctypes.c_char_p,  # checksum field names
        ctypes.c_void_p,  # int kinds[]
        ctypes.c_void_p,  # body buffer
        ctypes.c_size_t,  # chunk
        ctypes.c_int,
        _U64,
        ctypes.c_size_t,
        ctypes.POINTER(_U64),
    ]
    return native


def libc_calls(*names: str) -> list[int] | None:
    """The addresses of the C library's functions `names`, or None if one is missing.

    The kernels link against nothing: the few libc calls they make (reads, maps,
    receives, locks) are passed in as these addresses.
    """
    try:
        libc = ctypes.CDLL(None)
        calls = [getattr(libc, name) for name in names]
    except (OSError, AttributeError):
        return None
    return [ctypes.cast(call, ctypes.c_void_p).value or 0 for call in calls]


@cache
def library() -> ctypes.CDLL | None:
    """Return the loaded library (its tables initialised), or None.

    None when it is absent, or built from sources of another `ABI` (a warning
    is logged: its calls would get the wrong arguments).
    """
    try:
        native = ctypes.CDLL(str(LIBRARY))
        abi = native.kernels_abi() if hasattr(native, "kernels_abi") else 1
        if abi != ABI:
            log.warning(
                "%s was built for interface %s, not %s: not used;"
                " reinstall storage-init to rebuild it",
                LIBRARY,
                abi,
                ABI,
            )
            return None
        native.crc_init()
    except (OSError, AttributeError):
        return None
    return _declare(native)


@cache
def library_holding_gil() -> ctypes.PyDLL | None:
    """The same library, its functions called without releasing the GIL.

    For short calls in the receiving threads (a chunk's CRC, ~25 us), where a
    release lets another thread take the GIL every time. By hand, medians of
    alternating runs of the 2 GiB model: 2.47-2.77 s releasing it, 2.39-2.64 s
    holding it, awscrt (which holds it as well) 2.41-2.67 s: near the noise, but
    never better released.
    """
    if library() is None:
        return None
    return _declare(ctypes.PyDLL(str(LIBRARY)))


def pointer(
    data: bytes | bytearray | memoryview,
) -> bytes | ctypes.Array[ctypes.c_char]:
    """`data` as a ctypes ``char *`` argument, without a copy where possible.

    bytes pass as they are and writable buffers (the receive path's memoryviews
    over a bytearray) by address; a read-only view that is not a whole bytes
    object is copied, which only the slower paths (bodies read on the event
    loop) produce.
    """
    if isinstance(data, bytes):
        return data
    view = memoryview(data)
    if view.readonly:
        whole = view.obj
        if isinstance(whole, bytes) and len(whole) == view.nbytes:
            return whole
        return view.tobytes()
    return (ctypes.c_char * view.nbytes).from_buffer(view)
