"""A destination that runs out of space: a small tmpfs mounted by the test (root)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage_init import LocalIOError, StorageConfig, TransferConfig, download
from storage_init.backends.memory import MemoryBackend
from storage_init.models import MiB


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs; skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


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
