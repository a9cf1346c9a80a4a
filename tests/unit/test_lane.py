"""The lane: worker threads that take items from one queue and report in batches."""

from __future__ import annotations

import threading
import time
from typing import NoReturn

import anyio
import anyio.lowlevel
import pytest

from storage_init import _lane
from storage_init._lane import Lane, Slot, StoppedError


class _Get:
    """A stand-in `BlockingGet` whose `send` and `fetch_to_file` block until aborted."""

    def __init__(self) -> None:
        self.aborted = threading.Event()

    def send(self) -> NoReturn:
        self.aborted.wait(10)
        raise StoppedError

    def fetch_to_file(self, fd: int, size: int, **_: object) -> NoReturn:
        self.send()

    def abort(self) -> None:
        self.aborted.set()

    def close(self) -> None:
        pass


async def test_every_item_once_within_the_limit() -> None:
    """Each item is worked once, finished once; no more workers than allowed."""
    lock = threading.Lock()
    busy = peak = 0
    finished: list[tuple[int, int]] = []
    batches = 0

    def work(item: int, slot: Slot) -> int:
        nonlocal busy, peak
        with lock:
            busy += 1
            peak = max(peak, busy)
        time.sleep(0.001)
        with lock:
            busy -= 1
        return item * 2

    def finish(batch: list[tuple[int, int]]) -> None:
        nonlocal batches
        batches += 1
        finished.extend(batch)

    async with anyio.create_task_group() as tg:
        lane = Lane(tg, anyio.CapacityLimiter(3), 3, work, finish)
        for i in range(200):
            lane.submit(i)
            if i % 50 == 0:
                await anyio.sleep(0)
        while len(finished) < 200:
            await anyio.sleep(0.01)
        lane.close()
    assert sorted(finished) == [(i, 2 * i) for i in range(200)]
    assert 1 <= peak <= 3
    assert batches < 200, "results come back in batches"


