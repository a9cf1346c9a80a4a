"""CRC32, CRC32C and CRC64/NVME with O(log n) combination, for full-object checks.

Per-range CRCs combine into the CRC of the whole object without a second pass:
``CRC(A || B) = combine(CRC(A), CRC(B), len(B))``. The native code is the package's
own (`_native`, ``_crcfold.c``: carry-less multiplication, 18.9 GiB/s over cached
chunks on this AVX2 machine, with VPCLMULQDQ's two blocks per instruction, four with
AVX-512) where the CPU has PCLMULQDQ; elsewhere, or
without the compiled library, awscrt's (the ``s3`` extra; botocore uses it for the
same checksums) and zlib's CRC32. The package's own holds the GIL for a chunk's CRC,
as awscrt does (see `_native.library_holding_gil`). It spares the
process awscrt's 12 MB library, whose loading took 26 ms of the first request's
path, and computes CRC32 4.7x faster than zlib (`benchmarks/kernels.py`).
"""

from __future__ import annotations

import base64
import zlib
from functools import cache
from typing import TYPE_CHECKING, NamedTuple

from ._native import LIBRARY, library_holding_gil, pointer
from .errors import BackendUnavailableError

if TYPE_CHECKING:
    import ctypes
    from collections.abc import Callable

__all__ = ["CRC_ALGORITHMS", "CrcAlgorithm", "crc_algorithm"]

#: Stored CRCs we can check, strongest (and equally cheap) first.
CRC_ALGORITHMS = ("crc64nvme", "crc32c", "crc32")


# A NamedTuple, not a frozen dataclass: defining it at import costs a tenth
# (README, "Start-up is mostly imports").
class CrcAlgorithm(NamedTuple):
    """One CRC: how to compute it incrementally, combine it and encode it.

    Attributes:
        name: lowercase name as S3 spells it (``crc64nvme``, ``crc32c``, ``crc32``).
        width: digest size in bytes.
        update: ``update(data, previous) -> crc``; ``previous`` is 0 at the start.
        combine: ``combine(crc_a, crc_b, len_b) -> crc of a || b``.
        native: the package library's number for it, when the library computes
            it (so native code, `_recvfile`, may too); else None.
    """

    name: str
    width: int
    update: Callable[[bytes | memoryview, int], int]
    combine: Callable[[int, int, int], int]
    native: int | None = None

    def digest(self, value: int) -> bytes:
        """Return `value` as big-endian bytes, the order stores encode."""
        return value.to_bytes(self.width, "big")

    def encode(self, value: int) -> str:
        """Return `value` as stores print it: base64 of the big-endian digest."""
        return base64.b64encode(self.digest(value)).decode("ascii")


@cache
def crc_algorithm(name: str) -> CrcAlgorithm:
    """Return the `CrcAlgorithm` called `name`.

    The package's library where it folds (x86-64 with PCLMULQDQ); else awscrt
    (which the extras install on other CPUs); else the library's table, about
    0.4 GiB/s, slow but right.

    Raises:
        KeyError: `name` is not one of `CRC_ALGORITHMS`.
        BackendUnavailableError: neither the library nor awscrt is installed.
    """
    if name not in CRC_ALGORITHMS:
        raise KeyError(name)
    native = library_holding_gil()
    if native is not None and native.crc_folds():
        return _native_algorithm(native, name)
    try:
        from awscrt import checksums
    except ImportError:
        if native is not None:
            return _native_algorithm(native, name)
        msg = "s3"
        raise BackendUnavailableError(
            msg, "crc", f"neither {LIBRARY.name} (no C compiler at install) nor awscrt"
        ) from None
    if name == "crc64nvme":
        return CrcAlgorithm(name, 8, checksums.crc64nvme, checksums.combine_crc64nvme)
    if name == "crc32c":
        return CrcAlgorithm(name, 4, checksums.crc32c, checksums.combine_crc32c)
    return CrcAlgorithm(name, 4, zlib.crc32, checksums.combine_crc32)


#: The native library's number for each CRC.
_NATIVE_KINDS = {"crc64nvme": 0, "crc32c": 1, "crc32": 2}


def _native_algorithm(native: ctypes.CDLL, name: str) -> CrcAlgorithm:
    """`name` computed and combined by the package's own library.

    `native` is a handle from `_native`, whose functions carry their signatures.
    """
    kind = _NATIVE_KINDS[name]
    update_fn, combine_fn = native.crc_update, native.crc_combine

    def update(data: bytes | memoryview, previous: int) -> int:
        result: int = update_fn(kind, pointer(data), len(data), previous)
        return result

    def combine(crc_a: int, crc_b: int, len_b: int) -> int:
        result: int = combine_fn(kind, crc_a, crc_b, len_b)
        return result

    return CrcAlgorithm(name, 8 if kind == 0 else 4, update, combine, kind)
