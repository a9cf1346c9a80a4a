"""A lane of worker threads that take items from one queue and do each end to end.

The engine sends small files down it: per file, the event loop only prepares (signs)
the request and later records the result; one worker thread sends the request,
writes the body, checks it and renames the file. Asyncio only (`run_abortable`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import threading
from typing import TYPE_CHECKING, Generic, TypeVar, cast

import anyio

from ._threads import prestart, run_abortable

if TYPE_CHECKING:
    from collections.abc import Callable

    from anyio import CapacityLimiter
    from anyio.abc import TaskGroup

    from .backends._base import BlockingGet

__all__ = ["Lane", "Slot", "StoppedError"]

T = TypeVar("T")
R = TypeVar("R")

#: Seconds an idle worker waits for the next item before it leaves (and gives its
#: limiter token and thread back). The listing submits files one by one, and in
#: bursts (a page at a time): with 10 ms here, workers left between them and were
#: started again (a task, a limiter token and a thread hop each; 1000 files of
#: 100 KiB started 150-770 workers where 64 were allowed: `benchmarks.lane_probe`).
#: `close` sends the idle ones away at once at the end.
LINGER = 1.0


#: Put in the queue to send one waiting worker away.
_STOP = object()


class StoppedError(Exception):
    """The lane's worker was told to stop (its task was cancelled)."""


class Slot:
    """What one worker is sending, so that a cancellation can break it off."""

    def __init__(self) -> None:
        self.stopped = False
        self._current: BlockingGet | None = None

    def start(self, get: BlockingGet) -> None:
        """Register `get` before sending it.

        Raises:
            StoppedError: the worker was told to stop; `get` is not to be sent.
        """
        self._current = get
        # Checked after the assignment: an `abort` before it is seen here, one
        # after it aborts `get`.
        if self.stopped:
            raise StoppedError

    def finish(self) -> None:
        """`get` is done with: later aborts need not reach it."""
        self._current = None

    def abort(self) -> None:
        """Stop the worker: a request in progress returns promptly."""
        self.stopped = True
        current = self._current
        if current is not None:
            current.abort()


