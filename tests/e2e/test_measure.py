"""The benchmark harness's measuring launcher, on commands with known costs."""

from __future__ import annotations

import sys

from benchmarks.measure import run_measured


class TestRunMeasured:
    def test_reports_exit_code_cpu_and_rss(self) -> None:
        """A command's exit code, CPU seconds and peak RSS are all reported."""
        code = "import sys; b = bytearray(64 << 20); sum(range(3_000_000)); sys.exit(3)"
        m = run_measured([sys.executable, "-c", code])
        assert m.code == 3
        assert m.cpu > 0.01
        assert 60 << 20 <= m.max_rss < 200 << 20
        assert m.wall >= m.user / 2

    def test_peak_is_not_inherited_from_the_caller(self) -> None:
        """A small command reports a small peak even from a large caller."""
        ballast = bytearray(300 << 20)  # the caller grows to 300+ MiB
        m = run_measured(["true"])
        assert m.max_rss < 50 << 20
        del ballast
