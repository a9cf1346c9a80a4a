"""The storage-init command as a subprocess against the real S3 server."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.measure import run_measured
from storage_init.config import TransferConfig
from storage_init.models import MiB
from tests.conftest import S3Server
from tests.faultproxy import Faults, fault_proxy
from tests.s3util import S3Seeder

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "storage_init"]
BIG_SIZE = 2 * 1024 * MiB


def _run(server: S3Server, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        env={**os.environ, **server.env(), **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _peak_rss(server: S3Server, *args: str) -> tuple[int, int]:
    """Run the CLI; return (exit code, peak RSS in bytes) of its process tree."""
    result = run_measured([*CLI, "--quiet", *args], env={**os.environ, **server.env()})
    return result.code, result.max_rss


@pytest.fixture(scope="module")
def seeder(s3_server: S3Server) -> S3Seeder:
    return S3Seeder(s3_server)


@pytest.fixture(scope="module")
def big_object(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2 GiB object, uploaded in parts by s5cmd (an MD5 multipart ETag)."""
    path = tmp_path_factory.mktemp("big") / "big.bin"
    block = os.urandom(64 * MiB)
    with path.open("wb") as f:
        for i in range(BIG_SIZE // len(block)):
            # Vary each block so that no two parts are alike.
            f.write(i.to_bytes(8, "big") + block[8:])
    s5cmd = Path(sys.executable).parent / "s5cmd"
    subprocess.run(
        [
            str(s5cmd),
            "--endpoint-url",
            s3_server.endpoint,
            "cp",
            str(path),
            f"s3://{s3_server.bucket}/big/model.bin",
        ],
        env={**os.environ, **s3_server.env()},
        check=True,
        capture_output=True,
    )
    path.unlink()
    return f"s3://{s3_server.bucket}/big/model.bin"


class TestCLI:
    def test_downloads_with_report_and_json_logs(self, s3_server, seeder, tmp_path):
        """Exit 0, the files, a JSON report, and JSON log lines."""
        seeder.put("cli/m/a.json", b"{}")
        seeder.put("cli/m/w.bin", os.urandom(6 * MiB), checksum="crc32c")
        seeder.put("cli/n/x", b"x")
        report = tmp_path / "report.json"
        result = _run(
            s3_server,
            f"s3://{s3_server.bucket}/cli/m",
            str(tmp_path / "m"),
            f"s3://{s3_server.bucket}/cli/n",
            str(tmp_path / "n"),
            "--report",
            str(report),
            "--log-format",
            "json",
        )
        assert result.returncode == 0, result.stderr
        lines = [json.loads(line) for line in result.stderr.splitlines()]
        assert "downloaded 3 files" in lines[-1]["message"]
        data = json.loads(report.read_text())
        assert data["files"] == 3
        methods = {
            f["path"]: f["verification"] for p in data["pairs"] for f in p["files"]
        }
        assert methods == {"a.json": "md5-etag", "w.bin": "crc32c", "x": "md5-etag"}

    def test_rerun_skips_unchanged_files(self, s3_server, seeder, tmp_path):
        """A second run finds every file unchanged and downloads nothing."""
        seeder.put("rerun/m/a.bin", os.urandom(7 * MiB), checksum="crc64nvme")
        seeder.put("rerun/m/b.json", b"{}")
        src = f"s3://{s3_server.bucket}/rerun/m"
        first = _run(
            s3_server, src, str(tmp_path / "m"), "--report", str(tmp_path / "1")
        )
        assert first.returncode == 0, first.stderr
        again = _run(
            s3_server, src, str(tmp_path / "m"), "--report", str(tmp_path / "2")
        )
        assert again.returncode == 0, again.stderr
        data = json.loads((tmp_path / "2").read_text())
        methods = sorted(f["verification"] for f in data["pairs"][0]["files"])
        assert methods == ["unchanged (crc64nvme)", "unchanged (md5-etag)"]

    def test_first_requests_are_sent_ahead_once(self, s3_server, seeder, tmp_path):
        """The HEAD and the first listing page leave before the engine loads, once."""
        data = os.urandom(MiB)
        seeder.put("ahead/m/a.bin", data)
        seeder.put("ahead/m/b.json", b"{}")
        faults = Faults()
        bucket = s3_server.bucket
        with fault_proxy(s3_server.endpoint, faults) as proxy:
            result = _run(
                s3_server,
                "--debug",
                f"s3://{bucket}/ahead/m",
                str(tmp_path / "m"),
                AWS_ENDPOINT_URL=proxy.endpoint,
            )
        assert result.returncode == 0, result.stderr
        assert "after the process started (ahead)" in result.stderr
        heads = [r for r in faults.requests if r.startswith("HEAD ")]
        listings = [r for r in faults.requests if "list-type=2" in r]
        assert heads == [f"HEAD /{bucket}/ahead/m"]
        assert len(listings) == 1
        assert "prefix=ahead%2Fm%2F" in listings[0]
        assert (tmp_path / "m" / "a.bin").read_bytes() == data

    def test_broken_requests_ahead_are_sent_again(self, s3_server, seeder, tmp_path):
        """Requests sent ahead whose connections break are sent again by the run."""
        data = os.urandom(MiB)
        seeder.put("ahead-reset/m/a.bin", data)
        # The first two connections are the ones sent ahead (HEAD, listing).
        faults = Faults(reset_at=5, budget=2)
        with fault_proxy(s3_server.endpoint, faults) as proxy:
            result = _run(
                s3_server,
                f"s3://{s3_server.bucket}/ahead-reset/m",
                str(tmp_path / "m"),
                AWS_ENDPOINT_URL=proxy.endpoint,
            )
        assert result.returncode == 0, result.stderr
        assert faults.injected == 2
        assert sum(r.startswith("HEAD ") for r in faults.requests) == 2
        assert sum("list-type=2" in r for r in faults.requests) == 2
        assert (tmp_path / "m" / "a.bin").read_bytes() == data

    def test_not_found_exit_3(self, s3_server, tmp_path):
        """A missing model exits 3 with one line naming it."""
        result = _run(s3_server, f"s3://{s3_server.bucket}/nope/model", str(tmp_path))
        assert result.returncode == 3
        (line,) = result.stderr.strip().splitlines()
        assert "nope/model" in line
        assert os.listdir(tmp_path) == []

    def test_secrets_never_printed(self, s3_server, seeder, tmp_path):
        """Keys from the environment or STORAGE_CONFIG never reach the output."""
        seeder.put("secret/x", b"x")
        spec = json.dumps(
            {
                "type": "s3",
                "access_key_id": "AKIDLEAKCHECK",
                "secret_access_key": "SuperSecretLeakCheck",
            }
        )
        result = _run(
            s3_server,
            f"s3://{s3_server.bucket}/secret/x",
            str(tmp_path),
            "--debug",
            STORAGE_CONFIG=spec,
        )
        assert result.returncode == 3
        output = result.stdout + result.stderr
        assert "SuperSecretLeakCheck" not in output
        assert s3_server.secret_key not in output


@pytest.mark.slow
class TestBigObject:
    def test_multi_gb_download_memory_bound(self, s3_server, big_object, tmp_path):
        """A 2 GiB multipart object is ETag-verified with peak RSS within the bound.

        The bound is what the config states, measured as the growth over the same
        command downloading a tiny object (interpreter, SDK and pools included).
        """
        seeder = S3Seeder(s3_server)
        seeder.put("tiny/t", b"t")
        code, baseline = _peak_rss(
            s3_server, f"s3://{s3_server.bucket}/tiny/t", str(tmp_path / "tiny")
        )
        assert code == 0
        report = tmp_path / "r.json"
        code, peak = _peak_rss(
            s3_server, big_object, str(tmp_path / "big"), "--report", str(report)
        )
        assert code == 0
        (entry,) = json.loads(report.read_text())["pairs"][0]["files"]
        assert entry["size"] == BIG_SIZE
        assert (entry["verification"], entry["verified"]) == ("multipart-etag", True)
        bound = TransferConfig().memory_bound
        # Slack: allocator fragmentation, thread stacks, the larger connection pool.
        assert peak - baseline <= bound + 32 * MiB, (peak, baseline, bound)
        assert peak <= 200 * MiB, (peak, baseline)

    def test_sigkill_then_resume(self, s3_server, big_object, tmp_path):
        """Killed at about half way, a rerun fetches only what was not finished."""
        proc = subprocess.Popen(
            [*CLI, "--quiet", big_object, str(tmp_path)],
            env={**os.environ, **s3_server.env()},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        done = 0
        while done < 20:  # of 41 parts of 50 MiB (s5cmd's part size)
            assert proc.poll() is None, "finished before it could be killed"
            assert time.monotonic() < deadline
            for journal in tmp_path.glob(".*.partial.journal"):
                with contextlib.suppress(OSError):
                    # The token's line, then one line per completed range.
                    done = journal.read_text().count("\n") - 1
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        report = tmp_path / "report.json"
        result = _run(s3_server, big_object, str(tmp_path), "--report", str(report))
        assert result.returncode == 0, result.stderr
        (entry,) = json.loads(report.read_text())["pairs"][0]["files"]
        assert entry["verified"]
        assert entry["verification"] == "multipart-etag"
        assert entry["resumed"] >= 20 * 50 * MiB
        assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]

    @pytest.mark.parametrize(
        ("signum", "code", "name"),
        [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT")],
    )
    def test_signal_leaves_no_partial_file(
        self, s3_server, big_object, tmp_path, signum, code, name
    ):
        """SIGTERM/SIGINT mid-download exit 143/130 and remove every temp file."""
        proc = subprocess.Popen(
            [*CLI, big_object, str(tmp_path)],
            env={**os.environ, **s3_server.env()},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while not any(p.name.endswith(".partial") for p in tmp_path.iterdir()):
            assert time.monotonic() < deadline, "the download never started"
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.02)
        time.sleep(0.3)
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == code, stderr
        assert name in stderr
        assert os.listdir(tmp_path) == []
