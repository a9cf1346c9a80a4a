from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from storage_init import (
    AccessDeniedError,
    StorageConfig,
    TransferConfig,
    download,
)
from storage_init._resume import RangeJournal
from storage_init.backends.memory import MemoryBackend
from storage_init.engine import Engine
from storage_init.models import MiB

SIZE = 23 * MiB + 7


class DyingBackend(MemoryBackend):
    """Serves `allowed` range requests, then fails as if the process died."""

    def __init__(self, allowed: int) -> None:
        super().__init__()
        self.allowed = allowed
        self.served: list[tuple[int, int]] = []

    def open_range(self, bucket, info, start, end, *, whole):
        if len(self.served) >= self.allowed:
            raise AccessDeniedError("simulated kill")
        self.served.append((start, end))
        return super().open_range(bucket, info, start, end, whole=whole)


def _config() -> StorageConfig:
    # One request at a time, so that the "kill" strikes after a known range.
    return StorageConfig(transfer=TransferConfig(part_size=5 * MiB, max_concurrency=1))


async def _killed_run(tmp_path: Path, store: DyingBackend, monkeypatch) -> None:
    """Run until the backend 'dies', keeping temp files as a SIGKILL would."""
    with monkeypatch.context() as patch:
        patch.setattr(Engine, "_abandon", lambda self, job: None)
        with pytest.raises(AccessDeniedError):
            await download(
                "memory://b/big.bin",
                tmp_path,
                config=_config(),
                backends={"memory": store},
            )
    names = os.listdir(tmp_path)
    assert any(n.endswith(".partial") for n in names)
    assert any(n.endswith(".partial.journal") for n in names)


