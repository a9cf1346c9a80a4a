"""The part MD5s of a run's multipart-ETag files, 16 to a kernel call, across files.

A multipart ETag is the MD5 of the parts' MD5s, each part its own message; the
multi-lane kernel (`_md5lanes`) hashes 16 of them for the cost of its longest
(AVX2 here, 50 MiB parts: 0.24-0.30 s a call of 9 to 16 busy lanes, 0.15-0.20 s
of 1 to 8, which step one vector of the two). Batching per file left each file a
call of its own for its last few parts: a model of two 1 GiB shards uploaded in
50 MiB parts (21 each) made four calls, 13 and 8 parts per file (by hand, with a
timeline); pooled, its 42 parts make three.

`choose_batch` says when to call: with 16 parts landed (whole calls: a 17th
would cost a call of its own), or, once every part still to come is in flight,
when what has landed cannot share the last call with them. That last call comes
after the last byte however it is made up, so parts that fit into it wait.
Calls of 8 (that model's last 10 parts as 8 once landed and 2 after; or every
call of 8) were tried: the tail after the last byte shrank, but the two cores
were already busy with the download, and the wall time did not (by hand,
`benchmarks.alternate`, 6 rounds: 3.15 s against 3.17, and 3.14 against 2.85).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import anyio

from ._md5lanes import LANES, md5_spans
from .errors import IntegrityError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .verify import FileDigest

__all__ = ["PartHasher", "choose_batch"]

K = TypeVar("K")


def choose_batch(
    ready: Sequence[tuple[K, int]], *, unlanded: int, all_requested: bool
) -> list[K]:
    """Which landed ranges to hash now: their keys, in order, or none (wait).

    Args:
        ready: ``(key, parts)`` of each landed range not yet hashed, in order.
        unlanded: parts of the ranges still to land.
        all_requested: every range still to land is in flight (none is waiting
            for a request slot).

    With `LANES` parts or more ready, the longest prefix that fills one call (at
    least one range; more ready make more calls, which may run at once).
    Otherwise all of them if nothing is left to land, or if they and the parts
    in flight would not fit in one call together.
    """
    total = sum(parts for _, parts in ready)
    if not ready:
        return []
    if total >= LANES:
        taken: list[K] = []
        count = 0
        for key, parts in ready:
            if taken and count + parts > LANES:
                break
            taken.append(key)
            count += parts
        return taken
    if not unlanded or (all_requested and total + unlanded > LANES):
        return [key for key, _ in ready]
    return []


class _File:
    """A file registered with the hasher: where its ranges are, and their state."""

    __slots__ = (
        "busy",
        "digest",
        "done",
        "error",
        "fd",
        "landed",
        "requested",
        "waiting",
    )

    def __init__(
        self,
        fd: int,
        digest: FileDigest,
        landed: Sequence[anyio.Event],
        requested: anyio.Event,
    ) -> None:
        self.fd = fd
        self.digest = digest
        self.landed = landed
        self.requested = requested
        #: Ranges not yet taken into a call.
        self.waiting = list(range(len(landed)))
        #: Ranges taken into a call that has not returned.
        self.busy = 0
        self.done = anyio.Event()
        self.error: BaseException | None = None


class PartHasher:
    """Hashes the parts of every registered file in shared kernel calls.

    `run` is a task of the caller's task group; `close` lets it end once no file
    is registered. Each call runs in a worker thread under `limiter`, as many at
    once as it has tokens: when parts land faster than one core hashes them
    (AVX2: ~3.3 GiB/s), the calls spread over the cores.
    """

    def __init__(self, limiter: anyio.CapacityLimiter) -> None:
        self._limiter = limiter
        self._files: list[_File] = []
        self._wake = anyio.Event()
        self._closed = False
        #: Kernel calls running.
        self._calls = 0

    def wake(self) -> None:
        """Look again: a range landed, or a file's last range was requested."""
        if self._files:
            self._wake.set()

    def close(self) -> None:
        """No more files will come: `run` returns once the registered are done."""
        self._closed = True
        self._wake.set()

    async def hash_file(
        self,
        fd: int,
        digest: FileDigest,
        landed: Sequence[anyio.Event],
        requested: anyio.Event,
    ) -> None:
        """Register a file and return once its ranges' part MD5s are in `digest`.

        Args:
            fd: the file, open for reading, its ranges where `digest` says.
            digest: takes each range's part MD5s (`FileDigest.adopt_part_md5s`).
            landed: per range, set once all its bytes are on disk.
            requested: set once every range has been requested.

        Raises:
            IntegrityError: the file is shorter than a range.
            OSError: it could not be read.
        """
        entry = _File(fd, digest, landed, requested)
        self._files.append(entry)
        self._wake.set()
        try:
            await entry.done.wait()
        finally:
            if entry in self._files:  # cancelled: `run` may be waiting to end
                self._files.remove(entry)
                self._wake.set()
        if entry.error is not None:
            raise entry.error

    async def run(self) -> None:
        """Make the kernel calls, as `choose_batch` says, until closed and idle."""
        async with anyio.create_task_group() as tg:
            while True:
                room = self._calls < self._limiter.total_tokens
                batch = self._next_batch() if room else []
                if batch:
                    self._calls += 1
                    tg.start_soon(self._call, batch)
                    continue
                if self._closed and not self._files:
                    return
                self._wake = anyio.Event()
                await self._wake.wait()

    async def _call(self, batch: list[tuple[_File, int]]) -> None:
        try:
            await self._hash(batch)
        finally:
            self._calls -= 1
            self._wake.set()

    def _next_batch(self) -> list[tuple[_File, int]]:
        ready: list[tuple[tuple[_File, int], int]] = []
        unlanded = 0
        all_requested = True
        for entry in self._files:
            ranges = entry.digest.byte_ranges
            for index in entry.waiting:
                if entry.landed[index].is_set():
                    ready.append(((entry, index), len(ranges[index].parts)))
                else:
                    unlanded += len(ranges[index].parts)
                    all_requested = all_requested and entry.requested.is_set()
        batch = choose_batch(ready, unlanded=unlanded, all_requested=all_requested)
        for entry, index in batch:
            entry.waiting.remove(index)
            entry.busy += 1
        return batch

    async def _hash(self, batch: list[tuple[_File, int]]) -> None:
        """One kernel call for `batch`; each file learns its MD5s or its error.

        A call that fails with parts of several files is made again file by
        file, so that the error reaches the file it belongs to.
        """
        spans: list[tuple[int, int, int]] = []
        for entry, index in batch:
            spans += entry.digest.part_spans(entry.fd, index)
        error: IntegrityError | OSError | None = None
        md5s: list[bytes] = []
        try:
            md5s = await anyio.to_thread.run_sync(
                md5_spans, spans, limiter=self._limiter
            )
        except (IntegrityError, OSError) as exc:
            files = list(dict.fromkeys(entry for entry, _ in batch))
            if len(files) > 1:
                for entry in files:
                    await self._hash([item for item in batch if item[0] is entry])
                return
            error = exc
        at = 0
        for entry, index in batch:
            entry.busy -= 1
            count = len(entry.digest.byte_ranges[index].parts)
            if error is None:
                entry.digest.adopt_part_md5s(index, md5s[at : at + count])
            elif entry.error is None:
                entry.error = error
            at += count
            if entry.error is not None or not (entry.waiting or entry.busy):
                entry.done.set()
                if entry in self._files:
                    self._files.remove(entry)
