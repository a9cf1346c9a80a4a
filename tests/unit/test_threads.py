"""Worker threads started ahead of need."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from storage_init import _threads


def test_prestart_starts_threads_without_blocking(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`prestart` returns at once; the executor's threads appear soon after."""
    executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="prestarted")
    monkeypatch.setattr(_threads, "_executor", executor)

    def started() -> int:
        return sum(t.name.startswith("prestarted_") for t in threading.enumerate())

    try:
        begun = time.monotonic()
        _threads.prestart(8)
        assert time.monotonic() - begun < 0.5
        deadline = time.monotonic() + 5
        while started() < 8:
            assert time.monotonic() < deadline, f"{started()} threads started"
            time.sleep(0.01)
    finally:
        executor.shutdown()
