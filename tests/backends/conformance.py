"""The backend contract, written once as mixin tests (fsspec's tests/abstract shape).

A test module subclasses `BackendConformance` and provides three fixtures:
``backend`` (a Backend), ``bucket`` (a bucket that exists) and ``seed`` (a callable
``seed(key, data, *, part_size=None, checksum=None, composite=False)`` that uploads
an object as a real client would). Two more are optional: ``paged_backend`` (listing
at most 2 keys per page) and ``denied_backend`` (credentials the server refuses);
where a module cannot build them, it covers the same ground in its own tests.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from storage_init.errors import (
    AccessDeniedError,
    IntegrityError,
    ObjectChangedError,
    ObjectNotFoundError,
)
from storage_init.models import MiB

Seed = Callable[..., Any]


async def _read_all(body: Any) -> bytes:
    out = bytearray()
    while chunk := await body.read(1 << 20):
        out += chunk
    return bytes(out)


class BackendConformance:
    """What every backend must do, checked against its real server."""

    #: Whether the store keeps multipart uploads' parts (S3 does, GCS does not).
    has_parts = True
    #: The checksum a whole-object read (or the listing) reports.
    stored_checksum = "crc32c"

    @pytest.fixture
    def paged_backend(self) -> Any:
        pytest.skip("no small-page listing here: see the module's own pagination test")

    @pytest.fixture
    def denied_backend(self) -> Any:
        pytest.skip("no refused credentials here: see the module's own tests")

    async def test_list_follows_pages(self, paged_backend, bucket, seed, prefix):
        """A listing of several pages returns every key once, in order."""
        keys = [f"{prefix}p/{i:02}" for i in range(7)]
        for key in keys:
            seed(key, b"x")
        got = [i.key async for i in paged_backend.list_objects(bucket, prefix + "p/")]
        assert got == keys

    async def test_refused_credentials(self, denied_backend, bucket, seed, prefix):
        """Refused credentials are AccessDeniedError (exit 3), for stat and list."""
        seed(prefix + "a", b"x")
        with pytest.raises(AccessDeniedError):
            await denied_backend.stat(bucket, prefix + "a")
        with pytest.raises(AccessDeniedError):
            [i async for i in denied_backend.list_objects(bucket, prefix)]

    @pytest.fixture
    def prefix(self) -> str:
        return f"conf-{uuid.uuid4().hex[:8]}/"

    async def test_stat_object_and_missing(self, backend, bucket, seed, prefix):
        """stat returns size and ETag of an object, None for a missing key."""
        seed(prefix + "a.bin", b"hello")
        info = await backend.stat(bucket, prefix + "a.bin")
        assert info is not None
        assert (info.size, info.key) == (5, prefix + "a.bin")
        assert info.etag
        assert await backend.stat(bucket, prefix + "missing") is None

    async def test_list_prefix_not_siblings(self, backend, bucket, seed, prefix):
        """Listing `p/` never returns keys of a sibling prefix such as `p-v2/`."""
        for key in ("m/a", "m/sub/b", "m-v2/c", "mx"):
            seed(prefix + key, b"x")
        keys = [i.key async for i in backend.list_objects(bucket, prefix + "m/")]
        assert keys == [prefix + "m/a", prefix + "m/sub/b"]

    async def test_zero_byte_object(self, backend, bucket, seed, prefix):
        """Zero-byte objects are listed and read as empty."""
        seed(prefix + "empty", b"")
        (info,) = [i async for i in backend.list_objects(bucket, prefix)]
        assert info.size == 0
        async with backend.open_range(bucket, info, 0, 0, whole=True) as body:
            assert await _read_all(body) == b""

    @pytest.mark.parametrize(
        ("start", "end"),
        [(0, 1), (0, 1000), (999, 1000), (123, 877), (1, 999)],
    )
    async def test_ranges_at_boundaries(
        self, backend, bucket, seed, prefix, start, end
    ):
        """A ranged read returns exactly bytes [start, end)."""
        data = os.urandom(1000)
        seed(prefix + "r", data)
        info = await backend.stat(bucket, prefix + "r")
        async with backend.open_range(bucket, info, start, end, whole=False) as body:
            assert await _read_all(body) == data[start:end]

    async def test_whole_read_reports_checksums(self, backend, bucket, seed, prefix):
        """A whole-object read returns the stored CRC in its info."""
        data = os.urandom(3000)
        seed(prefix + "w", data, checksum="crc32c")
        (listed,) = [i async for i in backend.list_objects(bucket, prefix)]
        async with backend.open_range(bucket, listed, 0, 3000, whole=True) as body:
            assert await _read_all(body) == data
            # From the response, or already from the listing (GCS lists CRCs).
            assert self.stored_checksum in (body.info or listed).checksums

    async def test_describe_multipart(self, backend, bucket, seed, prefix):
        """describe and part_sizes give the stored CRC and the upload's parts."""
        if not self.has_parts:
            pytest.skip("this store keeps no upload parts")
        data = os.urandom(11 * MiB)
        seed(prefix + "mp", data, part_size=5 * MiB, checksum="crc32c", composite=True)
        (listed,) = [i async for i in backend.list_objects(bucket, prefix)]
        info = await backend.describe(bucket, listed)
        assert info.checksums["crc32c"].endswith("-3")
        assert await backend.part_sizes(bucket, info) == [5 * MiB, 5 * MiB, MiB]

    async def test_changed_object_detected(self, backend, bucket, seed, prefix):
        """A read pinned to an old ETag fails with ObjectChangedError."""
        seed(prefix + "c", b"old")
        info = await backend.stat(bucket, prefix + "c")
        seed(prefix + "c", b"new!")
        with pytest.raises(ObjectChangedError):
            async with backend.open_range(bucket, info, 0, 3, whole=False) as body:
                await _read_all(body)

    async def test_read_missing_object(self, backend, bucket, seed, prefix):
        """Reading a deleted object is ObjectNotFoundError."""
        seed(prefix + "d", b"x")
        info = await backend.stat(bucket, prefix + "d")
        gone = type(info)(key=prefix + "never", size=1, etag=None)
        with pytest.raises(ObjectNotFoundError):
            async with backend.open_range(bucket, gone, 0, 1, whole=True) as body:
                await _read_all(body)

    async def test_unsatisfiable_range(self, backend, bucket, seed, prefix):
        """A range past the end is an error, never silent garbage."""
        seed(prefix + "s", b"abc")
        info = await backend.stat(bucket, prefix + "s")
        with pytest.raises((IntegrityError, ObjectNotFoundError)):
            async with backend.open_range(bucket, info, 10, 20, whole=False) as body:
                await _read_all(body)
