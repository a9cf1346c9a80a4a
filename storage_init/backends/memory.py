"""MemoryBackend: the reference implementation of the backend contract.

It keeps objects in a dict and behaves like S3 where the engine can tell: ETags are
MD5s (``md5(part MD5s)-N`` for multipart uploads), CRCs are stored full-object or
composite, GETs are pinned by ETag and return Content-Range-checked slices. Tests
and library users use it as a test double (``download(..., backends={"memory":
backend})``).
"""

from __future__ import annotations

import base64
import hashlib
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Self

from .._crc import crc_algorithm
from ..errors import IntegrityError, ObjectChangedError, ObjectNotFoundError
from ..models import ObjectInfo

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ..config import StorageConfig
    from ..uri import ObjectURI

__all__ = ["MemoryBackend"]


@dataclass(frozen=True, slots=True)
class _Stored:
    data: bytes
    info: ObjectInfo
    parts: tuple[int, ...]


class _Body:
    def __init__(self, data: memoryview, info: ObjectInfo | None) -> None:
        self._data = data
        self.info = info

    async def read(self, size_hint: int) -> bytes:
        chunk, self._data = self._data[:size_hint], self._data[size_hint:]
        return bytes(chunk)


class MemoryBackend:
    """Objects in memory, by bucket and key. Page size of listings is `page_size`."""

    def __init__(self, *, page_size: int = 1000) -> None:
        self._buckets: dict[str, dict[str, _Stored]] = {}
        self.page_size = page_size
        self.requests = 0

    @classmethod
    def from_config(cls, config: StorageConfig, uri: ObjectURI | None = None) -> Self:
        """Return an empty backend (``config`` holds nothing for it)."""
        del uri  # one instance serves every bucket
        del config
        return cls()

    def put(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        part_size: int | None = None,
        checksum: str | None = None,
        composite: bool = False,
    ) -> ObjectInfo:
        """Store an object, as an S3 upload with these settings would.

        Args:
            bucket: the bucket, created on first use.
            key: the object key.
            data: the object's bytes.
            part_size: upload in parts of this size (a multipart ETag).
            checksum: a CRC name (``crc64nvme``, ``crc32c``, ``crc32``) to store.
            composite: store the CRC as composite over the parts.
        """
        size = len(data)
        parts = (
            tuple(min(part_size, size - i) for i in range(0, size, part_size))
            if part_size and size
            else ()
        )
        if parts:
            md5s = b"".join(
                hashlib.md5(data[i : i + n], usedforsecurity=False).digest()
                for i, n in zip(_offsets(parts), parts, strict=True)
            )
            etag = (
                f"{hashlib.md5(md5s, usedforsecurity=False).hexdigest()}-{len(parts)}"
            )
        else:
            etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        checksums: dict[str, str] = {}
        if checksum:
            crc = crc_algorithm(checksum)
            if composite and parts:
                joined = b"".join(
                    crc.digest(crc.update(data[i : i + n], 0))
                    for i, n in zip(_offsets(parts), parts, strict=True)
                )
                checksums[checksum] = (
                    f"{crc.encode(crc.update(joined, 0))}-{len(parts)}"
                )
            else:
                checksums[checksum] = crc.encode(crc.update(data, 0))
        info = ObjectInfo(
            key=key,
            size=size,
            etag=etag,
            checksums=MappingProxyType(checksums),
            checksum_type=("COMPOSITE" if composite else "FULL_OBJECT")
            if checksum
            else None,
            parts_count=len(parts) or None,
            detailed=True,
        )
        self._buckets.setdefault(bucket, {})[key] = _Stored(data, info, parts)
        return info

    def put_sha256(self, bucket: str, key: str) -> None:
        """Add the SHA-256 of a stored object to its checksums."""
        stored = self._buckets[bucket][key]
        digest = base64.b64encode(hashlib.sha256(stored.data).digest()).decode()
        checksums = {**stored.info.checksums, "sha256": digest}
        info = _replace_checksums(stored.info, checksums)
        self._buckets[bucket][key] = _Stored(stored.data, info, stored.parts)

    def corrupt(self, bucket: str, key: str, offset: int) -> None:
        """Flip one byte of a stored object, keeping its ETag and checksums."""
        stored = self._buckets[bucket][key]
        data = bytearray(stored.data)
        data[offset] ^= 0xFF
        self._buckets[bucket][key] = _Stored(bytes(data), stored.info, stored.parts)

    def _get(self, bucket: str, key: str) -> _Stored:
        try:
            return self._buckets[bucket][key]
        except KeyError:
            msg = "not found"
            raise ObjectNotFoundError(msg, uri=f"memory://{bucket}/{key}") from None

    async def stat(self, bucket: str, key: str) -> ObjectInfo | None:
        """See `Backend.stat`."""
        self.requests += 1
        stored = self._buckets.get(bucket, {}).get(key)
        return stored.info if stored else None

    async def list_objects(self, bucket: str, prefix: str) -> AsyncIterator[ObjectInfo]:
        """See `Backend.list`; keys come in lexicographic order, page by page."""
        if bucket not in self._buckets:
            msg = "no such bucket"
            raise ObjectNotFoundError(msg, uri=f"memory://{bucket}")
        keys = sorted(k for k in self._buckets[bucket] if k.startswith(prefix))
        for i in range(0, len(keys), self.page_size):
            self.requests += 1
            for key in keys[i : i + self.page_size]:
                info = self._buckets[bucket][key].info
                yield ObjectInfo(key=key, size=info.size, etag=info.etag)

    async def describe(self, bucket: str, info: ObjectInfo) -> ObjectInfo:
        """See `Backend.describe`."""
        self.requests += 1
        stored = self._get(bucket, info.key)
        if info.etag and stored.info.etag != info.etag:
            msg = "ETag changed"
            raise ObjectChangedError(msg, uri=f"memory://{bucket}/{info.key}")
        return stored.info

    async def part_sizes(self, bucket: str, info: ObjectInfo) -> list[int]:
        """See `Backend.part_sizes`."""
        self.requests += 1
        stored = self._get(bucket, info.key)
        return list(stored.parts) or [stored.info.size]

    @asynccontextmanager
    async def open_range(
        self, bucket: str, info: ObjectInfo, start: int, end: int, *, whole: bool
    ) -> AsyncIterator[_Body]:
        """See `Backend.open_range`."""
        self.requests += 1
        stored = self._get(bucket, info.key)
        if info.etag and stored.info.etag != info.etag:
            msg = "ETag changed"
            raise ObjectChangedError(msg, uri=f"memory://{bucket}/{info.key}")
        if not whole and not 0 <= start < end <= stored.info.size:
            msg = f"range not satisfiable: bytes {start}-{end - 1}"
            raise IntegrityError(msg, uri=f"memory://{bucket}/{info.key}")
        view = memoryview(stored.data)
        yield _Body(view if whole else view[start:end], stored.info if whole else None)

    async def prepare_get(self, bucket: str, info: ObjectInfo) -> None:
        """See `Backend.prepare_get`: memory is read on the event loop."""
        del bucket, info

    async def aclose(self) -> None:
        """See `Backend.aclose`; the data stays."""


def _offsets(parts: tuple[int, ...]) -> list[int]:
    out, pos = [], 0
    for n in parts:
        out.append(pos)
        pos += n
    return out


def _replace_checksums(info: ObjectInfo, checksums: dict[str, str]) -> ObjectInfo:
    return ObjectInfo(
        key=info.key,
        size=info.size,
        etag=info.etag,
        checksums=MappingProxyType(checksums),
        checksum_type=info.checksum_type,
        etag_is_md5=info.etag_is_md5,
        parts_count=info.parts_count,
        detailed=True,
    )
