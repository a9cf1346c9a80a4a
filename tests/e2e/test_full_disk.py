"""A destination that runs out of space: a small tmpfs mounted by the test (root)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage_init import LocalIOError, StorageConfig, TransferConfig, download
from storage_init.backends.memory import MemoryBackend
from storage_init.manifest import Manifest
from storage_init.models import FileReport, MiB, ObjectInfo


@contextlib.contextmanager
def _tmpfs(mount: Path, options: str) -> Iterator[Path]:
    """Mount a tmpfs with `options` at `mount`; skip the test where not allowed."""
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs."""
    with _tmpfs(tmp_path / "disk", "size=8m") as mount:
        yield mount


@pytest.fixture
def read_only_disk(tmp_path: Path) -> Iterator[Path]:
    """A read-only tmpfs."""
    with _tmpfs(tmp_path / "ro", "size=1m,ro") as mount:
        yield mount


class TestReadOnlyDestination:
    async def test_clear_error(self, read_only_disk: Path) -> None:
        """A read-only destination fails before any request, naming the cause."""
        store = MemoryBackend()
        store.put("b", "m/x", b"x")
        with pytest.raises(LocalIOError, match=r"read-only file system|not writable"):
            await download("memory://b/m", read_only_disk, backends={"memory": store})
        assert store.requests == 0


class TestFullDisk:
    @pytest.mark.parametrize(
        "sizes",
        [
            pytest.param([20 * MiB], id="one-large-file-preallocated"),
            pytest.param([MiB] * 12, id="many-small-files"),
        ],
    )
    async def test_clear_error_and_no_temp_files(self, tiny_disk: Path, sizes) -> None:
        """A full disk is a LocalIOError naming it; no temp file stays behind."""
        store = MemoryBackend()
        for i, size in enumerate(sizes):
            store.put("b", f"m/f{i:02}.bin", os.urandom(size), checksum="crc32c")
        config = StorageConfig(transfer=TransferConfig(part_size=5 * MiB))
        with pytest.raises(LocalIOError, match="no space left on device"):
            await download(
                "memory://b/m",
                tiny_disk / "model",
                config=config,
                backends={"memory": store},
            )
        leftovers = [p.name for p in tiny_disk.rglob("*.partial")]
        assert leftovers == []


class TestManifestOnFullDisk:
    def test_close_warns_and_does_not_raise(
        self, tiny_disk: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Manifest lines that cannot be written on close are a warning, not a failure.

        (A full disk once failed the download from `Manifest.close`, after the
        files themselves had failed cleanly.)
        """
        manifest = Manifest(tiny_disk, "memory://b/m")
        with contextlib.suppress(OSError), (tiny_disk / "filler").open("wb") as f:
            while True:
                f.write(b"\0" * MiB)
                f.flush()
        report = FileReport(
            path="x.bin", size=1, seconds=0.0, verification="md5", verified=True
        )
        for i in range(100):  # more than one buffer's worth of lines
            info = ObjectInfo(key=f"m/x{i}.bin", size=1, etag=f"e{i}")
            manifest.record(report, info, mtime_ns=1)
        manifest.close()
        assert "cannot update the manifest" in caplog.text
