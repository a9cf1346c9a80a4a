"""The benchmark harness still runs, on a tiny workload (not a measurement)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_harness_runs(tmp_path) -> None:
    """One round of storage-init and s5cmd on 2 x 1 MiB + 10 files: all identical."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--runs",
            "1",
            "--shard-mib",
            "1",
            "--small-count",
            "10",
            "--big-gib",
            "0",
            "--tools",
            "storage-init,s5cmd",
            "--no-chart",
            "--work",
            str(tmp_path / "work"),
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((tmp_path / "out" / "latest.json").read_text())
    runs = data["runs"]
    assert {r["tool"] for r in runs} == {"storage-init", "s5cmd"}
    assert len(runs) == 8  # 2 tools x 2 workloads x 2 upload styles
    assert all(r["identical"] and r["code"] == 0 for r in runs)
    assert (
        "storage-init's median wall time"
        in (tmp_path / "out" / "latest.md").read_text()
    )
