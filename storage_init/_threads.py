"""Blocking work in worker threads that a cancellation can interrupt."""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from .config import MAX_REQUESTS

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["prestart", "run_abortable"]

T = TypeVar("T")

#: Threads for request bodies and heads, started as needed. Idle ones cost a stack
#: each; there are never more busy than requests in flight
#: (`TransferConfig.max_concurrency` + `small_file_concurrency`, at most
#: `MAX_REQUESTS`).
_executor = ThreadPoolExecutor(
    max_workers=MAX_REQUESTS, thread_name_prefix="storage-init"
)


async def run_abortable(func: Callable[[], T], abort: Callable[[], None]) -> T:
    """Run `func` in a worker thread and return its result.

    If the caller is cancelled meanwhile, `abort` is called (on the event loop) and
    the cancellation waits for `func` to return: the thread is never abandoned, so
    nothing it uses (a file descriptor, a connection) is closed under it. `abort`
    must make `func` return or raise promptly. What `func` returned or raised
    after a cancellation is dropped; a caller that must release a result does so
    when the cancellation passes through it.

    Asyncio only (as is `backends._wire`): a hop through anyio's worker threads
    and a task group to watch for cancellation cost 250 us of CPU per call here,
    this 110 us (2000 calls in a loop, by hand); a file of 100 KiB makes two.

    Raises:
        Whatever `func` raises, or the cancellation.
    """
    # Imported here: `backends._wire`, which imports this module, is loaded
    # before asyncio and anyio to send requests ahead (`_s3requests.send_ahead`).
    import asyncio

    import anyio

    future = asyncio.get_running_loop().run_in_executor(_executor, func)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        if not future.done():
            abort()
            with anyio.CancelScope(shield=True):
                await asyncio.wait([future])
        if not future.cancelled():
            future.exception()  # retrieved: no "exception never retrieved" noise
        raise


def prestart(count: int) -> None:
    """Have `count` worker threads started soon, by a helper thread, not the caller.

    `Thread.start` waits until the new thread runs, and in a busy process that
    means waiting for the GIL: an event loop that started the lane's 64 workers
    one by one, as files came, spent ~0.27 s blocked so per 1000 small files
    (`benchmarks.lane_probe --profile`: `Condition.wait` under `Thread.start`).
    Started ahead, the threads are idle when the loop submits work, and the
    executor reuses them. Until the last of them has started, none counts as
    idle: a submit meanwhile waits for the executor's lock (which the helper
    holds while it starts each thread) and may start a thread of its own, so the
    lane's first files can still cost the loop that wait. Returns at once; best
    effort (threads busy with other work may leave fewer started).
    """
    barrier = threading.Barrier(count + 1)

    def hold() -> None:
        # Held until `count` are running at once: each needs a thread of its own.
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(_PRESTART_WAIT)

    def start_all() -> None:
        try:
            for _ in range(count):
                _executor.submit(hold)
            barrier.wait(_PRESTART_WAIT)
        except (RuntimeError, threading.BrokenBarrierError):
            # The interpreter is exiting (no new work: a run this short ends
            # before its threads are started), or not all could start: the
            # held ones are let go at once, not after the wait (an exit had
            # waited for them).
            barrier.abort()

    helper = threading.Thread(target=start_all, name="storage-init-prestart")
    helper.daemon = True
    helper.start()


#: Seconds prestarted threads wait for each other before giving up.
_PRESTART_WAIT = 2.0


def _fork_safe() -> None:
    """A forked child gets a fresh executor (the parent's threads do not exist)."""
    global _executor
    _executor = ThreadPoolExecutor(
        max_workers=MAX_REQUESTS, thread_name_prefix="storage-init"
    )


os.register_at_fork(after_in_child=_fork_safe)
