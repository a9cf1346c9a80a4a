"""The transfer engine: list, fan out ranged GETs, write, verify, rename.

Shape of one run, for any number of source/destination pairs::

    listers ──▶ file tasks (at most 2 * max_concurrency open) ──▶ range fetchers
        range fetchers ──(bounded queues, one per writer)──▶ writer tasks ──▶ threads
                                                    pwritev + hashing, off the loop

- One `CapacityLimiter(max_concurrency)` caps requests in flight for all files and
  pairs. Listing streams page by page; files start while listing goes on.
- A range's chunks all go to the same writer, in order, so its digests are computed
  incrementally (`verify.RangeDigest`) with no reordering.
- A file is verified after its last byte is written, then renamed into place. Temp
  files of files that did not finish are deleted when the run ends, whatever the
  reason, after every writer thread has returned (never while one may write).
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from ._paths import is_selected, safe_relative
from ._plan import ByteRange, plan_ranges
from ._retry import RetryBudget
from .errors import (
    IntegrityError,
    NetworkError,
    ObjectNotFoundError,
    TransferError,
)
from .models import (
    DownloadReport,
    FileReport,
    ObjectInfo,
    ProgressCallback,
    TransferStats,
)
from .verify import Check, FileDigest, choose_check, hash_file
from .writer import TempFile, local_error

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence
    from pathlib import Path

    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from .backends._base import Backend, RangeBody
    from .config import StorageConfig
    from .uri import ObjectURI

__all__ = ["Engine", "Pair"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Pair:
    """One source and the directory it is downloaded into."""

    uri: ObjectURI
    dest: Path
    backend: Backend


@dataclass(eq=False)
class _Job:
    """One file being downloaded."""

    pair: Pair
    rel: str
    final: Path
    info: ObjectInfo
    ranges: list[ByteRange]
    whole: bool
    started: float
    temp: TempFile | None = None
    check: Check | None = None
    digest: FileDigest | None = None
    written: int = 0
    done: anyio.Event = field(default_factory=anyio.Event)
    #: Per range, the next byte to fetch: a retry resumes there.
    offsets: list[int] = field(default_factory=list)

    @property
    def uri(self) -> str:
        return self.pair.uri.child(self.info.key)

    def set_check(self, check: Check) -> None:
        self.check = check
        self.digest = FileDigest(check, self.ranges)


@dataclass(eq=False, slots=True)
class _Batch:
    """Consecutive chunks of one range, written with one pwritev."""

    job: _Job
    index: int
    offset: int
    buffers: list[bytes]

    def apply(self) -> int:
        """Write and hash the chunks (in a worker thread)."""
        assert self.job.temp is not None
        assert self.job.digest is not None
        written = self.job.temp.write(self.offset, self.buffers)
        digest = self.job.digest.ranges[self.index]
        for buf in self.buffers:
            digest.update(buf)
        return written


class Engine:
    """Runs a set of pairs under one configuration and one set of limits.

    Args:
        config: engine knobs, verification mode and selection patterns.
        progress: called after every write and finished file.
    """

    def __init__(
        self, config: StorageConfig, *, progress: ProgressCallback | None = None
    ) -> None:
        self._config = config
        cfg = config.transfer
        self._cfg = cfg
        self._progress = progress
        self._requests = anyio.CapacityLimiter(cfg.max_concurrency)
        self._files = anyio.Semaphore(2 * cfg.max_concurrency)
        self._io = anyio.CapacityLimiter(cfg.io_concurrency)
        self._open: set[_Job] = set()
        self._route = itertools.count()
        self._streams: list[MemoryObjectSendStream[_Batch]] = []
        self._started = time.monotonic()
        self._bytes_done = 0
        self._bytes_total = 0
        self._files_done = 0
        self._files_total = 0

    # -- statistics -------------------------------------------------------------

    def stats(self) -> TransferStats:
        """Return a snapshot of the counters."""
        return TransferStats(
            bytes_done=self._bytes_done,
            bytes_total=self._bytes_total,
            files_done=self._files_done,
            files_total=self._files_total,
            seconds=time.monotonic() - self._started,
        )

    def _notify(self) -> None:
        if self._progress is not None:
            self._progress(self.stats())

    # -- the run ----------------------------------------------------------------

    async def run(self, pairs: Sequence[Pair]) -> list[DownloadReport]:
        """Download every pair concurrently and return one report per pair.

        Raises:
            TransferError: the first failure; the run stops at the first error.
            ConfigError: a destination or option is invalid.
        """
        self._started = time.monotonic()
        reports: list[DownloadReport | None] = [None] * len(pairs)
        writers = self._cfg.io_concurrency
        depth = max(1, self._cfg.max_chunks_in_memory // writers)
        receivers: list[MemoryObjectReceiveStream[_Batch]] = []
        for _ in range(writers):
            send, receive = anyio.create_memory_object_stream[_Batch](depth)
            self._streams.append(send)
            receivers.append(receive)
        try:
            async with anyio.create_task_group() as outer:
                for receive in receivers:
                    outer.start_soon(self._writer, receive)
                try:
                    async with anyio.create_task_group() as tg:
                        for i, pair in enumerate(pairs):
                            tg.start_soon(self._run_pair, pair, reports, i)
                finally:
                    for send in self._streams:
                        send.close()
        finally:
            # Every writer thread has returned by now: no temp file is in use. The
            # discards are synchronous, so cancellation cannot interrupt them.
            for job in self._open:
                if job.temp is not None:
                    job.temp.discard()
            self._open.clear()
        return [r for r in reports if r is not None]

    async def _writer(self, receive: MemoryObjectReceiveStream[_Batch]) -> None:
        async with receive:
            async for batch in receive:
                n = await anyio.to_thread.run_sync(batch.apply, limiter=self._io)
                job = batch.job
                job.written += n
                self._bytes_done += n
                if job.written >= job.info.size:
                    job.done.set()
                self._notify()

    async def _run_pair(
        self, pair: Pair, reports: list[DownloadReport | None], index: int
    ) -> None:
        started = time.monotonic()
        files: list[FileReport] = []
        async with anyio.create_task_group() as tg:
            async for rel, info in self._resolve(pair):
                if not is_selected(
                    rel, self._config.allow_patterns, self._config.ignore_patterns
                ):
                    continue
                self._files_total += 1
                self._bytes_total += info.size
                # Bound open files (and tasks) while the listing streams on.
                await self._files.acquire()
                tg.start_soon(self._run_file, pair, rel, info, files)
        files.sort(key=lambda f: f.path)
        reports[index] = DownloadReport(
            source=pair.uri.display,
            destination=str(pair.dest),
            files=tuple(files),
            seconds=time.monotonic() - started,
        )

    async def _resolve(self, pair: Pair) -> AsyncIterator[tuple[str, ObjectInfo]]:
        """Yield ``(relative path, info)`` for every object of `pair`'s source.

        ``scheme://bucket/key`` is that object when it exists, otherwise the
        prefix ``key/``; sibling keys such as ``key-v2`` never match.

        Raises:
            ObjectNotFoundError: neither an object nor a non-empty prefix exists.
        """
        uri, backend = pair.uri, pair.backend
        prefix = uri.key
        if prefix and not prefix.endswith("/"):
            async with self._requests:
                info = await backend.stat(uri.bucket, prefix)
            if info is not None:
                yield prefix.rsplit("/", 1)[-1], info
                return
            prefix += "/"
        found = False
        async for info in backend.list_objects(uri.bucket, prefix):
            found = True
            yield info.key[len(prefix) :], info
        if not found:
            msg = "no object or prefix with this name"
            raise ObjectNotFoundError(msg, uri=uri.raw)

    # -- one file ---------------------------------------------------------------

    async def _run_file(
        self, pair: Pair, rel: str, info: ObjectInfo, files: list[FileReport]
    ) -> None:
        try:
            report = await self._download_file(pair, rel, info)
        finally:
            self._files.release()
        if report is not None:
            files.append(report)
            self._files_done += 1
            self._notify()

    async def _download_file(
        self, pair: Pair, rel: str, info: ObjectInfo
    ) -> FileReport | None:
        started = time.monotonic()
        uri = pair.uri.child(info.key)
        path = safe_relative(rel, uri=uri)
        final = pair.dest.joinpath(path)
        if rel.endswith("/"):
            await anyio.to_thread.run_sync(_make_dirs, final)
            return None
        cfg = self._cfg
        backend = pair.backend
        bucket = pair.uri.bucket
        whole = info.size <= cfg.part_size
        check: Check | None = None
        parts: list[int] | None = None
        if not whole or info.detailed:
            async with self._requests:
                info = await backend.describe(bucket, info)
                check = choose_check(info, cfg.verify)
                if check.needs_parts:
                    parts = await backend.part_sizes(bucket, info)
        ranges = plan_ranges(info.size, cfg.part_size, parts)
        job = _Job(pair, rel, final, info, ranges, whole and len(ranges) == 1, started)
        job.offsets = [r.start for r in ranges]
        if check is not None:
            job.set_check(check)
        job.temp = await anyio.to_thread.run_sync(_open_temp, final, info.size)
        self._open.add(job)
        if info.size == 0:
            job.done.set()
        async with anyio.create_task_group() as tg:
            for index in range(len(ranges)):
                tg.start_soon(self._fetch_range, job, index)
        if job.digest is None:  # an empty object: no response was read
            job.set_check(choose_check(info, cfg.verify))
        await job.done.wait()
        assert job.digest is not None
        assert job.check is not None
        whole_digests: dict[str, bytes] = {}
        if job.digest.needs_pass:
            whole_digests = await anyio.to_thread.run_sync(
                hash_file, job.temp.fd, info.size, job.check.whole, limiter=self._io
            )
        try:
            job.digest.verify(size=info.size, written=job.written, whole=whole_digests)
        except IntegrityError as exc:
            raise IntegrityError(exc.reason, uri=uri) from None
        await anyio.to_thread.run_sync(job.temp.commit)
        self._open.discard(job)
        log.debug("verified %s (%s)", rel, job.check.label)
        return FileReport(
            path=str(path),
            size=info.size,
            seconds=time.monotonic() - started,
            verification=job.check.label,
            verified=job.check.verifies_content,
        )

    async def _adopt_response(self, job: _Job, got: ObjectInfo | None) -> None:
        """Pick the file's check from the first response of a whole-object GET."""
        if job.digest is not None:
            return
        info = got or job.info
        check = choose_check(info, self._cfg.verify)
        if check.needs_parts:
            # A small multipart object: its one range is hashed part by part.
            parts = await job.pair.backend.part_sizes(job.pair.uri.bucket, info)
            job.ranges = [ByteRange(0, info.size, tuple(parts))]
        job.set_check(check)

    async def _fetch_range(self, job: _Job, index: int) -> None:
        """Fetch one range into the writer queue, resuming where a failure left it."""
        byte_range = job.ranges[index]
        stream = self._streams[next(self._route) % len(self._streams)]
        budget = RetryBudget(self._cfg.retry)
        while True:
            start = job.offsets[index]
            try:
                async with (
                    self._requests,
                    job.pair.backend.open_range(
                        job.pair.uri.bucket,
                        job.info,
                        start,
                        byte_range.end,
                        whole=job.whole and start == 0,
                    ) as body,
                ):
                    await self._adopt_response(job, body.info)
                    await self._pump(job, index, body, stream)
                if job.offsets[index] >= byte_range.end:
                    return
                got = job.offsets[index] - byte_range.start
                msg = f"body ended after {got} of {byte_range.length} bytes"
                raise NetworkError(msg, uri=job.uri)
            except TransferError as exc:
                delay = budget.next_delay(exc)
                log.warning(
                    "retrying %s from byte %d after: %s",
                    job.rel,
                    job.offsets[index],
                    exc.reason,
                )
                await anyio.sleep(delay)

    async def _pump(
        self,
        job: _Job,
        index: int,
        body: RangeBody,
        stream: MemoryObjectSendStream[_Batch],
    ) -> None:
        """Move bytes from `body` to the writer, advancing ``job.offsets[index]``.

        Bytes read but not yet queued when an error strikes are dropped; the retry
        fetches them again (at most one chunk).
        """
        end = job.ranges[index].end
        offset = job.offsets[index]
        chunk = self._cfg.chunk_size
        stall = self._cfg.stall_timeout
        buffers: list[bytes] = []
        pending = 0
        while True:
            try:
                with anyio.fail_after(stall):
                    data = await body.read(chunk)
            except TimeoutError:
                msg = f"no data for {stall:g} s"
                raise NetworkError(msg, uri=job.uri) from None
            if not data:
                break
            if offset + pending + len(data) > end:
                msg = "the server sent more bytes than the range holds"
                raise IntegrityError(msg, uri=job.uri)
            buffers.append(data)
            pending += len(data)
            if pending >= chunk:
                await stream.send(_Batch(job, index, offset, buffers))
                offset += pending
                job.offsets[index] = offset
                buffers, pending = [], 0
        if buffers:
            await stream.send(_Batch(job, index, offset, buffers))
            job.offsets[index] = offset + pending


def _make_dirs(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise local_error(exc, path) from exc


def _open_temp(final: Path, size: int) -> TempFile:
    """Create the parent directories of `final`, then its temp file (blocking)."""
    _make_dirs(final.parent)
    return TempFile(final, size)
