"""Test doubles built on the public MemoryBackend."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio

from storage_init.backends.memory import MemoryBackend
from storage_init.errors import AccessDeniedError, NetworkError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from storage_init.models import ObjectInfo


class _FlakyBody:
    def __init__(self, body: Any, fail_after: int, stall: bool) -> None:
        self._body = body
        self._left = fail_after
        self._stall = stall
        self.info = body.info

    async def read(self, size_hint: int) -> bytes:
        if self._left == 0:
            if self._stall:
                await anyio.sleep(3600)
            raise NetworkError("connection reset by peer (injected)")
        self._left -= 1
        data: bytes = await self._body.read(size_hint)
        return data


class FlakyBackend(MemoryBackend):
    """A MemoryBackend whose first `failures` bodies break after `after_reads` reads.

    With `stall`, the broken bodies hang instead of failing, to exercise the
    stall timeout.
    """

    def __init__(
        self, *, failures: int, after_reads: int = 1, stall: bool = False
    ) -> None:
        super().__init__()
        self.failures = failures
        self.after_reads = after_reads
        self.stall = stall
        self.opened: list[tuple[int, int]] = []

    @asynccontextmanager
    async def open_range(
        self, bucket: str, info: ObjectInfo, start: int, end: int, *, whole: bool
    ) -> AsyncIterator[Any]:
        self.opened.append((start, end))
        async with super().open_range(bucket, info, start, end, whole=whole) as body:
            if self.failures > 0:
                self.failures -= 1
                yield _FlakyBody(body, self.after_reads, self.stall)
            else:
                yield body


class SlowBackend(MemoryBackend):
    """A MemoryBackend whose reads wait `delay` seconds, to be cancelled mid-way."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    @asynccontextmanager
    async def open_range(
        self, bucket: str, info: ObjectInfo, start: int, end: int, *, whole: bool
    ) -> AsyncIterator[Any]:
        async with super().open_range(bucket, info, start, end, whole=whole) as body:
            delay = self.delay

            class _Slow:
                info = body.info

                async def read(self, size_hint: int) -> bytes:
                    await anyio.sleep(delay)
                    return await body.read(size_hint)

            yield _Slow()


class HeldBackend(MemoryBackend):
    """A MemoryBackend whose bodies from byte `held_from` on wait for `until`.

    Their requests are open (they hold their slots) while they wait, as a slow
    server's would be.
    """

    def __init__(self, held_from: int, until: anyio.Event) -> None:
        super().__init__()
        self.held_from = held_from
        self.until = until

    @asynccontextmanager
    async def open_range(
        self, bucket: str, info: ObjectInfo, start: int, end: int, *, whole: bool
    ) -> AsyncIterator[Any]:
        async with super().open_range(bucket, info, start, end, whole=whole) as body:
            if start >= self.held_from:
                with anyio.move_on_after(5):  # never forever, whatever the engine
                    await self.until.wait()
            yield body


class ListingWatchBackend(MemoryBackend):
    """A MemoryBackend that notes whether a listing began while a HEAD was waiting.

    Each `stat` waits (up to `wait` seconds) for a listing to begin before it
    answers; `listing_began_during_head` says whether one did. With
    `deny_listing`, every listing fails as a policy without ListBucket makes it.
    """

    def __init__(self, *, wait: float = 2.0, deny_listing: bool = False) -> None:
        super().__init__()
        self.wait = wait
        self.deny_listing = deny_listing
        self.listing_began = anyio.Event()
        self.listing_began_during_head = False

    async def stat(self, bucket: str, key: str) -> ObjectInfo | None:
        with anyio.move_on_after(self.wait):
            await self.listing_began.wait()
        self.listing_began_during_head = self.listing_began.is_set()
        return await super().stat(bucket, key)

    async def list_objects(self, bucket: str, prefix: str) -> AsyncIterator[ObjectInfo]:
        self.listing_began.set()
        if self.deny_listing:
            msg = "ListBucket denied (injected)"
            raise AccessDeniedError(msg, uri=f"memory://{bucket}/{prefix}")
        async for info in super().list_objects(bucket, prefix):
            yield info
