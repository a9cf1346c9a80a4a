from __future__ import annotations

import os
from typing import TYPE_CHECKING

import anyio
import pytest

from storage_init import (
    AccessDeniedError,
    IntegrityError,
    LocalIOError,
    ObjectChangedError,
    ObjectNotFoundError,
    RetriesExhaustedError,
    RetryConfig,
    StorageConfig,
    TransferConfig,
    UnsafePathError,
    VerifyMode,
    download,
    download_many,
)
from storage_init._md5lanes import md5_spans
from storage_init.backends.memory import MemoryBackend
from storage_init.engine import LISTING_AHEAD
from storage_init.manifest import MANIFEST_NAME
from storage_init.models import MiB, TransferStats
from tests.doubles import FlakyBackend, HeldBackend, ListingWatchBackend, SlowBackend

if TYPE_CHECKING:
    from pathlib import Path

SMALL = StorageConfig(
    transfer=TransferConfig(part_size=5 * MiB, chunk_size=64 * 1024, max_concurrency=4)
)
FAST_RETRY = RetryConfig(max_attempts=4, initial_backoff=0.0, max_backoff=0.0)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME
    }


def _config(**transfer: object) -> StorageConfig:
    base: dict[str, object] = {
        "part_size": 5 * MiB,
        "chunk_size": 64 * 1024,
        "max_concurrency": 4,
    }
    base.update(transfer)
    return StorageConfig(transfer=TransferConfig(**base))  # type: ignore[arg-type]


