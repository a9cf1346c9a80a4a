from __future__ import annotations

import os
from pathlib import Path

import pytest

from storage_init import (
    IntegrityError,
    StorageConfig,
    TransferConfig,
    VerifyMode,
    download,
)
from storage_init.backends.memory import MemoryBackend
from storage_init.manifest import MANIFEST_NAME, Manifest
from storage_init.models import FileReport, MiB, ObjectInfo


def _store() -> MemoryBackend:
    store = MemoryBackend()
    store.put("b", "m/config.json", b"{}")
    store.put("b", "m/w/shard.bin", os.urandom(6 * MiB), checksum="crc64nvme")
    store.put("b", "m/tok.json", b"tok")
    return store


async def _get(store: MemoryBackend, dest: Path, **transfer: object):
    config = StorageConfig(
        transfer=TransferConfig(part_size=5 * MiB, **transfer)  # type: ignore[arg-type]
    )
    return await download(
        "memory://b/m", dest, config=config, backends={"memory": store}
    )


def _methods(report) -> dict[str, str]:
    return {f.path: f.verification for f in report.files}


class TestRerun:
    async def test_rerun_skips_everything(self, tmp_path: Path) -> None:
        """A rerun downloads nothing: every file is reported unchanged."""
        store = _store()
        first = await _get(store, tmp_path)
        requests = store.requests
        second = await _get(store, tmp_path)
        assert _methods(second) == {
            path: f"unchanged ({method})" for path, method in _methods(first).items()
        }
        assert store.requests - requests == 2  # the stat and the listing only
        assert (tmp_path / MANIFEST_NAME).exists()

    async def test_changed_object_is_fetched_again(self, tmp_path: Path) -> None:
        """A new version of an object (new ETag) is downloaded again."""
        store = _store()
        await _get(store, tmp_path)
        store.put("b", "m/tok.json", b"new tokens")
        report = await _get(store, tmp_path)
        assert _methods(report)["tok.json"] == "md5-etag"
        assert (tmp_path / "tok.json").read_bytes() == b"new tokens"

    async def test_locally_modified_file_is_fetched_again(self, tmp_path: Path) -> None:
        """A local file that changed since it was written is replaced."""
        store = _store()
        await _get(store, tmp_path)
        (tmp_path / "config.json").write_bytes(b"{}")  # same size, new mtime
        os.utime(tmp_path / "config.json", ns=(1, 1))
        (tmp_path / "w" / "shard.bin").write_bytes(b"truncated")
        report = await _get(store, tmp_path)
        assert _methods(report)["config.json"] == "md5-etag"
        assert _methods(report)["w/shard.bin"] == "crc64nvme"
        assert _methods(report)["tok.json"].startswith("unchanged")

    async def test_force(self, tmp_path: Path) -> None:
        """With skip_unchanged off, everything is downloaded again."""
        store = _store()
        await _get(store, tmp_path)
        report = await _get(store, tmp_path, skip_unchanged=False)
        assert not any(m.startswith("unchanged") for m in _methods(report).values())

    async def test_strict_does_not_trust_size_only(self, tmp_path: Path) -> None:
        """Files written with only a size check are checked again under strict."""
        store = MemoryBackend()
        store.put("b", "m/x", b"data", checksum="crc32")
        store.put_sha256("b", "m/x")
        await _get(store, tmp_path, verify=VerifyMode.SIZE)
        report = await _get(store, tmp_path, verify=VerifyMode.STRICT)
        assert _methods(report) == {"x": "crc32+sha256"}

    async def test_finished_files_survive_a_failed_run(self, tmp_path: Path) -> None:
        """Files completed before a failure are skipped by the next run."""
        store = _store()
        store.corrupt("b", "m/w/shard.bin", 100)
        with pytest.raises(IntegrityError):
            await _get(store, tmp_path, max_concurrency=1)
        store.put("b", "m/w/shard.bin", os.urandom(6 * MiB), checksum="crc64nvme")
        report = await _get(store, tmp_path)
        methods = _methods(report)
        assert methods["w/shard.bin"] == "crc64nvme"
        done_before = [p for p, m in methods.items() if m.startswith("unchanged")]
        assert done_before  # at least one small file finished before the failure

    async def test_leftover_partial_files_are_removed(self, tmp_path: Path) -> None:
        """Temp files that a killed run left behind are deleted by the next."""
        (tmp_path / "w").mkdir()
        orphan = tmp_path / "w" / ".shard.bin.0badc0de.partial"
        orphan.write_bytes(b"half")
        await _get(_store(), tmp_path)
        assert not orphan.exists()

    async def test_corrupt_manifest_is_ignored(self, tmp_path: Path) -> None:
        """Garbage in the manifest makes files download again, nothing worse."""
        store = _store()
        await _get(store, tmp_path)
        (tmp_path / MANIFEST_NAME).write_text('{"path": 1}\nnot json\n\xff\n')
        report = await _get(store, tmp_path)
        assert not any(m.startswith("unchanged") for m in _methods(report).values())


def test_record_after_close_writes_nothing(tmp_path: Path) -> None:
    """A file finished after its run failed (the manifest closed) adds no line.

    The small-file lane can finish a file while the failure is on its way; the
    line would reopen a manifest no one closes again.
    """
    manifest = Manifest(tmp_path, "memory://b/m")
    report = FileReport(
        path="x.bin", size=1, seconds=0.0, verification="md5", verified=True
    )
    manifest.record(report, ObjectInfo(key="m/x.bin", size=1, etag="e1"), 1)
    manifest.close()
    before = (tmp_path / MANIFEST_NAME).read_text()
    manifest.record(report, ObjectInfo(key="m/y.bin", size=1, etag="e2"), 1)
    manifest.close()
    assert (tmp_path / MANIFEST_NAME).read_text() == before
    assert before.count("\n") == 1


class TestCompact:
    @staticmethod
    def _record(manifest: Manifest, path: str, etag: str) -> None:
        report = FileReport(
            path=path, size=1, seconds=0.0, verification="md5", verified=True
        )
        manifest.record(report, ObjectInfo(key=f"m/{path}", size=1, etag=etag), 1)

    def test_a_compact_manifest_is_not_replaced(self, tmp_path: Path) -> None:
        """A first run's manifest (one line per file) stays the file it was.

        Replacing it would free its blocks, which some file systems discard at
        once, waiting for the disk (see `Manifest.compact`).
        """
        manifest = Manifest(tmp_path, "memory://b/m")
        self._record(manifest, "a.bin", "e1")
        self._record(manifest, "b.bin", "e2")
        manifest.close()
        inode = (tmp_path / MANIFEST_NAME).stat().st_ino
        manifest.compact()
        assert (tmp_path / MANIFEST_NAME).stat().st_ino == inode
        assert (tmp_path / MANIFEST_NAME).read_text().count("\n") == 2

    def test_superseded_lines_are_dropped(self, tmp_path: Path) -> None:
        """A file recorded twice (a new version) keeps only its last line."""
        first = Manifest(tmp_path, "memory://b/m")
        self._record(first, "a.bin", "e1")
        self._record(first, "b.bin", "e2")
        first.compact()
        second = Manifest(tmp_path, "memory://b/m")
        second.load()
        self._record(second, "a.bin", "e3")
        second.compact()
        lines = (tmp_path / MANIFEST_NAME).read_text().splitlines()
        assert [('"e3"' in line, '"e2"' in line) for line in lines] == [(True, False)]
