"""The transfer engine: list, fan out ranged GETs, write, verify, rename.

Shape of one run, for any number of source/destination pairs::

    listers ─┬▶ file tasks (at most 2 * max_concurrency open) ──▶ range fetchers
             │  range fetcher: GET ──▶ worker thread: receive a chunk ──▶ pwrite + CRC
             │  file hasher (a thread, whole-file MD5/SHA-256): reads ranges in order
             │  part hasher (multipart ETags): maps 16 parts of any files, MD5 in lanes
             └▶ small files (one range, no HEAD): signed here ──▶ the lane: a worker
                thread sends the GET, writes, checksums, verifies and renames the file

- One `CapacityLimiter(max_concurrency)` caps ranges (and other requests) in flight
  for all files and pairs; another, `small_file_concurrency`, the lane's workers,
  each with one small file's GET at a time: those wait on round trips, not on
  bandwidth. Listing streams page by page; files start while listing goes on.
- Small files go down the lane (`_lane.Lane`): per file the event loop only signs
  the request and records the result; a retryable failure sends the file the
  per-file way, whose retries and backoff handle it. A small file whose check
  is its MD5 ETag waits, written, until 16 do (or the lane is idle), and the 16
  are hashed in one call of the multi-lane kernel (`_hash_unhashed`): 1000
  files of 100 KiB (`benchmarks.lane_probe`), 0.06-0.08 CPU s in the kernel
  against 0.33-0.35 with hashlib in each worker.
- Each request's body is received, written and checksummed by one worker thread
  (`_pump_blocking`), chunk by chunk, on the same core while the bytes are in its
  cache; the event loop only plans, signs, retries and verifies. Two designs were
  measured against it by hand on the 2-core benchmark machine (alternating runs,
  idle CPU from /proc/stat around each). Writing on the event loop
  as chunks arrived was as fast while the kernel's copies were cheap, but when
  they were not (system time for the same 2 GiB varies 1-3.3 s on this VM) one
  thread had to make them all: the machine sat 1.8-3.6 CPU-seconds idle per 2 GiB
  (s5cmd: 0.2-0.6) and took 4.5-8.7 s against s5cmd's 2.6-6.0. Handing chunks
  from the loop through a queue to writer threads doubled system time
  (cross-core copies, futex wake-ups, inode-lock contention). Backpressure is the
  thread itself: it receives the next chunk only after writing the last, so the
  socket, not memory, absorbs a slow disk. On plain TCP the loop itself runs in
  C (`_recvfile`, `_receive_natively`): a segment per call, the GIL released
  once, where Python's loop took it back ~9 times per chunk (2 GiB with a CRC:
  ~0.4 CPU seconds less, by hand). A body with no CRC to compute (its file is
  checked by an MD5 read back from disk) can go socket -> pipe -> file by
  splice(2) there, never through user space (`TransferConfig.splice`: off by
  default, whether it saves CPU depends on the machine). Bodies that only the
  event loop can read (through a proxy, from memory) are written there, the
  same way.
- CRCs are computed by that thread as chunks are written. A whole-file MD5 or
  SHA-256 (1.2-1.5 CPU seconds per GiB) needs the file in order: one thread per
  file reads each range back from the page cache once it is written, in order.
- The part MD5s of a multipart ETag are independent messages: once 16 parts have
  landed, of one file or of several (`_parthash`), or the last ones, a thread
  hashes them together from the page cache (mapped, not copied), one per SIMD
  lane (`_md5lanes`: 0.16-0.4 CPU seconds per GiB with AVX-512 or AVX2, against
  ~1.9 with hashlib; `benchmarks/kernels.py`).
  Without the compiled kernel, the receiving threads hash their parts with
  hashlib as chunks arrive.
- A file is verified after its last byte is written and hashed, then renamed into
  place. Temp files of files that did not finish are deleted when the run ends,
  whatever the reason, after every thread has returned: a cancelled request's
  connection is shut down so that its thread returns at once, never abandoned.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from typing import TYPE_CHECKING, NamedTuple

import anyio
import anyio.lowlevel

from ._first import FirstItem
from ._lane import Lane, Slot, StoppedError
from ._local import (
    commit_temp,
    make_dirs,
    open_temp,
    prepare_dest,
    process_age,
    sweep_partials,
)
from ._md5lanes import LANES, md5_spans
from ._md5lanes import available as md5_lanes_available
from ._parthash import PartHasher
from ._paths import is_selected, safe_relative
from ._plan import ByteRange, plan_ranges
from ._recvfile import FileRun
from ._resume import resume_token
from ._retry import RetryBudget
from ._threads import run_abortable
from .archive import extract, is_archive
from .backends._base import BlockingBody, FetchedFile, as_blocking
from .errors import (
    IntegrityError,
    NetworkError,
    ObjectNotFoundError,
    TransferError,
)
from .manifest import MANIFEST_NAME, Manifest
from .models import (
    DownloadReport,
    FileReport,
    ObjectInfo,
    ProgressCallback,
    TransferStats,
    VerifyMode,
)
from .verify import Check, FileDigest, choose_check, listed_crc
from .writer import TempFile

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence
    from pathlib import Path, PurePosixPath

    from anyio.abc import TaskGroup
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from ._resume import RangeJournal
    from .backends._base import Backend, BlockingGet, RangeBody
    from .config import StorageConfig
    from .uri import ObjectURI

__all__ = ["Engine", "Pair"]

log = logging.getLogger(__name__)

#: Files of one range up to this size get MD5/SHA-256 on the event loop as bytes
#: arrive (about 1 ms per MiB): cheaper than a thread hop and a read-back.
INLINE_HASH_LIMIT = 1024 * 1024


#: Files queued for the lane or in its workers' hands, at most. They hold no file
#: open and no task until a worker takes them, so there can be many more than the
#: per-file path's open files: the listing runs ahead and results come back in
#: bigger batches. (1000 files of 100 KiB, by hand, 4 alternating runs: 1.27 s
#: median with 256, 1.33 s with 16, as many as the per-file path's.)
LANE_WINDOW = 256

#: Listed objects the listing may run ahead of the files started: a page of S3's
#: or GCS's, so that the next page is on its way while this one is worked on.
LISTING_AHEAD = 1000

#: A listed object: its path relative to the destination, and what the store says.
_Listed = tuple[str, ObjectInfo]


async def _received(
    stream: MemoryObjectReceiveStream[_Listed],
) -> AsyncIterator[_Listed]:
    """Yield what `stream` receives until it is closed and empty.

    It waits (a trip round the event loop) only when nothing is buffered:
    `receive` takes that trip for every item, and 1000 small files took ~0.15 s
    longer with it (by hand, a scratch timer; README, How it works).
    """
    while True:
        try:
            yield stream.receive_nowait()
        except anyio.WouldBlock:
            try:
                yield await stream.receive()
            except anyio.EndOfStream:
                return
        except anyio.EndOfStream:
            return


async def _acquire(semaphore: anyio.Semaphore) -> None:
    """Acquire `semaphore`; a free token is taken without a trip round the loop.

    Per listed file, that trip cost more than the rest of listing it.
    """
    try:
        semaphore.acquire_nowait()
    except anyio.WouldBlock:
        await semaphore.acquire()


# NamedTuples and plain classes, not dataclasses: creating a dataclass costs
# 0.5-2 ms at import (code generated and compiled for its methods), and start-up
# is part of every download's time (README, "Start-up is mostly imports").


class Pair(NamedTuple):
    """One source and the directory it is downloaded into."""

    uri: ObjectURI
    dest: Path
    backend: Backend


class _Job:
    """One file being downloaded."""

    __slots__ = (
        "checked",
        "digest",
        "final",
        "info",
        "journal",
        "landed",
        "offsets",
        "pair",
        "queued",
        "queued_none",
        "ranges",
        "rel",
        "reread",
        "resumed",
        "started",
        "temp",
        "whole",
    )

    def __init__(
        self,
        pair: Pair,
        rel: str,
        final: Path,
        info: ObjectInfo,
        ranges: list[ByteRange],
        whole: bool,
        started: float,
    ) -> None:
        self.pair = pair
        self.rel = rel
        self.final = final
        self.info = info
        self.ranges = ranges
        self.whole = whole
        self.started = started
        self.temp: TempFile | None = None
        self.digest: FileDigest | None = None
        #: Set once `digest` is: the check is known before the first byte is
        #: written.
        self.checked = anyio.Event()
        #: Per range, the next byte to fetch: a retry resumes there.
        self.offsets: list[int] = []
        #: Per range, set when all of its bytes are on disk.
        self.landed: list[anyio.Event] = []
        #: Ranges still waiting for their first request slot (see `queued_none`).
        self.queued = 0
        #: Set once every range has been requested (or had landed before): what
        #: has not landed yet is in flight.
        self.queued_none = anyio.Event()
        #: Completed ranges, for a resume after a kill (large files only).
        self.journal: RangeJournal | None = None
        #: Bytes taken from an interrupted earlier run.
        self.resumed = 0
        #: Ranges on disk from an earlier run: hashed from the file, CRCs included.
        self.reread: set[int] = set()

    @property
    def uri(self) -> str:
        return self.pair.uri.child(self.info.key)

    @property
    def written(self) -> int:
        return sum(o - r.start for o, r in zip(self.offsets, self.ranges, strict=True))

    def set_check(self, check: Check, *, inline_limit: int) -> None:
        self.digest = FileDigest(
            check, self.ranges, inline_limit=inline_limit, lanes=md5_lanes_available()
        )
        self.checked.set()


class _File(NamedTuple):
    """A listed file on its way to the lane or the per-file path."""

    pair: Pair
    rel: str
    info: ObjectInfo
    files: list[FileReport]
    manifest: Manifest
    tg: TaskGroup
    in_lane: _Pending

    @property
    def uri(self) -> str:
        return self.pair.uri.child(self.info.key)

    @property
    def args(self) -> tuple[Pair, str, ObjectInfo, list[FileReport], Manifest]:
        """`Engine._run_file`'s arguments."""
        return self.pair, self.rel, self.info, self.files, self.manifest


