from __future__ import annotations

import io
import logging

import pytest

from storage_init._progress import ProgressPrinter
from storage_init.models import TransferStats


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def _stats(done: int) -> TransferStats:
    return TransferStats(
        bytes_done=done, bytes_total=100, files_done=1, files_total=2, seconds=1.0
    )


class TestProgressPrinter:
    def test_bar_on_a_terminal(self) -> None:
        """On a TTY a bar with the fraction, files and rate is redrawn in place."""
        tty = _TTY()
        printer = ProgressPrinter(stream=tty, quiet=False)
        printer._interval = 0.0
        printer(_stats(50))
        printer.finish()
        out = tty.getvalue()
        assert out.startswith("\r[###############")
        assert "50.0%" in out
        assert "1/2 files" in out
        assert out.endswith("\n")

    def test_log_lines_otherwise(self, caplog: pytest.LogCaptureFixture) -> None:
        """Without a TTY, progress is a periodic log line."""
        printer = ProgressPrinter(stream=io.StringIO(), quiet=False, interval=0.0)
        with caplog.at_level(logging.INFO, logger="storage_init.progress"):
            printer(_stats(30))
        (record,) = caplog.records
        assert "progress:" in record.getMessage()
        assert "1 of 2 files" in record.getMessage()

    def test_quiet_prints_nothing(self, caplog: pytest.LogCaptureFixture) -> None:
        """--quiet silences progress entirely."""
        tty = _TTY()
        printer = ProgressPrinter(stream=tty, quiet=True, interval=0.0)
        with caplog.at_level(logging.INFO):
            printer(_stats(30))
        assert tty.getvalue() == ""
        assert not caplog.records

    def test_throttled(self) -> None:
        """Updates closer together than the interval are dropped."""
        tty = _TTY()
        printer = ProgressPrinter(stream=tty, quiet=False)
        printer._interval = 3600.0
        printer(_stats(10))
        assert tty.getvalue() == ""
