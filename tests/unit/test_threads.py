"""Worker threads started ahead of need."""

from __future__ import annotations

import subprocess
import sys
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


def test_exit_right_after_prestart_is_not_held_up() -> None:
    """A process that ends while threads are still being started exits at once.

    (The executor refuses new work at exit; the threads already held were kept
    for the barrier's whole wait, 2 s, and the helper's error was printed.)
    """
    # Submits after the 8th slowed: the exit comes while 8 threads are held
    # and the rest are still being started.
    code = (
        "import time\n"
        "from storage_init import _threads\n"
        "submit, made = _threads._executor.submit, []\n"
        "def slow(*args):\n"
        "    made.append(1)\n"
        "    if len(made) > 8:\n"
        "        time.sleep(0.05)\n"
        "    return submit(*args)\n"
        "_threads._executor.submit = slow\n"
        "_threads.prestart(64)\n"
        "time.sleep(0.1)\n"
    )
    begun = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert time.monotonic() - begun < 1.5
    assert done.stderr == ""
