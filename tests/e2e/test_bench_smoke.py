"""The benchmark harness still runs, on a tiny workload (not a measurement)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.s3util import S3Seeder

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _run_benchmark(
    module: str, *args: str, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m benchmarks.<module> args`` from the repository; never raises."""
    return subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# Past the suite's 120 s: in a fresh clone the run first makes its virtualenvs
# (storage-init installed from a wheel, kserve-storage for the http backend); the
# harness itself gets the same 300 s below.
@pytest.mark.timeout(300)
def test_harness_runs(tmp_path) -> None:
    """One round of storage-init and s5cmd on every kind of workload, tiny."""
    result = _run_benchmark(
        "run",
        "--runs",
        "1",
        "--shard-mib",
        "1",
        "--small-count",
        "10",
        "--away-ms",
        "20",
        "--big-gib",
        "0",
        "--scaling",
        "0.001,0.002",
        "--backends",
        "http",
        "--backends-gib",
        "0.01",
        "--tools",
        "storage-init,s5cmd",
        "--no-chart",
        "--work",
        str(tmp_path / "work"),
        "--out",
        str(tmp_path / "out"),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((tmp_path / "out" / "latest.json").read_text())
    runs = data["runs"]
    # The Python tools run on the image's interpreter (Debian's, which the
    # bootstrap installs), not on the one running the tests.
    assert data["machine"]["python"].endswith("(/usr/bin/python3)")
    assert {r["tool"] for r in runs} == {"storage-init", "s5cmd"}
    # 2 tools x (3 workloads (the small files near and away) x 2 upload styles
    # + 2 scaling sizes x 1 style)
    assert len(runs) == 16
    assert all(r["identical"] and r["code"] == 0 for r in runs)
    assert all(r["server_cpu"] >= 0 for r in runs)  # read from /proc per run
    # Each workload's first run follows the (write-free) warm-up, the other the
    # tool before it.
    for seed in {r["seed"] for r in runs}:
        pair = [r for r in runs if r["seed"] == seed]
        assert [r["after"] for r in pair] == ["warm-up", pair[0]["tool"]]
    assert {r["seed"] for r in runs if r["seed"].startswith("scaling")} == {
        "scaling 0.001 GiB, sdk-upload (CRC64NVME)",
        "scaling 0.002 GiB, sdk-upload (CRC64NVME)",
    }
    assert {r["seed"] for r in runs if "away" in r["seed"]} == {
        "10 x 100KiB, 20 ms away, s5cmd-upload (MD5)",
        "10 x 100KiB, 20 ms away, sdk-upload (CRC64NVME)",
    }
    other = json.loads((tmp_path / "out" / "backends.json").read_text())["runs"]
    assert {r["tool"] for r in other} == {"storage-init", "curl", "kserve-storage"}
    assert all(r["identical"] and r["code"] == 0 for r in other)
    startup = data["startup_ms"]
    assert len(startup["storage-init first request, ms after start"]) == 5
    assert all(0 < ms < 10_000 for ms in startup["s5cmd 2-byte object, wall ms"])
    assert (
        "storage-init's median wall time"
        in (tmp_path / "out" / "latest.md").read_text()
    )


def test_kernels_benchmark_runs(tmp_path) -> None:
    """The kernels benchmark measures every row it reports, on 1 MiB."""
    args = ["--mib", "1", "--runs", "1", "--out", str(tmp_path)]
    result = _run_benchmark("kernels", *args, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = (tmp_path / "kernels.md").read_text().splitlines()
    measured = [r for r in rows if r.startswith("| ") and not r.startswith("| what")]
    assert any("MD5 x16 lanes" in r for r in measured)
    assert any("crc64nvme, storage-init" in r for r in measured)
    assert all(float(r.rsplit("|", 2)[1]) > 0 for r in measured)


def test_readback_benchmark_runs(tmp_path) -> None:
    """The read-back benchmark CRCs files both ways, and the two ways agree."""
    files = [tmp_path / "a", tmp_path / "b"]
    for f in files:
        f.write_bytes(os.urandom(600_000))  # chunks and a tail
    result = _run_benchmark("readback", *map(str, files), "--runs", "1", timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["pread", "mmap"]


def test_lane_probe_runs(s3_server, tmp_path) -> None:
    """The small-file probe downloads, and counts what it says it counts."""
    seeder = S3Seeder(s3_server)
    for i in range(20):
        seeder.put(f"probe/f{i:02d}.bin", os.urandom(10_000))  # MD5 ETags
    dest = tmp_path / "dest"
    result = _run_benchmark(
        "lane_probe",
        f"s3://{s3_server.bucket}/probe",
        str(dest),
        "--profile",
        "--switch-interval",
        "0.005",
        timeout=120,
        env={**os.environ, **s3_server.env()},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("exit 0"), result.stdout
    assert len([p for p in dest.iterdir() if p.suffix == ".bin"]) == 20
    workers = re.search(r"lane workers started: (\d+)", result.stdout)
    calls = re.search(r"MD5 kernel calls: (\d+)", result.stdout)
    assert workers is not None
    assert calls is not None
    assert int(workers.group(1)) >= 1
    assert int(calls.group(1)) >= 1, result.stdout
    assert re.search(r"context switches: \d+ voluntary", result.stdout)
    assert re.search(r"lane per file \(20 files, .*native GET \d", result.stdout)
    assert "ncalls" in result.stdout  # the loop's profile