async def test_items_after_a_pause_still_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers leave when idle for `LINGER`; a later item starts a new one."""
    monkeypatch.setattr(_lane, "LINGER", 0.01)
    finished: list[int] = []
    async with anyio.create_task_group() as tg:
        lane: Lane[int, int] = Lane(
            tg,
            anyio.CapacityLimiter(2),
            2,
            lambda i, s: i,
            lambda b: finished.extend(r for _, r in b),
        )
        lane.submit(1)
        await anyio.sleep(0.05)
        lane.submit(2)
        with anyio.fail_after(5):
            while len(finished) < 2:
                await anyio.sleep(0.01)
        lane.close()
    assert sorted(finished) == [1, 2]


async def test_idle_workers_take_items_before_new_ones_start() -> None:
    """Items that come one at a time are taken by the idle worker: no new ones.

    (Starting one per item cost the event loop ~0.5 ms each, and those started
    in excess found nothing, left and were started again.)
    """
    limiter = anyio.CapacityLimiter(8)
    finished: list[int] = []
    workers = 0
    async with anyio.create_task_group() as tg:
        lane: Lane[int, int] = Lane(
            tg, limiter, 8, lambda i, s: i, lambda b: finished.extend(r for _, r in b)
        )
        for i in range(30):
            lane.submit(i)
            with anyio.fail_after(5):
                while len(finished) <= i:
                    await anyio.sleep(0.001)
            workers = max(workers, limiter.borrowed_tokens)
        lane.close()
    assert finished == list(range(30))
    # One worker, or two when the last item's result reached the loop before its
    # worker was back waiting (a busy machine: the full suite); one per item
    # would make 8.
    assert workers <= 2


async def test_starting_until_the_loop_runs_the_new_workers() -> None:
    """`starting` asks a submitter that never awaits to yield: workers wait for it."""
    ran = threading.Event()

    def work(item: int, slot: Slot) -> int:
        ran.set()
        return item

    async with anyio.create_task_group() as tg:
        lane: Lane[int, int] = Lane(tg, anyio.CapacityLimiter(4), 4, work, print)
        before = lane.starting
        for i in range(3):
            lane.submit(i)
        assert (before, lane.starting) == (False, True)
        assert not ran.wait(0.05)  # no worker thread before the loop runs
        with anyio.fail_after(5):
            while lane.starting:
                await anyio.lowlevel.checkpoint()
        assert ran.wait(5)  # its thread runs without the loop
        lane.close()


async def test_limiter_tokens_are_held_while_working() -> None:
    """A worker holds a token of the shared limiter: others wait for it."""
    limiter = anyio.CapacityLimiter(1)
    release = threading.Event()
    finished: list[int] = []

    def work(item: int, slot: Slot) -> int:
        release.wait(5)
        return item

    async with anyio.create_task_group() as tg:
        lane = Lane(tg, limiter, 4, work, lambda b: finished.extend(r for _, r in b))
        lane.submit(1)
        with anyio.fail_after(5):
            while limiter.borrowed_tokens == 0:
                await anyio.sleep(0.01)
        assert limiter.borrowed_tokens == 1
        release.set()
        with anyio.fail_after(5):
            while not finished:
                await anyio.sleep(0.01)
        lane.close()
    assert limiter.borrowed_tokens == 0


async def test_an_error_in_work_fails_the_group() -> None:
    """An exception raised by `work` fails the task group the lane runs in."""

    def work(item: int, slot: Slot) -> int:
        raise OSError(28, "No space left on device")

    async def run() -> None:
        async with anyio.create_task_group() as tg:
            lane = Lane(tg, anyio.CapacityLimiter(2), 2, work, lambda b: None)
            lane.submit(1)
            await anyio.sleep(5)  # cancelled by the failure

    with pytest.raises(BaseExceptionGroup) as caught:
        await run()
    assert caught.group_contains(OSError)


async def test_cancel_aborts_requests_and_skips_the_queue() -> None:
    """Cancelled: a blocked request is aborted at once; queued items never start."""
    started: list[int] = []
    gets: list[_Get] = []

    def work(item: int, slot: Slot) -> int:
        started.append(item)
        get = _Get()
        gets.append(get)
        slot.start(get)
        try:
            get.send()  # raises once aborted
        finally:
            slot.finish()

    begun = time.monotonic()
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            lane = Lane(tg, anyio.CapacityLimiter(2), 2, work, lambda b: None)
            for i in range(10):
                lane.submit(i)
            with anyio.fail_after(5):
                while len(started) < 2:
                    await anyio.sleep(0.01)
            scope.cancel()
    assert scope.cancelled_caught
    assert time.monotonic() - begun < 5, "the blocked requests were aborted"
    assert len(started) == 2, "queued items were not started"
    assert all(get.aborted.is_set() for get in gets)


def test_slot_refuses_a_request_after_abort() -> None:
    """An abort that comes before `start` stops the request from being sent."""
    slot = Slot()
    slot.abort()
    get = _Get()
    with pytest.raises(StoppedError):
        slot.start(get)


async def test_cancelled_before_its_thread_the_worker_starts_no_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Workers cancelled before they ran end: none starts a replacement."""
    spawn = Lane._spawn_if_needed
    started = 0

    def counted(self: Lane[int, int]) -> None:
        nonlocal started
        # Far more than items: each cancelled worker started the next, without
        # end (the loop spun and the test hung, before this check).
        if started >= 200:
            msg = "workers restarted without end"
            raise RuntimeError(msg)
        running = self._running
        spawn(self)
        started += self._running - running

    monkeypatch.setattr(Lane, "_spawn_if_needed", counted)
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            lane: Lane[int, int] = Lane(
                tg, anyio.CapacityLimiter(8), 8, lambda i, s: i, lambda b: None
            )
            for i in range(20):
                lane.submit(i)  # workers' tasks made, not yet run
            scope.cancel()
    assert scope.cancelled_caught
    assert started <= 8