class _Small(NamedTuple):
    """A file in the lane: its request, prepared on the event loop."""

    file: _File
    path: PurePosixPath  # relative to the destination
    get: BlockingGet
    started: float

    @property
    def final(self) -> Path:
        return self.file.pair.dest / self.path


class _Unhashed:
    """A small file written whole, whose MD5 waits to share a kernel call."""

    __slots__ = ("digest", "temp")

    def __init__(self, temp: TempFile, digest: FileDigest) -> None:
        self.temp = temp
        self.digest = digest


class _SmallResult(NamedTuple):
    """What the lane made of a file: a report, an error, or a file to hash.

    The error sends the file the per-file way; a file to hash waits for others
    (`Engine._hash_unhashed`).
    """

    error: TransferError | None
    report: FileReport | None = None
    mtime_ns: int = 0
    unhashed: _Unhashed | None = None


class _Pending:
    """Counts a pair's files in the lane; `wait` returns when none is left."""

    def __init__(self) -> None:
        self.count = 0
        self._idle: anyio.Event | None = None

    def add(self) -> None:
        self.count += 1

    def done(self) -> None:
        self.count -= 1
        if not self.count and self._idle is not None:
            self._idle.set()

    async def wait(self) -> None:
        while self.count:
            self._idle = anyio.Event()
            await self._idle.wait()