class Lane(Generic[T, R]):
    """Up to `workers` threads that run ``work(item, slot)`` for each item submitted.

    Each worker thread takes items until the queue has stayed empty for `LINGER`
    seconds, holding one token of `limiter` meanwhile (so requests in flight stay
    capped with everyone else's); a worker is started only for an item that no
    idle one will take.
    Results come back to the event loop in batches, to ``finish(batch)`` in a task
    of `tg`: one wake-up of the loop for however many items finished meanwhile,
    where a thread hop per item cost ~110 us of CPU each way.

    An exception from `work` (other than through its result) fails the worker's
    task and so `tg`. Cancelling `tg` aborts every worker's slot and waits for its
    thread: items still queued are never started, and results not yet finished
    stay for `undelivered`.

    Args:
        tg: runs the worker tasks and the task that calls `finish`.
        limiter: one token per running worker.
        workers: threads at most.
        work: runs in a worker thread; returns the item's result.
        finish: runs on the event loop with the results finished since its last call.
    """

    def __init__(
        self,
        tg: TaskGroup,
        limiter: CapacityLimiter,
        workers: int,
        work: Callable[[T, Slot], R],
        finish: Callable[[list[tuple[T, R]]], None],
    ) -> None:
        self._tg = tg
        self._limiter = limiter
        self._max_workers = workers
        self._work = work
        self._finish = finish
        self._loop = asyncio.get_running_loop()
        # Queues, not a list under a lock: the event loop never waits for a lock
        # a worker holds (a worker preempted while holding it kept the loop
        # waiting for the GIL too: ~0.2-0.4 s per 1000 small files in
        # `Condition.__enter__`: `benchmarks.lane_probe --profile`).
        #: Items for the workers, and `_STOP`s that send a waiting one away.
        self._queue: queue.SimpleQueue[T | object] = queue.SimpleQueue()
        #: Results for `_collect`.
        self._done: queue.SimpleQueue[tuple[T, R]] = queue.SimpleQueue()
        #: Worker tasks started and not finished (changed on the event loop only).
        self._running = 0
        #: Of those, the ones whose thread is not yet asked for (see `starting`).
        self._unstarted = 0
        #: Workers waiting for an item (changed by workers, under `_idle_lock`).
        self._idle = 0
        self._idle_lock = threading.Lock()
        self._prestarted = False
        self._wake_pending = False
        self._closed = False
        self._wake = anyio.Event()
        tg.start_soon(self._collect)

    def submit(self, item: T) -> None:
        """Queue `item` (from the event loop); a worker takes it when one is free."""
        self._queue.put(item)
        self._spawn_if_needed()

    @property
    def starting(self) -> bool:
        """Whether a worker waits for the event loop to ask for its thread.

        A submitter that goes on without awaiting anything (the listing submits a
        page of files in one go) should yield to the loop when this is true:
        the lane's first request waited 20-40 ms for 256 files to be prepared
        (`LANE_WINDOW`), the server idle meanwhile.
        """
        return self._unstarted > 0

    def _spawn_if_needed(self) -> None:
        # Only for items no idle worker will take: one started per item found
        # nothing to take when an idle worker was quicker, left, and was
        # started again (see `LINGER`).
        if self._queue.qsize() > self._idle and self._running < self._max_workers:
            self._running += 1
            self._unstarted += 1
            if not self._prestarted:
                self._prestarted = True
                prestart(self._max_workers)
            self._tg.start_soon(self._worker)

    def undelivered(self) -> list[tuple[T, R]]:
        """Take the results that `finish` never got (the group was cancelled).

        For the caller to release what they hold, once the group has exited
        (every worker thread has returned then).
        """
        return _drain(self._done)

    def close(self) -> None:
        """No more items: the collecting task returns once it has finished them all."""
        self._closed = True
        for _ in range(self._running):
            self._queue.put(_STOP)  # after the items: each worker leaves at one
        self._wake.set()

    async def _worker(self) -> None:
        slot = Slot()
        unstarted = True
        returned = False
        try:
            async with self._limiter:
                # Its thread is asked for in this step (`run_abortable` submits
                # before it awaits): the loop is no longer needed to start it.
                self._unstarted -= 1
                unstarted = False
                take = functools.partial(self._take, slot)
                await run_abortable(take, functools.partial(self._abort, slot))
            returned = True
        finally:
            if unstarted:
                self._unstarted -= 1
            # The thread has returned (or never ran): counted out here, on the
            # loop, which then starts another if items came meanwhile. Not
            # after a cancellation or an error: a worker started then is
            # cancelled at once, before its thread, and would start the next,
            # without end (the loop spun at 100 % CPU, the group never exited).
            self._running -= 1
            if returned and not slot.stopped and not self._closed:
                self._spawn_if_needed()

    def _abort(self, slot: Slot) -> None:
        slot.abort()
        self._queue.put(_STOP)  # a waiting worker leaves at once

    def _take(self, slot: Slot) -> None:
        """A worker thread: run items until none comes for `LINGER` seconds."""
        while not slot.stopped:
            with self._idle_lock:
                self._idle += 1
            try:
                item = self._queue.get(timeout=LINGER)
            except queue.Empty:
                return
            finally:
                with self._idle_lock:
                    self._idle -= 1
            if item is _STOP or slot.stopped:
                return
            result = self._work(cast("T", item), slot)
            self._done.put((cast("T", item), result))
            # Cleared by `_collect` before it drains: a result put after its
            # drain always finds the flag down and wakes it.
            if not self._wake_pending:
                self._wake_pending = True
                self._loop.call_soon_threadsafe(self._set_wake)

    def _set_wake(self) -> None:
        self._wake.set()

    async def _collect(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            self._wake_pending = False
            batch = _drain(self._done)
            if batch:
                self._finish(batch)
            # Closed once every submitter has seen its items finished: none is left.
            if self._closed:
                return


def _drain(results: queue.SimpleQueue[tuple[T, R]]) -> list[tuple[T, R]]:
    """Everything in `results` now, without waiting."""
    batch = []
    with contextlib.suppress(queue.Empty):
        while True:
            batch.append(results.get_nowait())
    return batch
