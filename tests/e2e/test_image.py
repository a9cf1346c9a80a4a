"""The image's file tree, staged here the way Dockerfile.distroless builds it.

There is no Docker engine on this machine, so the test makes the same tree
(scripts/image_tree.py: Debian's python3, a virtualenv, the package, the same
stripping) and runs the CLI from it the way the distroless image runs it: an
isolated interpreter that writes no byte code (``python -I -B``), no shell and an
empty PATH, a non-root UID, a read-only tree, and a real download from the local
S3 server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage_init.models import MiB
from tests.conftest import ROOT, S3Server
from tests.s3util import S3Seeder

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEBIAN_PYTHON = Path("/usr/bin/python3")
NONROOT = 65532


def _snapshot(root: Path) -> set[tuple[str, int, int]]:
    return {(str(p), p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def image_tree() -> Iterator[Path]:
    """The stripped virtualenv of the image (extra ``s3``), read-only."""
    if os.geteuid() != 0:
        pytest.skip("running as another UID needs root")
    if not DEBIAN_PYTHON.exists():
        pytest.skip("Debian's python3 (the distroless interpreter) is missing")
    stage = Path(tempfile.mkdtemp(prefix="image-tree-", dir="/tmp"))
    stage.chmod(0o755)
    try:
        subprocess.run(
            [
                str(DEBIAN_PYTHON),
                str(ROOT / "scripts" / "image_tree.py"),
                "build",
                str(stage),
                "--extras",
                "s3",
            ],
            check=True,
            capture_output=True,
        )
        venv = stage / "venv"
        subprocess.run(["chmod", "-R", "a-w", str(stage)], check=True)
        yield venv
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(stage)], check=False)
        shutil.rmtree(stage, ignore_errors=True)


def test_stripped_tree_is_small(image_tree: Path) -> None:
    """No build tools, no botocore data beyond S3 and STS, no awscrt on x86-64,
    under 22 MB (issue 6 asked for 33)."""
    (site,) = image_tree.glob("lib/python3.*/site-packages")
    assert not list(site.glob("pip*"))
    assert not list(site.glob("setuptools*"))
    services = {p.name for p in (site / "botocore" / "data").iterdir() if p.is_dir()}
    assert services == {"s3", "sts"}
    if os.uname().machine == "x86_64":
        # CRCs come from the package's own kernels: no awscrt (12 MB).
        assert not list(site.glob("*awscrt*"))
    size = sum(p.lstat().st_size for p in image_tree.rglob("*") if p.is_file())
    assert size < 22 * 1000 * 1000, size


def _image_python(
    image_tree: Path, args: list[str], env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run the tree's python as the image does: -I -B, from /, as UID 65532."""
    return subprocess.run(
        [str(image_tree / "bin" / "python"), "-I", "-B", *args],
        env=env,
        cwd="/",
        user=NONROOT,
        group=NONROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_native_kernels_load(image_tree: Path) -> None:
    """The image's wheel carries the C kernels (MD5 lanes, receive loop); they load
    there, with the C library's calls the receive loop needs."""
    code = (
        "import storage_init._md5lanes as m, storage_init._recvfile as r; "
        "assert m.available() and r.available(), m.LIBRARY"
    )
    result = _image_python(image_tree, ["-c", code], {"PATH": ""}, timeout=60)
    assert result.returncode == 0, result.stderr


def test_runs_like_distroless(image_tree: Path, s3_server: S3Server) -> None:
    """python -I -B, no PATH, UID 65532, read-only tree: downloads and verifies."""
    seeder = S3Seeder(s3_server)
    seeder.put("image/m/config.json", b"{}")
    seeder.put("image/m/w.bin", os.urandom(9 * MiB), checksum="crc64nvme")
    # Uploaded in parts with MD5s only: hashed by the image's MD5 kernel.
    seeder.put("image/m/old.bin", os.urandom(12 * MiB), part_size=5 * MiB)
    work = Path(tempfile.mkdtemp(prefix="image-run-", dir="/tmp"))
    try:
        work.chmod(0o755)
        dest = work / "models"
        dest.mkdir()
        os.chown(dest, NONROOT, NONROOT)
        before = _snapshot(image_tree.parent)
        env = {
            "PATH": "",
            "HOME": "/nonexistent",
            **s3_server.env(),
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        args = ["-m", "storage_init", "--report", str(dest / ".report.json")]
        args += [f"s3://{s3_server.bucket}/image/m", str(dest)]
        result = _image_python(image_tree, args, env, timeout=120)
        assert result.returncode == 0, result.stderr
        report = json.loads((dest / ".report.json").read_text())
        methods = {f["path"]: f["verification"] for f in report["pairs"][0]["files"]}
        assert methods == {
            "config.json": "md5-etag",
            "w.bin": "crc64nvme",
            "old.bin": "multipart-etag",
        }
        assert _snapshot(image_tree.parent) == before  # nothing written to the tree
        assert {p.stat().st_uid for p in dest.rglob("*")} == {NONROOT}
    finally:
        shutil.rmtree(work, ignore_errors=True)