#: Fewer small files than this waiting for their MD5 are hashed one by one with
#: hashlib: a kernel call costs its longest lane times 16 (AVX2 here: 3.5 GiB/s
#: over 16 lanes, hashlib 0.55 GiB/s; even at about 2.5 files of one size).
FEWEST_FOR_LANES = 3


def _hash_batch(
    batch: list[tuple[_Small, _Unhashed]], block_size: int
) -> list[_SmallResult]:
    """In a thread: MD5 the written files of `batch`, then verify and rename each.

    Raises:
        IntegrityError: a file's MD5 does not match; files after it are left
            (their temp files are the caller's to discard).
        LocalIOError: a file could not be read or renamed.
    """
    if len(batch) >= FEWEST_FOR_LANES:
        spans = [(u.temp.fd, 0, small.file.info.size) for small, u in batch]
        for (_, unhashed), md5 in zip(batch, md5_spans(spans), strict=True):
            unhashed.digest.adopt_md5(md5)
    else:
        for _, unhashed in batch:
            unhashed.digest.hash_written_range(unhashed.temp.fd, 0, block_size)
    # Only files written whole wait here: their size is the expected one.
    return [
        _verified(small, unhashed.temp, unhashed.digest, small.file.info.size)
        for small, unhashed in batch
    ]


def _verified(
    small: _Small, temp: TempFile, digest: FileDigest, written: int
) -> _SmallResult:
    """Verify small file `small` (`written` bytes in `temp`), rename it into place.

    Raises:
        IntegrityError: its size or checksum does not match (with its URI).
        LocalIOError: the rename failed.
    """
    info = small.file.info
    try:
        digest.verify(size=info.size, written=written)
    except IntegrityError as exc:
        raise IntegrityError(exc.reason, uri=small.file.uri) from None
    mtime_ns = temp.commit()
    check = digest.check
    log.debug("verified %s (%s)", small.file.rel, check.label)
    report = FileReport(
        path=str(small.path),
        size=info.size,
        seconds=time.monotonic() - small.started,
        verification=check.label,
        verified=check.verifies_content,
    )
    return _SmallResult(None, report, mtime_ns)