class TestResolve:
    async def test_object_prefix_and_siblings(self, tmp_path: Path) -> None:
        """A key that exists is one file; otherwise its prefix/, never siblings."""
        store = MemoryBackend()
        store.put("b", "models/m", b"single")
        store.put("b", "models/m2/x", b"sibling")
        store.put("b", "models/llama/config.json", b"{}")
        store.put("b", "models/llama/sub/w.bin", b"w")
        store.put("b", "models/llama-v2/w.bin", b"other")
        report = await download(
            "memory://b/models/llama", tmp_path / "a", backends={"memory": store}
        )
        assert _files(tmp_path / "a") == {"config.json": b"{}", "sub/w.bin": b"w"}
        assert [f.path for f in report.files] == ["config.json", "sub/w.bin"]
        await download(
            "memory://b/models/m", tmp_path / "b", backends={"memory": store}
        )
        assert _files(tmp_path / "b") == {"m": b"single"}

    async def test_prefix_listed_while_the_head_is_in_flight(
        self, tmp_path: Path
    ) -> None:
        """A key without a slash: its prefix's listing does not wait for the HEAD."""
        store = ListingWatchBackend()
        store.put("b", "models/llama/config.json", b"{}")
        report = await download(
            "memory://b/models/llama", tmp_path, backends={"memory": store}
        )
        assert store.listing_began_during_head
        assert [f.path for f in report.files] == ["config.json"]

    async def test_object_needs_no_listing_permission(self, tmp_path: Path) -> None:
        """The listing sent alongside an object's HEAD may fail: it is not needed.

        A prefix still needs it: then its failure is the error.
        """
        store = ListingWatchBackend(wait=0.05, deny_listing=True)
        store.put("b", "models/m.bin", b"single")
        store.put("b", "models/llama/config.json", b"{}")
        await download(
            "memory://b/models/m.bin", tmp_path / "a", backends={"memory": store}
        )
        assert _files(tmp_path / "a") == {"m.bin": b"single"}
        with pytest.raises(AccessDeniedError, match="ListBucket denied"):
            await download(
                "memory://b/models/llama", tmp_path / "b", backends={"memory": store}
            )
        assert _files(tmp_path / "b") == {}

    async def test_whole_bucket_zero_bytes_and_markers(self, tmp_path: Path) -> None:
        """A bucket URI takes every key; empty objects stay; markers make dirs."""
        store = MemoryBackend()
        store.put("b", "empty", b"")
        store.put("b", "dir/", b"")
        store.put("b", "a b/ü.json", b"1")
        report = await download("memory://b", tmp_path, backends={"memory": store})
        assert _files(tmp_path) == {"empty": b"", "a b/ü.json": b"1"}
        assert (tmp_path / "dir").is_dir()
        assert report.bytes == 1

    async def test_not_found(self, tmp_path: Path) -> None:
        """Neither an object nor a prefix: ObjectNotFoundError, nothing written."""
        store = MemoryBackend()
        store.put("b", "other", b"x")
        with pytest.raises(ObjectNotFoundError):
            await download(
                "memory://b/missing", tmp_path / "d", backends={"memory": store}
            )
        assert _files(tmp_path) == {}

    async def test_pagination(self, tmp_path: Path) -> None:
        """Listings of many pages are followed to the end."""
        store = MemoryBackend(page_size=7)
        for i in range(50):
            store.put("b", f"p/{i:03}", str(i).encode())
        report = await download("memory://b/p", tmp_path, backends={"memory": store})
        assert len(report.files) == 50

    async def test_patterns(self, tmp_path: Path) -> None:
        """Allow and ignore patterns select files by relative path."""
        store = MemoryBackend()
        for name in ("config.json", "tokenizer.json", "model.safetensors"):
            store.put("b", f"m/{name}", b"x")
        config = StorageConfig(allow_patterns=("*.json",), ignore_patterns=("tok*",))
        await download(
            "memory://b/m", tmp_path, config=config, backends={"memory": store}
        )
        assert set(_files(tmp_path)) == {"config.json"}

    async def test_name_too_long(self, tmp_path: Path) -> None:
        """A key segment longer than the file system allows is a clear error."""
        store = MemoryBackend()
        store.put("b", "m/" + "x" * 300 + ".bin", b"data")
        with pytest.raises(LocalIOError, match="file name too long"):
            await download("memory://b/m", tmp_path, backends={"memory": store})
        assert not [p for p in tmp_path.rglob("*") if p.is_file()]

    @pytest.mark.parametrize("key", ["m/../escape", "m//../../x"])
    async def test_unsafe_keys(self, tmp_path: Path, key: str) -> None:
        """Keys escaping the destination fail and write nothing outside it."""
        store = MemoryBackend()
        store.put("b", key, b"evil")
        with pytest.raises(UnsafePathError):
            await download("memory://b/m", tmp_path / "d", backends={"memory": store})
        assert _files(tmp_path) == {}

    async def test_unsafe_key_while_the_listing_runs_ahead(
        self, tmp_path: Path
    ) -> None:
        """The listing task, blocked on a full buffer, ends quietly on an error.

        The first key is unsafe and the listing has more objects than the buffer
        holds: the error is raised alone, not in a group with the listing task's.
        """
        store = MemoryBackend()
        store.put("b", "m/../escape", b"evil")
        for i in range(LISTING_AHEAD + 10):
            store.put("b", f"m/{i:05}", b"x")
        with pytest.raises(UnsafePathError):
            await download("memory://b/m", tmp_path / "d", backends={"memory": store})
        assert not (tmp_path / "escape").exists()