class TestResume:
    @pytest.mark.parametrize("checksum", ["crc64nvme", None])
    async def test_resumes_completed_ranges(
        self, tmp_path: Path, monkeypatch, checksum
    ) -> None:
        """After a kill, only the unfinished ranges are fetched; the file verifies."""
        data = os.urandom(SIZE)
        store = DyingBackend(allowed=3)
        store.put("b", "big.bin", data, checksum=checksum)
        await _killed_run(tmp_path, store, monkeypatch)
        store.allowed, store.served = 100, []
        report = await download(
            "memory://b/big.bin", tmp_path, config=_config(), backends={"memory": store}
        )
        (entry,) = report.files
        assert entry.resumed == 3 * 5 * MiB
        assert entry.verified
        assert [start for start, _ in store.served] == [15 * MiB, 20 * MiB]
        assert (tmp_path / "big.bin").read_bytes() == data
        assert sorted(os.listdir(tmp_path)) == [
            ".storage-init-manifest.jsonl",
            "big.bin",
        ]

    async def test_journal_is_deleted_off_the_event_loop(
        self, tmp_path: Path, monkeypatch
    ) -> None:
        """A completed file's journal goes in a worker thread, after the rename.

        Deleting a file can wait on the disk (a discard of its freed block behind
        the writeback); on the loop that held up every other file.
        """
        store = MemoryBackend()
        store.put("b", "big.bin", os.urandom(SIZE), checksum="crc64nvme")
        removals: list[tuple[bool, bool]] = []
        remove = RangeJournal.remove

        def spy(journal: RangeJournal) -> None:
            final = tmp_path / "big.bin"
            on_loop = threading.current_thread() is threading.main_thread()
            removals.append((on_loop, final.exists()))
            remove(journal)

        monkeypatch.setattr(RangeJournal, "remove", spy)
        await download(
            "memory://b/big.bin", tmp_path, config=_config(), backends={"memory": store}
        )
        # open_temp's removal of a stale journal comes first, then the commit's.
        assert removals[-1] == (False, True)
        assert not [n for n in os.listdir(tmp_path) if ".partial" in n]

    async def test_changed_object_starts_over(self, tmp_path: Path, monkeypatch):
        """A new object version never reuses the old partial file; it is swept."""
        store = DyingBackend(allowed=2)
        store.put("b", "big.bin", os.urandom(SIZE), checksum="crc32c")
        await _killed_run(tmp_path, store, monkeypatch)
        data = os.urandom(SIZE)
        store.put("b", "big.bin", data, checksum="crc32c")
        store.allowed, store.served = 100, []
        report = await download(
            "memory://b/big.bin", tmp_path, config=_config(), backends={"memory": store}
        )
        assert report.files[0].resumed == 0
        assert len(store.served) == 5
        assert (tmp_path / "big.bin").read_bytes() == data
        assert not [n for n in os.listdir(tmp_path) if ".partial" in n]

    async def test_damaged_partial_file_restarts_once(
        self, tmp_path: Path, monkeypatch
    ) -> None:
        """Resumed bytes that fail verification make the file start over, once."""
        data = os.urandom(SIZE)
        store = DyingBackend(allowed=3)
        store.put("b", "big.bin", data, checksum="crc64nvme")
        await _killed_run(tmp_path, store, monkeypatch)
        (partial,) = [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
        with partial.open("r+b") as f:
            f.seek(1000)
            f.write(b"\\x00garbage\\x00")
        store.allowed, store.served = 100, []
        report = await download(
            "memory://b/big.bin", tmp_path, config=_config(), backends={"memory": store}
        )
        assert report.files[0].resumed == 0
        assert (tmp_path / "big.bin").read_bytes() == data

    async def test_orphan_partial_without_journal_is_removed(self, tmp_path: Path):
        """A partial file with no journal cannot be trusted and is deleted."""
        store = MemoryBackend()
        store.put("b", "big.bin", os.urandom(SIZE))
        (tmp_path / ".big.bin.0123456789abcdef.partial").write_bytes(b"x")
        (tmp_path / ".gone.bin.fedcba9876543210.partial.journal").write_text("t\n")
        # An earlier version's journal, and its temp file: nothing resumes from them.
        (tmp_path / ".old.bin.0123456789abcdef.partial.json").write_text("{}")
        (tmp_path / ".old.bin.0123456789abcdef.partial.json.tmp").write_text("{}")
        await download(
            "memory://b/big.bin", tmp_path, config=_config(), backends={"memory": store}
        )
        assert not [n for n in os.listdir(tmp_path) if ".partial" in n]


class TestRangeJournal:
    """The journal's file: appended a line per range, read back safely."""

    def test_records_append_and_load_back(self, tmp_path: Path) -> None:
        path = tmp_path / ".f.tok.partial.journal"
        journal = RangeJournal(path, "tok")
        for index in (3, 0, 7):
            journal.record(index)
        assert path.read_text() == "tok\n3\n0\n7\n"
        again = RangeJournal(path, "tok")
        again.load()
        assert again.done == {0, 3, 7}
        journal.remove()
        assert not path.exists()

    def test_torn_last_line_is_not_counted_nor_extended(self, tmp_path: Path) -> None:
        """A kill mid-append leaves "1" of "12": not range 1, and not "13" later."""
        path = tmp_path / ".f.tok.partial.journal"
        path.write_text("tok\n4\n1")
        journal = RangeJournal(path, "tok")
        journal.load()
        assert journal.done == {4}
        journal.record(3)
        again = RangeJournal(path, "tok")
        again.load()
        assert again.done == {3, 4}
        assert path.read_text() == "tok\n4\n3\n"

    @pytest.mark.parametrize(
        "text",
        [
            "other\n1\n2\n",  # another download's token
            "tok",  # the token line cut short: not even the header is whole
            "tok\n1\nx\n2\n",  # a line that is no range
            '{"token": "tok", "done": [1]}',  # an earlier version's JSON
            "tok\n\xff\n",  # not text
        ],
    )
    def test_foreign_or_corrupt_journal_is_empty_and_deleted(
        self, tmp_path: Path, text: str
    ) -> None:
        path = tmp_path / ".f.tok.partial.journal"
        path.write_bytes(text.encode("latin-1"))
        journal = RangeJournal(path, "tok")
        journal.load()
        assert journal.done == set()
        assert not path.exists()
        journal.record(5)  # a new journal, whole
        assert path.read_text() == "tok\n5\n"

    def test_missing_journal_is_empty(self, tmp_path: Path) -> None:
        journal = RangeJournal(tmp_path / ".f.tok.partial.journal", "tok")
        journal.load()
        assert journal.done == set()

    def test_unwritable_journal_only_warns(self, tmp_path: Path, caplog) -> None:
        """The download goes on without it; only a later resume would need it."""
        journal = RangeJournal(tmp_path / "missing-dir" / "j.journal", "tok")
        journal.record(1)
        assert journal.done == {1}
        assert "cannot update" in caplog.text
