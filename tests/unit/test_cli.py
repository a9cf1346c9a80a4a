from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import storage_init
from storage_init.cli import EXIT_CODES, main
from storage_init.errors import (
    AccessDeniedError,
    ConfigError,
    IntegrityError,
    ObjectNotFoundError,
)


class TestUsage:
    @pytest.mark.parametrize(
        "argv",
        [
            pytest.param([], id="nothing"),
            pytest.param(["s3://b/m"], id="one"),
            pytest.param(["s3://b/m", "DEST", "s3://b/n"], id="odd"),
            pytest.param(["--bogus", "s3://b/m", "/d"], id="unknown-flag"),
        ],
    )
    def test_usage_errors_exit_2(self, argv, capsys) -> None:
        """Wrong arguments give one error line, a usage line, and exit code 2."""
        assert main(argv) == 2
        err = capsys.readouterr().err.splitlines()
        assert err[0].startswith("storage-init: error:")
        assert err[1].startswith("usage: storage-init")

    @pytest.mark.parametrize(
        ("argv", "text"),
        [
            pytest.param(["ftp://h/x", "DEST"], "unsupported scheme", id="scheme"),
            pytest.param(["hf://o/m", "DEST"], "not supported yet", id="planned"),
            pytest.param(["az://b/x", "DEST"], "names no account", id="az-account"),
            pytest.param(
                ["s3://b/x", "DEST", "--part-size", "1k"], "part_size", id="part-size"
            ),
            pytest.param(
                ["s3://b/x", "DEST", "--verify", "hard"], "verify", id="verify"
            ),
            pytest.param(["not a uri", "DEST"], "invalid URI", id="uri"),
        ],
    )
    def test_config_errors_exit_2(self, argv, text, capsys, tmp_path) -> None:
        """Bad URIs and options are one clear line and exit code 2."""
        argv = [a.replace("DEST", str(tmp_path / "d")) for a in argv]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        assert text in err[0]
        assert "Traceback" not in err[0]

    def test_failure_reaches_termination_log(self, tmp_path, monkeypatch) -> None:
        """The one-line reason is written where Kubernetes reads it."""
        import storage_init.cli as cli

        log = tmp_path / "termination-log"
        log.write_text("")
        monkeypatch.setattr(cli, "TERMINATION_LOG", log)
        target = tmp_path / "file"
        target.write_text("x")
        assert main(["s3://bucket/m", str(target)]) == 1
        (line,) = log.read_text().splitlines()
        assert "not a directory" in line

    def test_dest_is_a_file(self, tmp_path, capsys) -> None:
        """A destination that is a file fails before any request, exit code 1."""
        target = tmp_path / "file"
        target.write_text("x")
        assert main(["s3://bucket/m", str(target)]) == 1
        assert "not a directory" in capsys.readouterr().err

    def test_version(self, capsys) -> None:
        """--version prints the package version."""
        with pytest.raises(SystemExit) as info:
            main(["--version"])
        assert info.value.code == 0
        assert storage_init.__version__ in capsys.readouterr().out

    def test_help_lists_exit_codes(self, capsys) -> None:
        """--help documents the exit codes."""
        with pytest.raises(SystemExit):
            main(["--help"])
        assert "3    not found or access denied" in capsys.readouterr().out


class TestFlags:
    def test_flags_override_environment(self) -> None:
        """Flags win over STORAGE_INIT_* variables, which win over defaults."""
        from storage_init.cli import _config, _parse_args
        from storage_init.models import MiB, VerifyMode

        args = _parse_args(
            [
                "s3://b/m",
                "/d",
                "--concurrency",
                "4",
                "--small-file-concurrency",
                "6",
                "--part-size",
                "16MiB",
                "--verify",
                "strict",
                "--force",
                "--memory-budget",
                "8MiB",
                "--sha256",
                "ab" * 32,
            ]
        )
        config = _config(
            args, {"STORAGE_INIT_CONCURRENCY": "12", "STORAGE_INIT_PART_SIZE": "64MiB"}
        )
        transfer = config.transfer
        assert transfer.part_size == 16 * MiB
        assert transfer.verify is VerifyMode.STRICT
        assert not transfer.skip_unchanged
        assert transfer.memory_bound <= 8 * MiB
        assert transfer.max_concurrency <= 4
        assert transfer.small_file_concurrency <= 6
        assert config.http.sha256 == "ab" * 32


class TestExitCodes:
    @pytest.mark.parametrize(
        ("error", "code"),
        [
            (ConfigError("x"), 2),
            (ObjectNotFoundError("x"), 3),
            (AccessDeniedError("x"), 3),
            (IntegrityError("x"), 1),
        ],
    )
    def test_table(self, error, code) -> None:
        """Each error class maps to its documented exit code."""
        for kind, value in EXIT_CODES:
            if isinstance(error, kind):
                assert value == code
                break


class TestSummary:
    def test_counts_what_was_fetched(self) -> None:
        """The summary separates fetched files from unchanged ones."""
        from storage_init.cli import _summary
        from storage_init.models import DownloadReport, FileReport

        files = (
            FileReport(
                path="a", size=2**30, seconds=1, verification="crc32c", verified=True
            ),
            FileReport(
                path="b",
                size=5,
                seconds=0,
                verification="unchanged (crc32c)",
                verified=True,
            ),
        )
        report = DownloadReport(
            source="s3://b/m", destination="/d", files=files, seconds=1
        )
        line = _summary([report], 1.0)
        assert line.startswith("downloaded 1 files, 1.00 GiB in 1.00 s")
        assert line.endswith("verified: 1 crc32c; 1 already in place (unchanged)")


class TestReport:
    def test_json_report(self, tmp_path: Path) -> None:
        """--report writes one entry per file (via the CLI's writer)."""
        from storage_init.cli import _write_report
        from storage_init.models import DownloadReport, FileReport

        report = DownloadReport(
            source="s3://b/m",
            destination=str(tmp_path),
            files=(
                FileReport(
                    path="a", size=3, seconds=0.1, verification="crc32", verified=True
                ),
            ),
            seconds=0.2,
        )
        out = tmp_path / "r.json"
        _write_report(out, [report], 0.25)
        data = json.loads(out.read_text())
        assert data["bytes"] == 3
        assert data["pairs"][0]["files"][0] == {
            "path": "a",
            "size": 3,
            "seconds": 0.1,
            "verification": "crc32",
            "verified": True,
            "resumed": 0,
        }


class TestRun:
    def test_exits_with_mains_code_after_flushing(self, tmp_path: Path) -> None:
        """`run` leaves by os._exit with `main`'s code, buffered output written.

        stdout is a pipe here, so block-buffered: without the flush the text
        printed before would be lost with the process.
        """
        code = (
            "import sys\n"
            "from storage_init import cli\n"
            "print('written before', end='')\n"
            "sys.argv = ['storage-init', 'only-one-argument']\n"
            "cli.run()\n"
        )
        environ = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp_path,
            env=environ,
        )
        assert done.returncode == 2
        assert done.stdout == "written before"
        assert "expected SRC DEST pairs" in done.stderr