class Engine:
    """Runs a set of pairs under one configuration and one set of limits.

    Args:
        config: engine knobs, verification mode and selection patterns.
        progress: called as bytes land (ranges of large files) and as files
            finish (small files, which land whole).
    """

    def __init__(
        self, config: StorageConfig, *, progress: ProgressCallback | None = None
    ) -> None:
        self._config = config
        cfg = config.transfer
        self._cfg = cfg
        self._progress = progress
        self._requests = anyio.CapacityLimiter(cfg.max_concurrency)
        self._small_requests = anyio.CapacityLimiter(cfg.small_file_concurrency)
        self._files = anyio.Semaphore(2 * cfg.max_concurrency)
        #: Files in the lane, queued or in a worker's hands (see `LANE_WINDOW`).
        self._lane_window = anyio.Semaphore(LANE_WINDOW)
        self._io = anyio.CapacityLimiter(cfg.io_concurrency)
        #: Part MD5s of multipart-ETag files, in kernel calls shared across files.
        self._parts: PartHasher
        self._open: set[_Job] = set()
        #: Directories known to exist (created or seen by this run).
        self._dirs: set[str] = set()
        self._started = time.monotonic()
        self._bytes_done = 0
        self._bytes_total = 0
        self._files_done = 0
        self._first_request_logged = False
        self._files_total = 0
        self._lane: Lane[_Small, _SmallResult]
        #: Files sent down the lane whose result has not come back.
        self._in_lane = 0
        #: Small files written and waiting for their MD5 (`_hash_unhashed`).
        self._unhashed: list[tuple[_Small, _Unhashed]] = []
        #: Those and the ones being hashed: their temp files, until renamed.
        self._unrenamed: set[_Unhashed] = set()
        self._tg: TaskGroup

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
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self._parts = PartHasher(self._io)
                tg.start_soon(self._parts.run)
                self._lane = Lane(
                    tg,
                    self._small_requests,
                    self._cfg.small_file_concurrency,
                    self._fetch_small,
                    self._finish_small,
                )
                async with anyio.create_task_group() as pairs_tg:
                    for i, pair in enumerate(pairs):
                        pairs_tg.start_soon(self._run_pair, pair, reports, i)
                self._lane.close()
                self._parts.close()
        finally:
            # Every hashing thread has returned by now (threads are waited for even
            # on cancellation): no temp file is in use. The discards are
            # synchronous, so cancellation cannot interrupt them.
            for job in list(self._open):
                self._abandon(job)
            undelivered = [r.unhashed for _, r in self._lane.undelivered()]
            for unhashed in (*self._unrenamed, *undelivered):
                if unhashed is not None:
                    unhashed.temp.discard()
        return [r for r in reports if r is not None]

    async def _run_pair(
        self, pair: Pair, reports: list[DownloadReport | None], index: int
    ) -> None:
        started = time.monotonic()
        files: list[FileReport] = []
        manifest = Manifest(pair.dest, pair.uri.display)
        in_lane = _Pending()
        lane_ok = True
        listed, listing = anyio.create_memory_object_stream[_Listed](LISTING_AHEAD)
        try:
            # The receiving end closes after the task group: a listing task still
            # sending is cancelled (on an error) before it could find it closed.
            async with listing, anyio.create_task_group() as tg:
                tg.start_soon(self._list_into, pair, listed)
                # The listing's first request goes out while the destination is
                # prepared; no file is created before that is done (it deletes
                # temp files that no journal claims).
                await anyio.to_thread.run_sync(prepare_dest, pair.dest, manifest)
                async for rel, info in _received(listing):
                    if rel == MANIFEST_NAME or not is_selected(
                        rel, self._config.allow_patterns, self._config.ignore_patterns
                    ):
                        continue
                    self._files_total += 1
                    self._bytes_total += info.size
                    skipped = self._skip_unchanged(pair, rel, info, manifest)
                    if skipped is not None:
                        files.append(skipped)
                        continue
                    file = _File(pair, rel, info, files, manifest, tg, in_lane)
                    if lane_ok and self._for_lane(info, rel):
                        await _acquire(self._lane_window)
                        lane_ok = await self._submit_small(file)
                        if lane_ok:
                            if self._lane.starting:
                                await anyio.lowlevel.checkpoint()
                            continue
                        self._lane_window.release()
                    # Bound open files (and tasks) while the listing streams on.
                    await _acquire(self._files)
                    tg.start_soon(self._run_file, *file.args)
                # Within the task group: a file the lane hands back starts in it.
                await in_lane.wait()
        except BaseException:
            listed.close()  # the listing task's job, unless it was cancelled unstarted
            manifest.close()
            raise
        files.sort(key=lambda f: f.path)
        unpacked = 0
        if (
            self._cfg.extract_archives
            and len(files) == 1
            and is_archive(files[0].path)
            and not files[0].verification.startswith("unchanged")
        ):
            unpacked = await self._unpack(pair, files[0])
            # The archive is gone; the entry now vouches for what it unpacked.
            manifest.mark_unpacked(files[0].path)
        await anyio.to_thread.run_sync(manifest.compact)
        await anyio.to_thread.run_sync(sweep_partials, pair.dest)
        reports[index] = DownloadReport(
            source=pair.uri.display,
            destination=str(pair.dest),
            files=tuple(files),
            seconds=time.monotonic() - started,
            unpacked=unpacked,
        )

    async def _unpack(self, pair: Pair, archive: FileReport) -> int:
        """Unpack a single downloaded archive into the destination (a thread)."""
        limit = self._cfg.max_unpacked or max(100 * archive.size, 1 << 30)
        count: int = await anyio.to_thread.run_sync(
            functools.partial(
                extract,
                pair.dest / archive.path,
                pair.dest,
                max_bytes=limit,
                uri=pair.uri.display,
            )
        )
        log.info("unpacked %d files from %s", count, archive.path)
        return count

    async def _list_into(
        self, pair: Pair, listed: MemoryObjectSendStream[_Listed]
    ) -> None:
        """Send `pair`'s objects (`_resolve`) to `listed`, then close it.

        A task of its own, so that the next listing page is requested while the
        files of this one are being sent down the lane, not after.
        """
        async with listed:
            async for item in self._resolve(pair):
                try:
                    listed.send_nowait(item)  # no trip round the loop per object
                except anyio.WouldBlock:
                    await listed.send(item)

    async def _resolve(self, pair: Pair) -> AsyncIterator[_Listed]:
        """Yield ``(relative path, info)`` for every object of `pair`'s source.

        ``scheme://bucket/key`` is that object when it exists, otherwise the
        prefix ``key/``; sibling keys such as ``key-v2`` never match.

        Raises:
            ObjectNotFoundError: neither an object nor a non-empty prefix exists.
        """
        uri, backend = pair.uri, pair.backend
        if not self._first_request_logged and log.isEnabledFor(logging.DEBUG):
            self._first_request_logged = True  # read /proc only when it is logged
            age = process_age()
            if age is not None:
                log.debug("first request %.0f ms after the process started", age * 1e3)
        prefix = uri.listing_prefix
        if prefix == uri.key:
            listed = backend.list_objects(uri.bucket, prefix)
        else:
            # The prefix is listed while the HEAD asks for the object, not after
            # it: a model's URI (`s3://bucket/models/llama`) is usually a prefix,
            # whose listing then does not wait a round trip for the HEAD's 404.
            # For an object, the listing is cancelled and its failure (a policy
            # that grants GetObject but not ListBucket) dropped.
            first = FirstItem(backend.list_objects(uri.bucket, prefix))
            async with anyio.create_task_group() as tg:
                tg.start_soon(first.fetch)
                async with self._requests:
                    single = await backend.stat(uri.bucket, uri.key)
                if single is not None:
                    tg.cancel_scope.cancel()
            if single is not None:
                yield uri.name, single
                return
            listed = first.rest()
        found = False
        async for info in listed:
            found = True
            yield info.key[len(prefix) :], info
        if not found:
            msg = "no object or prefix with this name"
            raise ObjectNotFoundError(msg, uri=uri.raw)

    def _skip_unchanged(
        self, pair: Pair, rel: str, info: ObjectInfo, manifest: Manifest
    ) -> FileReport | None:
        """Return a report for `rel` if the manifest shows it is already in place."""
        if not (self._cfg.skip_unchanged and manifest.has_entries) or rel.endswith("/"):
            return None
        path = safe_relative(rel, uri=pair.uri.child(info.key))
        strict = self._cfg.verify is VerifyMode.STRICT
        entry = manifest.unchanged(str(path), info, pair.dest / path, strict=strict)
        if entry is None:
            return None
        self._files_done += 1
        self._bytes_done += info.size
        self._notify()
        return FileReport(
            path=entry.path,
            size=entry.size,
            seconds=0.0,
            verification=f"unchanged ({entry.verification})",
            verified=entry.verified,
        )

    # -- small files: one worker thread each, end to end -----------------------

    def _for_lane(self, info: ObjectInfo, rel: str) -> bool:
        """Whether `info` is fetched by the lane: one whole-object GET, no HEAD."""
        return 0 < info.size <= self._cfg.part_size and not (
            info.detailed or rel.endswith("/")
        )

    async def _submit_small(self, file: _File) -> bool:
        """Send `file` down the lane; False if its store cannot (see `prepare_get`).

        Raises:
            ConfigError: the key is not a safe relative path.
        """
        pair = file.pair
        path = safe_relative(file.rel, uri=pair.uri.child(file.info.key))
        try:
            get = await pair.backend.prepare_get(pair.uri.bucket, file.info)
        except TransferError as exc:
            # Preparing can fail for a while (credentials): the per-file path
            # retries with its budget.
            log.warning("retrying %s after: %s", file.rel, exc.reason)
            self._lane_window.release()
            file.tg.start_soon(self._run_file_later, file)
            return True
        if get is None:
            return False
        file.in_lane.add()
        self._in_lane += 1
        self._lane.submit(_Small(file, path, get, time.monotonic()))
        return True

    def _fetch_small(self, small: _Small, slot: Slot) -> _SmallResult:
        """In a lane thread: GET `small`, write, check and rename it.

        The GET goes natively where it can (`BlockingGet.fetch_to_file`: the
        request, head and body in one call), else through `send` and `_receive`.
        A retryable `TransferError` is returned, not raised: the file then goes
        the per-file way, whose retries (with backoff) handle it.

        Raises:
            StoppedError: the lane is stopping (a cancellation).
            TransferError: one that is not retryable (a checksum mismatch, a
                missing object), as the per-file path raises it.
        """
        info = small.file.info
        get = small.get
        cfg = self._cfg
        final = small.final  # (a property that joins paths)
        temp: TempFile | None = None
        try:
            slot.start(get)
            temp = self._small_temp(final, info.size)
            # The CRC a response without checksum fields gets: the listing's.
            listed = listed_crc(info)
            default = -1 if listed is None or listed.native is None else listed.native
            fetched = get.fetch_to_file(
                temp.fd,
                info.size,
                default_crc=default,
                path=final,
                chunk=cfg.chunk_size,
                timeout=cfg.stall_timeout,
            )
            body = get.send() if fetched is None else None
            said = body.info if body is not None else fetched and fetched.info
            check = choose_check(said or info, cfg.verify)
            if check.needs_parts:
                return _SmallResult(None)  # a small multipart upload: needs a HEAD
            ranges = [ByteRange(0, info.size)]
            if fetched is not None:
                digest = FileDigest(check, ranges)
                written = fetched.received
                whole = written == info.size
                if whole and digest.needs_md5_only and md5_lanes_available():
                    unhashed, temp = _Unhashed(temp, digest), None
                    return _SmallResult(None, unhashed=unhashed)
                self._adopt_fetched(digest, fetched, temp.fd)
            else:
                assert body is not None
                digest = FileDigest(check, ranges, inline_limit=info.size)
                written = self._receive(
                    body, temp, digest, info.size, small.file.uri, [0]
                )
            result = _verified(small, temp, digest, written)
            temp = None
        except TransferError as exc:
            if slot.stopped:
                raise StoppedError from None
            if not exc.retryable:
                raise  # as on the per-file path: the run fails with it
            return _SmallResult(exc)
        finally:
            get.close()
            slot.finish()
            if temp is not None:
                temp.discard()
        return result

    def _small_temp(self, final: Path, size: int) -> TempFile:
        """`final`'s temp file, its directories made first if this run has not yet.

        Raises:
            LocalIOError: they cannot be made.
        """
        # Strings: `Path.parent` is a parse (see `TempFile`).
        directory = os.path.dirname(final)  # noqa: PTH120
        if directory in self._dirs:
            return TempFile(final, size, preallocate=False)
        temp, _ = open_temp(final, size, False, None)
        self._dirs.add(directory)
        return temp

    def _adopt_fetched(self, digest: FileDigest, fetched: FetchedFile, fd: int) -> None:
        """Give `digest` the CRC computed as `fetched` arrived; read back the rest.

        What the native call could not compute (another CRC than the check's,
        ordered digests such as an MD5) is computed from the written file.
        """
        native = digest.native_crc(0)
        kind = None if native is None else native[0]
        crc_done = kind in (-1, fetched.crc_kind)
        if crc_done and kind != -1:
            digest.advance(0, fetched.crc, fetched.received)
        if not crc_done or digest.needs_readback(0):
            digest.hash_written_range(
                fd, 0, self._cfg.chunk_size, with_crc=not crc_done
            )

    def _finish_small(self, batch: list[tuple[_Small, _SmallResult]]) -> None:
        """On the event loop: record the files the lane finished."""
        self._in_lane -= len(batch)
        for small, result in batch:
            if result.unhashed is not None:
                self._unhashed.append((small, result.unhashed))
                self._unrenamed.add(result.unhashed)
            else:
                self._record_small(small, result)
        self._hash_unhashed()
        self._notify()

    def _record_small(self, small: _Small, result: _SmallResult) -> None:
        """Record a file that left the lane, or send it the per-file way."""
        file = small.file
        self._lane_window.release()
        if result.report is None:
            if result.error is not None:
                log.warning("retrying %s after: %s", file.rel, result.error.reason)
            file.tg.start_soon(self._run_file_later, file)
        else:
            file.manifest.record(result.report, file.info, result.mtime_ns)
            file.files.append(result.report)
            self._files_done += 1
            self._bytes_done += file.info.size
        file.in_lane.done()

    def _hash_unhashed(self) -> None:
        """Start hashing the small files that wait for their MD5.

        A kernel call hashes 16 files for the cost of one (`md5_spans`), so
        files wait until 16 do, or until the lane has no other file out: none
        will come back before the listing sends more. They hold their place in
        `LANE_WINDOW` meanwhile, which bounds the files held open.
        """
        while len(self._unhashed) >= LANES or (self._unhashed and not self._in_lane):
            batch, self._unhashed = self._unhashed[:LANES], self._unhashed[LANES:]
            self._tg.start_soon(self._hash_small, batch)

    async def _hash_small(self, batch: list[tuple[_Small, _Unhashed]]) -> None:
        """MD5 `batch` in a thread, then verify, rename and record each file.

        Raises:
            IntegrityError: a file's MD5 does not match (the run fails, as on the
                lane); the batch's files after it are not renamed (`run`
                deletes them).
        """
        results = await anyio.to_thread.run_sync(
            _hash_batch, batch, self._cfg.chunk_size, limiter=self._io
        )
        for (small, unhashed), result in zip(batch, results, strict=True):
            self._unrenamed.discard(unhashed)
            self._record_small(small, result)
        self._notify()

    async def _run_file_later(self, file: _File) -> None:
        """`_run_file` for a file the lane handed back, once a file slot is free."""
        await self._files.acquire()
        await self._run_file(*file.args)

    # -- one file ---------------------------------------------------------------

    async def _run_file(
        self,
        pair: Pair,
        rel: str,
        info: ObjectInfo,
        files: list[FileReport],
        manifest: Manifest,
    ) -> None:
        try:
            done = await self._download_file(pair, rel, info)
        finally:
            self._files.release()
        if done is not None:
            report, mtime_ns = done
            manifest.record(report, info, mtime_ns)
            files.append(report)
            self._files_done += 1
            self._notify()

    async def _download_file(
        self, pair: Pair, rel: str, info: ObjectInfo, *, resume: bool = True
    ) -> tuple[FileReport, int] | None:
        """Download one file; return its report and mtime (None for a directory)."""
        started = time.monotonic()
        listed = info
        uri = pair.uri.child(info.key)
        path = safe_relative(rel, uri=uri)
        final = pair.dest.joinpath(path)
        if rel.endswith("/"):
            await anyio.to_thread.run_sync(make_dirs, final)
            return None
        cfg = self._cfg
        backend = pair.backend
        bucket = pair.uri.bucket
        whole = info.size <= cfg.part_size
        check: Check | None = None
        parts: list[int] | None = None
        if not whole or info.detailed or info.size == 0:
            # Large objects: a HEAD for the stored checksums (and part sizes when
            # the check needs them). Small ones learn both from their one GET.
            async with self._requests:
                info = await backend.describe(bucket, info)
                check = choose_check(info, cfg.verify)
                if check.needs_parts:
                    parts = await backend.part_sizes(bucket, info)
        if not info.ranges_ok:
            # The server ignores Range: one streamed GET of the whole object.
            whole = True
            ranges = [ByteRange(0, info.size)]
        else:
            ranges = plan_ranges(info.size, cfg.part_size, parts)
        job = _Job(pair, rel, final, info, ranges, whole and len(ranges) == 1, started)
        job.offsets = [r.start for r in ranges]
        job.landed = [anyio.Event() for _ in ranges]
        if check is not None:
            job.set_check(check, inline_limit=INLINE_HASH_LIMIT)
        small = len(ranges) == 1
        directory = os.path.dirname(final)  # noqa: PTH120 (see `_small_temp`)
        if small and directory in self._dirs:
            # Small files: open and rename on the loop. Both are single metadata
            # syscalls, cheaper than the two thread hops they would cost, which
            # dominated a model of 1000 small files. (Opening and renaming them
            # in the thread that receives the body was measured too: 1000 files
            # of 100 KiB took as long, 1.7 s, the CPU spent as much.)
            job.temp = TempFile(final, info.size, preallocate=False)
        else:
            token = None
            if not small and resume and info.etag:
                token = resume_token(info.etag, info.size, ranges)
            temp, job.journal = await anyio.to_thread.run_sync(
                open_temp, final, info.size, not small, token
            )
            job.temp = temp
            self._dirs.add(directory)
        self._open.add(job)
        if job.journal is not None:
            self._adopt_journal(job)
        job.queued = sum(not landed.is_set() for landed in job.landed)
        if not job.queued:
            job.queued_none.set()
        if small:
            # One range: fetch, then hash what needs order (if not done inline);
            # no task group, no hashing task to coordinate.
            if info.size:
                await self._fetch_range(job, 0)
            else:
                job.landed[0].set()
            await self._hash_written(job)
        else:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._hash_written, job)
                for index, landed in enumerate(job.landed):
                    if not landed.is_set():  # else resumed from a killed run
                        tg.start_soon(self._fetch_range, job, index)
        digest = job.digest
        assert digest is not None
        try:
            digest.verify(size=info.size, written=job.written)
        except IntegrityError as exc:
            if job.resumed:
                # The bytes kept from the killed run were not what they claimed
                # (the machine crashed, say): start this file over, once.
                log.warning("%s: resumed file failed verification; restarting", rel)
                self._abandon(job)
                return await self._download_file(pair, rel, listed, resume=False)
            raise IntegrityError(exc.reason, uri=uri) from None
        temp = job.temp
        assert temp is not None
        if small:
            mtime_ns = temp.commit()
        else:
            mtime_ns = await anyio.to_thread.run_sync(commit_temp, temp, job.journal)
        self._open.discard(job)
        log.debug("verified %s (%s)", rel, digest.check.label)
        report = FileReport(
            path=str(path),
            size=info.size,
            seconds=time.monotonic() - started,
            verification=digest.check.label,
            verified=digest.check.verifies_content,
            resumed=job.resumed,
        )
        return report, mtime_ns

    def _adopt_journal(self, job: _Job) -> None:
        """Mark the ranges an interrupted run completed as on disk.

        They are not fetched again, but `_hash_written` reads them back for every
        check, so bytes damaged in between fail verification.
        """
        assert job.journal is not None
        for index in sorted(job.journal.done):
            if not 0 <= index < len(job.ranges):
                continue
            byte_range = job.ranges[index]
            job.reread.add(index)
            job.offsets[index] = byte_range.end
            job.landed[index].set()
            job.resumed += byte_range.length
            self._bytes_done += byte_range.length
        if job.resumed:
            log.info("%s: resuming, %d bytes already on disk", job.rel, job.resumed)

    def _abandon(self, job: _Job) -> None:
        """Delete a job's temp file and journal (no thread may be writing it)."""
        if job.temp is not None:
            job.temp.discard()
        if job.journal is not None:
            job.journal.remove()
        self._open.discard(job)

    async def _hash_written(self, job: _Job) -> None:
        """Hash ranges from the file once on disk, in order, where needed.

        That is every range for MD5/SHA-256, and resumed ranges for everything
        (their bytes were not seen by this run).
        """
        await job.checked.wait()
        digest = job.digest
        assert digest is not None
        assert job.temp is not None
        if not digest.deferred and not job.reread:
            return
        if digest.lanes:
            await self._hash_in_lanes(job, digest)
            return
        block = self._cfg.chunk_size
        for index, landed in enumerate(job.landed):
            await landed.wait()
            reread = index in job.reread
            if digest.needs_readback(index) or reread:
                await anyio.to_thread.run_sync(
                    digest.hash_written_range,
                    job.temp.fd,
                    index,
                    block,
                    reread,
                    limiter=self._io,
                )

    async def _hash_in_lanes(self, job: _Job, digest: FileDigest) -> None:
        """MD5 the parts of a multipart-ETag file from disk, in shared kernel calls.

        A call costs the same whether 1 or 16 of its lanes hold a part (MD5 is a
        chain of dependent steps, so the vector's width is free): the parts wait
        on disk until 16 have landed, in this file or in others (`PartHasher`),
        or until the rest are in flight and would not fit in the last call with
        them.

        Hashing the parts in flight as their bytes land, to shorten that last
        call, was built and measured (commit c2507cc, reverted): no gain beyond
        the noise on two busy cores, where the hashing only moves earlier, and at
        3 Gbit/s 0.46 CPU s more for the same time (calls with few busy lanes).
        """
        assert job.temp is not None
        await self._parts.hash_file(job.temp.fd, digest, job.landed, job.queued_none)

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
        job.set_check(check, inline_limit=INLINE_HASH_LIMIT)

    async def _fetch_range(self, job: _Job, index: int) -> None:
        """Fetch one range to disk, resuming where a failure left it."""
        byte_range = job.ranges[index]
        budget = RetryBudget(self._cfg.retry)
        queued = True
        while True:
            start = job.offsets[index]
            if start > byte_range.start and not job.info.ranges_ok:
                # The server cannot resume a body: start the file over.
                self._bytes_done -= start - byte_range.start
                start = job.offsets[index] = byte_range.start
                assert job.digest is not None
                job.set_check(job.digest.check, inline_limit=INLINE_HASH_LIMIT)
            try:
                async with self._requests:
                    if queued:
                        queued = False
                        job.queued -= 1
                        if not job.queued:
                            job.queued_none.set()
                            self._parts.wake()
                    async with job.pair.backend.open_range(
                        job.pair.uri.bucket,
                        job.info,
                        start,
                        byte_range.end,
                        whole=job.whole and start == 0,
                    ) as body:
                        await self._adopt_response(job, body.info)
                        await self._pump(job, index, body)
                if job.offsets[index] >= byte_range.end:
                    if job.journal is not None:
                        job.journal.record(index)
                    job.landed[index].set()
                    self._parts.wake()
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

    async def _pump(self, job: _Job, index: int, body: RangeBody) -> None:
        """Write `body` at its offset, advancing ``job.offsets[index]``.

        Bytes read but not yet written when an error strikes are dropped; the retry
        fetches them again (at most one chunk).
        """
        blocking = as_blocking(body)
        if blocking is not None:
            started = job.offsets[index]
            try:
                await run_abortable(
                    functools.partial(self._pump_blocking, job, index, blocking),
                    blocking.abort,
                )
            finally:
                self._bytes_done += job.offsets[index] - started
                self._notify()
            return
        stall = self._cfg.stall_timeout
        # One scope per request whose deadline moves with every chunk: a new
        # timeout scope per read would cost more than the read itself.
        with anyio.CancelScope(deadline=anyio.current_time() + stall) as watchdog:
            await self._pump_into(job, index, body, watchdog)
        if watchdog.cancelled_caught:
            msg = f"no data for {stall:g} s"
            raise NetworkError(msg, uri=job.uri)

    def _pump_blocking(self, job: _Job, index: int, body: BlockingBody) -> None:
        """`_pump` in a worker thread: receive, write and CRC on one core.

        Only this thread touches this range's offset and digest until it returns;
        the event loop counts the bytes afterwards.
        """
        assert job.temp is not None
        assert job.digest is not None
        end = job.ranges[index].end
        self._receive(body, job.temp, job.digest, end, job.uri, job.offsets, index)

    def _receive(
        self,
        body: BlockingBody,
        temp: TempFile,
        digest: FileDigest,
        end: int,
        uri: str,
        offsets: list[int],
        index: int = 0,
    ) -> int:
        """Write `body` at ``offsets[index]`` on, up to `end`, advancing the offset.

        Blocks: a worker thread's loop. Returns the offset reached.

        Raises:
            IntegrityError: the body runs past `end`.
            NetworkError: the connection broke, or stalled for `stall_timeout`.
        """
        chunk = self._cfg.chunk_size
        stall = self._cfg.stall_timeout
        offset = offsets[index]
        buffers = [memoryview(b"")]
        # Natively before the first read and after it (when more bytes came
        # with the head than the loop takes); a body that cannot then (TLS,
        # chunked) is not asked again.
        natively = 2
        while True:
            if natively:
                natively -= 1
                offset = self._receive_natively(body, temp, digest, end, offsets, index)
            data = body.read_blocking(chunk, stall)
            if not data:
                break
            if offset + len(data) > end:
                msg = "the server sent more bytes than the range holds"
                raise IntegrityError(msg, uri=uri)
            buffers[0] = data
            temp.write(offset, buffers)
            digest.update(index, data, threaded=True)
            offset += len(data)
            offsets[index] = offset
        return offset

    def _receive_natively(
        self,
        body: BlockingBody,
        temp: TempFile,
        digest: FileDigest,
        end: int,
        offsets: list[int],
        index: int,
    ) -> int:
        """`_receive` in native code (`_recvfile`) as far as `body` and `digest` let it.

        One call per CRC segment, each with the GIL released throughout. Returns
        the offset reached; ``offsets[index]`` and the digest follow every byte
        written, whatever happens.

        Raises:
            NetworkError: the connection broke, or stalled for `stall_timeout`.
            LocalIOError: a write failed.
        """
        offset = offsets[index]
        while offset < end:
            native = digest.native_crc(index)
            if native is None:
                break
            kind, crc = native
            room = digest.ranges[index].room or end - offset
            run = FileRun(
                temp.final,
                temp.fd,
                offset,
                kind,
                crc,
                mutex=temp.write_mutex,
                splice=self._cfg.splice,
            )
            try:
                done = body.receive_to_file(
                    run,
                    min(room, end - offset),
                    self._cfg.chunk_size,
                    self._cfg.stall_timeout,
                )
            finally:
                if run.received:
                    digest.advance(index, run.crc, run.received)
                    offset += run.received
                    offsets[index] = offset
            if not done:
                break
        return offset

    async def _pump_into(
        self, job: _Job, index: int, body: RangeBody, watchdog: anyio.CancelScope
    ) -> None:
        assert job.temp is not None
        assert job.digest is not None
        temp, digest = job.temp, job.digest
        end = job.ranges[index].end
        chunk = self._cfg.chunk_size
        stall = self._cfg.stall_timeout
        offset = job.offsets[index]
        buffers: list[bytes | memoryview] = []
        pending = 0
        clock = anyio.current_time
        while True:
            data = await body.read(chunk)
            watchdog.deadline = clock() + stall
            if data:
                if offset + pending + len(data) > end:
                    msg = "the server sent more bytes than the range holds"
                    raise IntegrityError(msg, uri=job.uri)
                buffers.append(data)
                pending += len(data)
                # Small immutable chunks are gathered into one write; a view of a
                # connection's buffer is written before the next read reuses it.
                if pending < chunk and not isinstance(data, memoryview):
                    continue
            elif not buffers:
                return
            # Bodies only the event loop can read (through a proxy, from memory)
            # are written here, on the loop, while the bytes are in its cache.
            temp.write(offset, buffers)
            for buf in buffers:
                digest.update(index, buf)
            offset += pending
            job.offsets[index] = offset
            self._bytes_done += pending
            self._notify()
            buffers, pending = [], 0
            if not data:
                return