class TestTransfer:
    @pytest.mark.parametrize(
        ("kwargs", "label"),
        [
            pytest.param({"checksum": "crc64nvme"}, "crc64nvme", id="crc64"),
            pytest.param(
                {"checksum": "crc32c", "part_size": 5 * MiB},
                "crc32c",
                id="crc32c-multipart-full",
            ),
            pytest.param(
                {"checksum": "crc32", "part_size": 5 * MiB, "composite": True},
                "crc32-composite",
                id="composite",
            ),
            pytest.param({"part_size": 5 * MiB}, "multipart-etag", id="multipart-etag"),
            pytest.param({}, "md5-etag", id="md5-etag"),
        ],
    )
    async def test_large_object_verified(
        self, tmp_path: Path, kwargs: dict[str, object], label: str
    ) -> None:
        """A multi-range object arrives intact and is verified by the best check."""
        data = os.urandom(23 * MiB + 12345)
        store = MemoryBackend()
        store.put("b", "big.bin", data, **kwargs)  # type: ignore[arg-type]
        report = await download(
            "memory://b/big.bin", tmp_path, config=_config(), backends={"memory": store}
        )
        assert (tmp_path / "big.bin").read_bytes() == data
        (entry,) = report.files
        assert (entry.verification, entry.verified) == (label, True)

    @pytest.mark.parametrize("lanes", [True, False], ids=["lanes", "hashlib"])
    async def test_many_parts_in_lanes(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lanes: bool
    ) -> None:
        """A multipart ETag over 40 parts (5 per range) verifies with the parts
        hashed 16 at a time from disk, and with hashlib as they arrive."""
        monkeypatch.setattr("storage_init.engine.md5_lanes_available", lambda: lanes)
        data = os.urandom(40 * MiB - 7)
        store = MemoryBackend()
        store.put("b", "big.bin", data, part_size=MiB)
        report = await download(
            "memory://b/big.bin", tmp_path, config=_config(), backends={"memory": store}
        )
        assert (tmp_path / "big.bin").read_bytes() == data
        assert report.files[0].verification == "multipart-etag"

    async def test_parts_landed_are_hashed_while_the_last_arrive(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Once every range is requested, parts that landed and would not fit in
        the last call with those in flight are hashed while those arrive: one
        call is left after the last byte."""
        monkeypatch.setattr("storage_init.engine.md5_lanes_available", lambda: True)
        calls: list[list[int]] = []
        first_call = anyio.Event()

        def spans_hashed(spans: list[tuple[int, int, int]]) -> list[bytes]:
            calls.append([offset // (5 * MiB) for _, offset, _ in spans])
            anyio.from_thread.run_sync(first_call.set)
            return md5_spans(spans)

        monkeypatch.setattr("storage_init._parthash.md5_spans", spans_hashed)
        # 17 ranges of one 5 MiB part each; the last 4 (as many as in flight)
        # are held until the first call: 13 land, and 13 + 4 make more than 16.
        data = os.urandom(85 * MiB)
        store = HeldBackend(held_from=65 * MiB, until=first_call)
        store.put("b", "big.bin", data, part_size=5 * MiB)
        with anyio.fail_after(10):
            report = await download(
                "memory://b/big.bin",
                tmp_path,
                config=_config(),
                backends={"memory": store},
            )
        assert report.files[0].verification == "multipart-etag"
        # The first call came before the held ranges were let go (it let them
        # go; without it they wait 5 s and all 17 land: a call of 16, then 1).
        early, last = calls
        assert sorted(early) == list(range(13))
        assert sorted(last) == list(range(13, 17))

    async def test_small_multipart_object(self, tmp_path: Path) -> None:
        """A small object uploaded in parts is fetched whole and checked by parts."""
        data = os.urandom(5 * MiB + 10)
        store = MemoryBackend()
        store.put(
            "b", "d/x", data, part_size=5 * MiB, checksum="crc32c", composite=True
        )
        report = await download(
            "memory://b/d",
            tmp_path,
            config=_config(part_size=8 * MiB),
            backends={"memory": store},
        )
        assert report.files[0].verification == "crc32c-composite"
        assert (tmp_path / "x").read_bytes() == data

    @pytest.mark.parametrize("size", [100, 12 * MiB])
    async def test_corruption_detected(self, tmp_path: Path, size: int) -> None:
        """Corrupted bytes fail verification and no file reaches its final path."""
        store = MemoryBackend()
        store.put("b", "m/w.bin", os.urandom(size), checksum="crc64nvme")
        store.corrupt("b", "m/w.bin", size // 2)
        with pytest.raises(IntegrityError, match="crc64nvme mismatch") as info:
            await download(
                "memory://b/m", tmp_path, config=_config(), backends={"memory": store}
            )
        assert "memory://b/m/w.bin" in str(info.value)
        assert os.listdir(tmp_path) == []

    async def test_retry_resumes_range(self, tmp_path: Path) -> None:
        """A body that breaks is resumed from the bytes already received."""
        data = os.urandom(3 * MiB)
        store = FlakyBackend(failures=3, after_reads=5)
        store.put("b", "f", data, checksum="crc32c")
        config = StorageConfig(
            transfer=TransferConfig(chunk_size=64 * 1024, retry=FAST_RETRY)
        )
        await download(
            "memory://b/f", tmp_path, config=config, backends={"memory": store}
        )
        assert (tmp_path / "f").read_bytes() == data
        starts = [start for start, _ in store.opened]
        assert starts[0] == 0
        assert all(s > 0 for s in starts[1:])  # resumed, never from zero
        assert starts == sorted(starts)

    async def test_retries_exhausted(self, tmp_path: Path) -> None:
        """A range that keeps failing gives up with RetriesExhaustedError."""
        store = FlakyBackend(failures=100, after_reads=0)
        store.put("b", "f", b"x" * 1000)
        config = StorageConfig(transfer=TransferConfig(retry=FAST_RETRY))
        with pytest.raises(RetriesExhaustedError) as info:
            await download(
                "memory://b/f", tmp_path, config=config, backends={"memory": store}
            )
        assert info.value.attempts == 4
        assert os.listdir(tmp_path) == []

    async def test_stall_timeout(self, tmp_path: Path) -> None:
        """A body that sends nothing for stall_timeout is abandoned and retried."""
        store = FlakyBackend(failures=1, after_reads=0, stall=True)
        store.put("b", "f", b"y" * 1000)
        config = StorageConfig(
            transfer=TransferConfig(stall_timeout=0.2, retry=FAST_RETRY)
        )
        with anyio.fail_after(10):
            await download(
                "memory://b/f", tmp_path, config=config, backends={"memory": store}
            )
        assert (tmp_path / "f").read_bytes() == b"y" * 1000

    async def test_object_changed(self, tmp_path: Path) -> None:
        """An object replaced after listing is detected, not mixed."""
        store = MemoryBackend()
        store.put("b", "m/a", b"old")

        class Swapping(MemoryBackend):
            async def list_objects(self, bucket, prefix):
                async for info in store.list_objects(bucket, prefix):
                    yield info
                store.put("b", "m/a", b"new!")

        swapping = Swapping()
        swapping._buckets = store._buckets
        with pytest.raises(ObjectChangedError):
            await download("memory://b/m", tmp_path, backends={"memory": swapping})

    async def test_cancellation_leaves_no_temp_file(self, tmp_path: Path) -> None:
        """Cancelling once bytes have landed removes every temp file."""
        store = SlowBackend(delay=0.001)
        for i in range(4):
            store.put("b", f"m/{i}", os.urandom(2 * MiB))
        with anyio.CancelScope() as scope:

            def cancel_on_first_bytes(stats: TransferStats) -> None:
                if stats.bytes_done:
                    scope.cancel()

            await download(
                "memory://b/m",
                tmp_path,
                config=_config(),
                backends={"memory": store},
                progress=cancel_on_first_bytes,
            )
        assert scope.cancelled_caught
        assert os.listdir(tmp_path) == []

    def test_no_thread_outlives_the_loop(self, tmp_path: Path) -> None:
        """Inside a caller's loop no thread is started that outlives that loop."""
        import asyncio
        import threading

        store = MemoryBackend()
        store.put("b", "m/x", os.urandom(3 * MiB))
        before = set(threading.enumerate())

        async def caller() -> None:
            await download("memory://b/m", tmp_path, backends={"memory": store})

        asyncio.run(caller())
        # Worker threads are told to stop when the loop closes; they end promptly.
        for thread in set(threading.enumerate()) - before:
            thread.join(timeout=5)
        assert set(threading.enumerate()) <= before

    async def test_many_pairs_and_progress(self, tmp_path: Path) -> None:
        """Several pairs run together; progress reaches the totals."""
        store = MemoryBackend()
        store.put("b", "a/x", os.urandom(1000))
        store.put("b", "b/y", os.urandom(2000))
        seen: list[TransferStats] = []
        reports = await download_many(
            [("memory://b/a", tmp_path / "a"), ("memory://b/b", tmp_path / "b")],
            backends={"memory": store},
            progress=seen.append,
        )
        assert [r.bytes for r in reports] == [1000, 2000]
        assert seen[-1].bytes_done == seen[-1].bytes_total == 3000
        assert seen[-1].files_done == 2

    async def test_verify_modes(self, tmp_path: Path) -> None:
        """size mode skips checksums; strict mode adds SHA-256."""
        store = MemoryBackend()
        store.put("b", "f", b"data", checksum="crc32")
        store.put_sha256("b", "f")
        for mode, label in (
            (VerifyMode.SIZE, "size"),
            (VerifyMode.STRICT, "crc32+sha256"),
        ):
            config = StorageConfig(transfer=TransferConfig(verify=mode))
            report = await download(
                "memory://b/f",
                tmp_path / mode.value,
                config=config,
                backends={"memory": store},
            )
            assert report.files[0].verification == label
