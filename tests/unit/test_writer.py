from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

import pytest

from storage_init.errors import LocalIOError
from storage_init.writer import PARTIAL_SUFFIX, WRITE_PIECE, TempFile

if TYPE_CHECKING:
    from pathlib import Path


class TestTempFile:
    def test_writes_at_offsets_and_commits(self, tmp_path: Path) -> None:
        """Blocks land at their offsets; commit renames into place."""
        final = tmp_path / "model.bin"
        temp = TempFile(final, 10)
        assert temp.path.parent == tmp_path
        assert temp.path.name.endswith(PARTIAL_SUFFIX)
        assert temp.write(5, [b"fgh", b"ij"]) == 5
        assert temp.write(0, [b"abcde"]) == 5
        assert not final.exists()
        temp.commit()
        assert final.read_bytes() == b"abcdefghij"
        assert list(tmp_path.iterdir()) == [final]

    def test_discard_removes_temp(self, tmp_path: Path) -> None:
        """discard deletes the temp file and can be repeated."""
        temp = TempFile(tmp_path / "x", 100)
        temp.discard()
        temp.discard()
        assert list(tmp_path.iterdir()) == []

    def test_replaces_existing_file(self, tmp_path: Path) -> None:
        """An older file at the final path is replaced atomically."""
        final = tmp_path / "x"
        final.write_bytes(b"old")
        temp = TempFile(final, 3)
        temp.write(0, [b"new"])
        temp.commit()
        assert final.read_bytes() == b"new"

    def test_missing_directory(self, tmp_path: Path) -> None:
        """A missing parent is a LocalIOError that names the path."""
        with pytest.raises(LocalIOError, match="cannot write"):
            TempFile(tmp_path / "missing" / "x", 1)

    def test_write_after_close(self, tmp_path: Path) -> None:
        """Writing to a discarded file raises instead of touching another fd."""
        temp = TempFile(tmp_path / "x", 1)
        temp.discard()
        with pytest.raises(LocalIOError):
            temp.write(0, [b"a"])

    @pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
    def test_read_only_directory(self, tmp_path: Path) -> None:
        """A read-only destination is a clear LocalIOError."""
        tmp_path.chmod(0o500)
        try:
            with pytest.raises(LocalIOError, match="permission denied"):
                TempFile(tmp_path / "x", 1)
        finally:
            tmp_path.chmod(0o700)


def test_concurrent_writes_from_threads(tmp_path: Path) -> None:
    """Threads writing their own ranges of one file at once leave every byte right."""
    data = os.urandom(4 << 20)
    temp = TempFile(tmp_path / "f.bin", len(data))
    step = 64 << 10

    def write_range(start: int, end: int) -> None:
        for offset in range(start, end, step):
            chunk = memoryview(data)[offset : min(offset + step, end)]
            temp.write(offset, [chunk])

    quarter = len(data) // 4
    threads = [
        threading.Thread(target=write_range, args=(i * quarter, (i + 1) * quarter))
        for i in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    temp.commit()
    assert (tmp_path / "f.bin").read_bytes() == data


def test_large_buffers_are_written_in_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Buffers of any size land whole and in order, one pwrite per piece at most."""
    sizes: list[int] = []
    real_pwrite = os.pwrite

    def pwrite(fd: int, data: memoryview, offset: int) -> int:
        sizes.append(len(data))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)  # looked up on each call
    first = os.urandom(3 * WRITE_PIECE + 123)
    second = os.urandom(WRITE_PIECE // 2)
    head = os.urandom(1000)
    final = tmp_path / "f.bin"
    temp = TempFile(final, len(head) + len(first) + len(second))
    assert temp.write(len(head), [first, memoryview(second)]) == len(first) + len(
        second
    )
    temp.write(0, [head])
    temp.commit()
    assert final.read_bytes() == head + first + second
    assert max(sizes) == WRITE_PIECE
    assert sum(sizes) == len(head) + len(first) + len(second)
    assert len(sizes) == 4 + 1 + 1
