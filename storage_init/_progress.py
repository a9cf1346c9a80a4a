"""Progress for the CLI: a bar on a terminal, a periodic log line otherwise."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from .models import TransferStats

__all__ = ["ProgressPrinter"]

log = logging.getLogger("storage_init.progress")


def _gib(n: int) -> str:
    return f"{n / 1024**3:.2f} GiB"


class ProgressPrinter:
    """A `ProgressCallback` that throttles its own output.

    Args:
        stream: where a terminal bar is drawn (when it is a TTY).
        quiet: print nothing.
        interval: seconds between log lines when `stream` is not a TTY.
    """

    def __init__(self, *, stream: TextIO, quiet: bool, interval: float = 10.0) -> None:
        self._stream = stream
        self._tty = stream.isatty() and not quiet
        self._quiet = quiet
        self._interval = 0.2 if self._tty else interval
        self._started = time.monotonic()
        self._last = self._started
        self._drawn = False

    def elapsed(self) -> float:
        """Seconds since the printer was created."""
        return time.monotonic() - self._started

    def __call__(self, stats: TransferStats) -> None:
        """Print a progress update if the interval has passed."""
        now = time.monotonic()
        if self._quiet or now - self._last < self._interval:
            return
        self._last = now
        rate = stats.bytes_done / stats.seconds / 1e6 if stats.seconds > 0 else 0.0
        if self._tty:
            frac = stats.bytes_done / stats.bytes_total if stats.bytes_total else 0.0
            bar = "#" * int(frac * 30)
            self._stream.write(
                f"\r[{bar:<30}] {frac:6.1%} {_gib(stats.bytes_done)}/"
                f"{_gib(stats.bytes_total)} {stats.files_done}/{stats.files_total} "
                f"files {rate:.0f} MB/s "
            )
            self._stream.flush()
            self._drawn = True
        else:
            log.info(
                "progress: %s of %s, %d of %d files, %.0f MB/s",
                _gib(stats.bytes_done),
                _gib(stats.bytes_total),
                stats.files_done,
                stats.files_total,
                rate,
            )

    def finish(self) -> None:
        """End the bar's line so that later output starts on a new line."""
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
