"""Blocking work in worker threads that a cancellation can interrupt."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import anyio
import anyio.lowlevel

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["run_abortable"]

T = TypeVar("T")


async def run_abortable(func: Callable[[], T], abort: Callable[[], None]) -> T:
    """Run `func` in a worker thread and return its result.

    If the caller is cancelled meanwhile, `abort` is called (on the event loop) and
    the cancellation waits for `func` to return: the thread is never abandoned, so
    nothing it uses (a file descriptor, a connection) is closed under it. `abort`
    must make `func` return or raise promptly, and may be called while `func` has
    not started or has already finished.

    Raises:
        Whatever `func` raises, or the cancellation.
    """
    finished = aborted = False

    async def abort_on_cancel() -> None:
        nonlocal aborted
        try:
            await anyio.sleep_forever()
        finally:
            if not finished:
                aborted = True
                abort()

    # The thread's exception is re-raised outside the task group, which would
    # otherwise wrap it in an exception group.
    error: Exception | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(abort_on_cancel)
        try:
            result = await anyio.to_thread.run_sync(func)
        except Exception as exc:  # noqa: BLE001 - re-raised below, unchanged
            error = exc
        finally:
            finished = True
            tg.cancel_scope.cancel()
    if aborted:
        # `func` failed because it was broken off: the outcome is the cancellation
        # (level-triggered: this checkpoint raises it again).
        await anyio.lowlevel.checkpoint()
    if error is not None:
        raise error
    return result
