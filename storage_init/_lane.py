"""A lane of worker threads that take items from one queue and do each end to end.

The engine sends small files down it: per file, the event loop only prepares (signs)
the request and later records the result; one worker thread sends the request,
writes the body, checks it and renames the file. Asyncio only (`run_abortable`).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections import deque
from typing import TYPE_CHECKING, Generic, TypeVar

import anyio

from ._threads import run_abortable

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
#: 100 KiB started 150-770 workers where 64 were allowed). `close` sends the
#: idle ones away at once at the end.
LINGER = 1.0


class StoppedError(Exception):
    """The lane's worker was told to stop (its task was cancelled)."""


class Slot:
    """What one worker is sending, so that a cancellation can break it off."""

    def __init__(self) -> None:
        self.stopped = False
        #: Set by the worker thread as it leaves (no longer counted as running).
        self.exited = False
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
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[T] = deque()
        self._running = 0
        #: Workers waiting for an item (lingering).
        self._idle = 0
        self._done: list[tuple[T, R]] = []
        self._wake_pending = False
        self._closed = False
        self._wake = anyio.Event()
        tg.start_soon(self._collect)

    def submit(self, item: T) -> None:
        """Queue `item` (from the event loop); a worker takes it when one is free."""
        with self._cond:
            self._queue.append(item)
            self._cond.notify()
            # Only for items no idle worker will take: one started per item
            # found nothing to take when an idle worker was quicker, left, and
            # was started again (see `LINGER`).
            spawn = len(self._queue) > self._idle and self._running < self._max_workers
            if spawn:
                self._running += 1
        if spawn:
            self._tg.start_soon(self._worker)

    def undelivered(self) -> list[tuple[T, R]]:
        """Take the results that `finish` never got (the group was cancelled).

        For the caller to release what they hold, once the group has exited
        (every worker thread has returned then).
        """
        with self._cond:
            batch, self._done = self._done, []
        return batch

    def close(self) -> None:
        """No more items: the collecting task returns once it has finished them all."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._wake.set()

    async def _worker(self) -> None:
        slot = Slot()
        try:
            async with self._limiter:
                take = functools.partial(self._take, slot)
                await run_abortable(take, functools.partial(self._abort, slot))
        finally:
            # Cancelled before its thread ran: `_take` did not count it out.
            # (Once started, the thread is waited for, so this is not a race.)
            if not slot.exited:
                with self._cond:
                    self._running -= 1

    def _abort(self, slot: Slot) -> None:
        slot.abort()
        with self._cond:
            self._cond.notify_all()  # a lingering worker leaves at once

    def _take(self, slot: Slot) -> None:
        """A worker thread: run items until the queue is empty."""
        try:
            while True:
                with self._cond:
                    if not (self._queue or self._closed or slot.stopped):
                        # Waits again after a wake-up whose item another worker
                        # took first (a worker left so ~120 times per 1000 files).
                        self._idle += 1
                        self._cond.wait_for(
                            lambda: self._queue or self._closed or slot.stopped,
                            LINGER,
                        )
                        self._idle -= 1
                    if not self._queue or slot.stopped:
                        return
                    item = self._queue.popleft()
                result = self._work(item, slot)
                with self._cond:
                    self._done.append((item, result))
                    wake = not self._wake_pending
                    self._wake_pending = True
                if wake:
                    self._loop.call_soon_threadsafe(self._set_wake)
        finally:
            with self._cond:
                self._running -= 1
                slot.exited = True

    def _set_wake(self) -> None:
        self._wake.set()

    async def _collect(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            with self._cond:
                batch, self._done = self._done, []
                self._wake_pending = False
            if batch:
                self._finish(batch)
            # Closed once every submitter has seen its items finished: none is left.
            if self._closed:
                return
