"""The run-wide part hasher: when to call the kernel, and calls shared by files."""

from __future__ import annotations

import hashlib
import os
import threading
from typing import TYPE_CHECKING

import anyio
import pytest

from storage_init._md5lanes import md5_spans
from storage_init._parthash import PartHasher, choose_batch
from storage_init._plan import plan_ranges
from storage_init.backends.memory import MemoryBackend
from storage_init.errors import IntegrityError
from storage_init.models import VerifyMode
from storage_init.verify import FileDigest, choose_check

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("parts", "unlanded", "requested", "taken"),
    [
        pytest.param([1] * 17, 0, True, 16, id="seventeenth-waits"),
        pytest.param([1] * 32, 5, False, 16, id="one-call-at-a-time"),
        pytest.param([5, 5, 5, 5], 0, True, 3, id="whole-ranges-within-16"),
        pytest.param([20], 9, False, 1, id="one-range-of-more-than-16"),
        pytest.param([4] * 8, 0, True, 4, id="whole-ranges-filling-16"),
        pytest.param([1] * 5, 0, True, 5, id="nothing-left-to-land"),
        pytest.param(
            [1] * 5, 11, True, 0, id="fits-the-last-call-with-those-in-flight"
        ),
        pytest.param([1] * 5, 12, True, 5, id="would-not-fit-the-last-call"),
        pytest.param([1] * 5, 12, False, 0, id="more-to-be-requested"),
        pytest.param([], 3, True, 0, id="nothing-landed"),
    ],
)
def test_choose_batch(
    parts: list[int], unlanded: int, requested: bool, taken: int
) -> None:
    """A call of 16 parts when there are 16; else everything that landed
    once nothing is left to land, or once what is in flight cannot share the
    last call with it; else wait."""
    ready = list(enumerate(parts))
    chosen = choose_batch(ready, unlanded=unlanded, all_requested=requested)
    assert chosen == list(range(taken))


class _Written:
    """A file uploaded in 1000-byte parts, one part per range, on disk."""

    def __init__(self, path: Path, parts: int, *, short_by: int = 0) -> None:
        self.data = os.urandom(1000 * parts)
        info = MemoryBackend().put("b", path.name, self.data, part_size=1000)
        ranges = plan_ranges(len(self.data), 1000, [1000] * parts)
        self.digest = FileDigest(
            choose_check(info, VerifyMode.AUTO), ranges, lanes=True
        )
        path.write_bytes(self.data[: len(self.data) - short_by])
        self.fd = os.open(path, os.O_RDONLY)
        self.landed = [anyio.Event() for _ in ranges]
        self.requested = anyio.Event()

    def land(self) -> None:
        for event in self.landed:
            event.set()
        self.requested.set()


async def _hash_files(
    files: list[_Written], hasher: PartHasher
) -> dict[int, BaseException]:
    """Register `files` (nothing landed), land them all at once, hash them.

    Returns the errors by index in `files`.
    """
    errors: dict[int, BaseException] = {}

    async def one(i: int, written: _Written) -> None:
        try:
            await hasher.hash_file(
                written.fd, written.digest, written.landed, written.requested
            )
        except (IntegrityError, OSError) as exc:
            errors[i] = exc

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(hasher.run)
            for i, written in enumerate(files):
                tg.start_soon(one, i, written)
            await anyio.wait_all_tasks_blocked()
            for written in files:
                written.land()
            hasher.wake()
            hasher.close()
    return errors


async def test_files_share_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two files of 8 parts each: one call of 16 parts, and both verify."""
    calls: list[set[int]] = []

    def spans_hashed(spans: list[tuple[int, int, int]]) -> list[bytes]:
        calls.append({fd for fd, _, _ in spans})
        return md5_spans(spans)

    monkeypatch.setattr("storage_init._parthash.md5_spans", spans_hashed)
    files = [_Written(tmp_path / "a", 8), _Written(tmp_path / "b", 8)]
    try:
        assert await _hash_files(files, PartHasher(anyio.CapacityLimiter(2))) == {}
        assert calls == [{files[0].fd, files[1].fd}]
        for written in files:
            written.digest.verify(size=len(written.data), written=len(written.data))
    finally:
        for written in files:
            os.close(written.fd)


async def test_calls_run_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """32 parts make two calls, in two threads at once (the limiter has room):
    each waits for the other to start."""
    started = threading.Barrier(2, timeout=5)

    def spans_hashed(spans: list[tuple[int, int, int]]) -> list[bytes]:
        assert len(spans) == 16
        started.wait()
        return md5_spans(spans)

    monkeypatch.setattr("storage_init._parthash.md5_spans", spans_hashed)
    files = [_Written(tmp_path / "a", 16), _Written(tmp_path / "b", 16)]
    try:
        assert await _hash_files(files, PartHasher(anyio.CapacityLimiter(2))) == {}
        for written in files:
            written.digest.verify(size=len(written.data), written=len(written.data))
    finally:
        for written in files:
            os.close(written.fd)


async def test_an_error_reaches_its_own_file(tmp_path: Path) -> None:
    """A file shorter than its parts fails alone: the file it shared a call with
    is hashed again on its own, and verifies."""
    files = [_Written(tmp_path / "a", 8), _Written(tmp_path / "b", 8, short_by=10)]
    try:
        errors = await _hash_files(files, PartHasher(anyio.CapacityLimiter(2)))
        assert list(errors) == [1]
        assert isinstance(errors[1], IntegrityError)
        good = files[0]
        good.digest.verify(size=len(good.data), written=len(good.data))
    finally:
        for written in files:
            os.close(written.fd)


def test_adopted_md5s_must_match_the_segments(tmp_path: Path) -> None:
    written = _Written(tmp_path / "a", 2)
    try:
        with pytest.raises(ValueError, match="one MD5 per segment"):
            written.digest.adopt_part_md5s(0, [])
        part = hashlib.md5(written.data[:1000], usedforsecurity=False).digest()
        written.digest.adopt_part_md5s(0, [part])
    finally:
        os.close(written.fd)
