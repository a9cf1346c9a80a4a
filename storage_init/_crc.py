"""CRC32, CRC32C and CRC64/NVME with O(log n) combination, for full-object checks.

Per-range CRCs combine into the CRC of the whole object without a second pass:
``CRC(A || B) = combine(CRC(A), CRC(B), len(B))``. The native code comes from awscrt
(installed with the ``s3`` extra; botocore uses it for the same checksums), which
releases the GIL; zlib's CRC32 is faster than awscrt's, so it computes CRC32.
"""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from .errors import BackendUnavailableError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["CRC_ALGORITHMS", "CrcAlgorithm", "crc_algorithm"]

#: Stored CRCs we can check, strongest (and equally cheap) first.
CRC_ALGORITHMS = ("crc64nvme", "crc32c", "crc32")


@dataclass(frozen=True, slots=True)
class CrcAlgorithm:
    """One CRC: how to compute it incrementally, combine it and encode it.

    Attributes:
        name: lowercase name as S3 spells it (``crc64nvme``, ``crc32c``, ``crc32``).
        width: digest size in bytes.
        update: ``update(data, previous) -> crc``; ``previous`` is 0 at the start.
        combine: ``combine(crc_a, crc_b, len_b) -> crc of a || b``.
    """

    name: str
    width: int
    update: Callable[[bytes | memoryview, int], int]
    combine: Callable[[int, int, int], int]

    def digest(self, value: int) -> bytes:
        """Return `value` as big-endian bytes, the order stores encode."""
        return value.to_bytes(self.width, "big")

    def encode(self, value: int) -> str:
        """Return `value` as stores print it: base64 of the big-endian digest."""
        return base64.b64encode(self.digest(value)).decode("ascii")


@cache
def crc_algorithm(name: str) -> CrcAlgorithm:
    """Return the `CrcAlgorithm` called `name`.

    Raises:
        KeyError: `name` is not one of `CRC_ALGORITHMS`.
        BackendUnavailableError: awscrt is not installed.
    """
    if name not in CRC_ALGORITHMS:
        raise KeyError(name)
    try:
        from awscrt import checksums
    except ImportError:
        msg = "s3"
        raise BackendUnavailableError(msg, "s3", "awscrt") from None
    if name == "crc64nvme":
        return CrcAlgorithm(name, 8, checksums.crc64nvme, checksums.combine_crc64nvme)
    if name == "crc32c":
        return CrcAlgorithm(name, 4, checksums.crc32c, checksums.combine_crc32c)
    return CrcAlgorithm(name, 4, zlib.crc32, checksums.combine_crc32)
