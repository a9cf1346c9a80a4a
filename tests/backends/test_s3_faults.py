"""The fault matrix: a real SeaweedFS behind the fault-injecting proxy.

Every case asserts the outcome: the download completes byte-identical and verified
(after retries that resume where the body broke), or fails cleanly with the
documented error and nothing left on disk.
"""

from __future__ import annotations

import copy
import hashlib
import os
import time
from dataclasses import replace

import anyio
import pytest

from storage_init import (
    IntegrityError,
    RetriesExhaustedError,
    RetryConfig,
    S3Options,
    StorageConfig,
    TransferConfig,
    download,
)
from storage_init import _recvfile as recvfile
from storage_init.models import MiB
from tests.conftest import S3Server
from tests.faultproxy import Faults, fault_proxy
from tests.s3util import S3Seeder

pytestmark = pytest.mark.integration

SIZE = 24 * MiB + 12345
PART = 5 * MiB


@pytest.fixture(params=["native", "python"])
def receive_loop(request: pytest.FixtureRequest, monkeypatch) -> str:
    """Bodies received by the native loop (`_recvfile`), or as without the library."""
    if request.param == "python":
        monkeypatch.setattr(recvfile, "available", lambda: False)
    elif not recvfile.available():
        pytest.skip("the native library is not built")
    return str(request.param)


@pytest.fixture(scope="module")
def model(s3_server: S3Server) -> tuple[str, bytes]:
    """A 24 MiB object with a full-object CRC64NVME, fetched in five ranges."""
    data = os.urandom(SIZE)
    S3Seeder(s3_server).put("faults/model.bin", data, checksum="crc64nvme")
    return f"s3://{s3_server.bucket}/faults/model.bin", data


def _config(endpoint: str, server: S3Server, **retry: float) -> StorageConfig:
    return StorageConfig(
        s3=S3Options(
            endpoint_url=endpoint,
            region="us-east-1",
            access_key_id=server.access_key,
            secret_access_key=server.secret_key,
            read_timeout=5,
            connect_timeout=5,
        ),
        transfer=TransferConfig(
            part_size=PART,
            stall_timeout=1.0,
            retry=RetryConfig(
                max_attempts=int(retry.get("attempts", 6)),
                initial_backoff=0.01,
                max_backoff=0.05,
            ),
        ),
    )


# Faults strike 4 MB into a connection (its first 5 MiB range): aiohttp drops
# what it buffered (up to ~2.25 MiB) when a connection breaks, so striking later
# than that guarantees some bytes of the range were written and a resume shows.
@pytest.mark.parametrize(
    "faults",
    [
        pytest.param(Faults(reset_at=4_000_000, budget=3), id="reset-mid-body"),
        pytest.param(Faults(truncate_at=4_000_000, budget=3), id="truncated-body"),
        pytest.param(Faults(stall_at=4_000_000, budget=2), id="stalled-body"),
        pytest.param(Faults(slowdown=2), id="503-slowdown"),
        pytest.param(Faults(refuse=2), id="connection-refused"),
    ],
)
async def test_recovers(
    s3_server, model, tmp_path, faults: Faults, receive_loop: str
) -> None:
    """Each fault is retried; the file arrives intact and verified."""
    faults = copy.deepcopy(faults)  # the parameter's budget is for this test only
    uri, data = model
    with fault_proxy(s3_server.endpoint, faults) as proxy:
        report = await download(
            uri, tmp_path, config=_config(proxy.endpoint, s3_server)
        )
    assert faults.injected >= 1
    (entry,) = report.files
    assert (entry.verification, entry.verified) == ("crc64nvme", True)
    got = (tmp_path / "model.bin").read_bytes()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    if faults.reset_at or faults.truncate_at or faults.stall_at:
        # A broken body resumes where it stopped, not at its range's start.
        assert any(start % PART for start, _ in faults.ranges), faults.ranges


async def test_flipped_byte_fails_the_file(
    s3_server, model, tmp_path, receive_loop: str
) -> None:
    """A corrupted body fails verification; no file reaches its final path."""
    uri, _ = model
    faults = Faults(flip_at=3_000_000, budget=1)
    with (
        fault_proxy(s3_server.endpoint, faults) as proxy,
        pytest.raises(IntegrityError, match="crc64nvme mismatch"),
    ):
        await download(uri, tmp_path, config=_config(proxy.endpoint, s3_server))
    assert faults.injected == 1
    assert os.listdir(tmp_path) == []


async def test_persistent_resets_give_up(s3_server, model, tmp_path) -> None:
    """A connection that always breaks exhausts the retries; nothing is left."""
    uri, _ = model
    faults = Faults(reset_at=600_000)
    with (
        fault_proxy(s3_server.endpoint, faults) as proxy,
        pytest.raises(RetriesExhaustedError) as info,
    ):
        await download(
            uri, tmp_path, config=_config(proxy.endpoint, s3_server, attempts=3)
        )
    assert info.value.attempts == 3
    assert "model.bin" in str(info.value)
    assert os.listdir(tmp_path) == []


async def test_cancelled_while_stalled_returns_at_once(
    s3_server, model, tmp_path, receive_loop: str
) -> None:
    """A download cancelled while its bodies stall returns at once, leaving nothing.

    Bodies are read by worker threads; cancelling breaks their connections off
    rather than waiting out the 60 s stall timeout.
    """
    uri, _ = model
    faults = Faults(stall_at=1_000_000)
    with fault_proxy(s3_server.endpoint, faults) as proxy:
        base = _config(proxy.endpoint, s3_server)
        slow = StorageConfig(
            s3=base.s3, transfer=TransferConfig(part_size=PART, stall_timeout=60)
        )
        started = time.monotonic()
        with anyio.move_on_after(1.5) as scope:
            await download(uri, tmp_path, config=slow)
    assert scope.cancelled_caught
    assert faults.injected >= 1
    assert time.monotonic() - started < 5
    assert os.listdir(tmp_path) == []


@pytest.fixture(scope="module")
def small_files(s3_server: S3Server) -> tuple[str, dict[str, bytes]]:
    """40 objects of 256 KiB with CRC64NVMEs: each one GET in the small-file lane."""
    seeder = S3Seeder(s3_server)
    files = {f"f{i:02d}.bin": os.urandom(256 * 1024) for i in range(40)}
    for name, data in files.items():
        seeder.put(f"faults-small/{name}", data, checksum="crc64nvme")
    return f"s3://{s3_server.bucket}/faults-small", files


# 100 kB into a connection: inside the first small body it carries.
@pytest.mark.parametrize(
    "faults",
    [
        pytest.param(Faults(reset_at=100_000, budget=3), id="reset-mid-body"),
        pytest.param(Faults(truncate_at=100_000, budget=3), id="truncated-body"),
        pytest.param(Faults(stall_at=100_000, budget=2), id="stalled-body"),
    ],
)
async def test_small_files_recover(
    s3_server, small_files, tmp_path, faults: Faults, caplog, receive_loop: str
) -> None:
    """A small file whose GET fails in the lane is retried; all arrive verified."""
    faults = copy.deepcopy(faults)  # the parameter's budget is for this test only
    uri, files = small_files
    with fault_proxy(s3_server.endpoint, faults) as proxy:
        report = await download(
            uri, tmp_path, config=_config(proxy.endpoint, s3_server)
        )
    assert faults.injected >= 1
    assert "retrying" in caplog.text
    assert {
        f.path: (f.verification, f.verified) for f in report.files
    } == dict.fromkeys(files, ("crc64nvme", True))
    for name, data in files.items():
        assert (tmp_path / name).read_bytes() == data


@pytest.fixture(scope="module")
def small_md5_files(s3_server: S3Server) -> tuple[str, dict[str, bytes]]:
    """20 objects of 100 KiB with only MD5 ETags (read back after a native GET)."""
    seeder = S3Seeder(s3_server)
    files = {f"m{i:02d}.bin": os.urandom(100 * 1024) for i in range(20)}
    for name, data in files.items():
        seeder.put(f"faults-small-md5/{name}", data)
    return f"s3://{s3_server.bucket}/faults-small-md5", files


@pytest.mark.parametrize("stored", ["crc64nvme", "md5-etag"])
async def test_small_file_flipped_byte_fails(
    s3_server, small_files, small_md5_files, tmp_path, stored: str, receive_loop: str
) -> None:
    """A corrupted small body fails the run as IntegrityError, whether its CRC
    was computed as it arrived or its MD5 read back; no partial file."""
    uri, files = small_files if stored == "crc64nvme" else small_md5_files
    faults = Faults(flip_at=50_000, budget=1)
    with (
        fault_proxy(s3_server.endpoint, faults) as proxy,
        pytest.raises(IntegrityError),
    ):
        await download(uri, tmp_path, config=_config(proxy.endpoint, s3_server))
    assert faults.injected == 1
    for path in tmp_path.iterdir():
        assert path.name in files or path.name == ".storage-init-manifest.jsonl"
        if path.name in files:
            assert path.read_bytes() == files[path.name]


async def test_small_files_go_wider_than_ranges(s3_server, tmp_path) -> None:
    """Small files' GETs wait on round trips: `small_file_concurrency` of them go
    at once, beyond `max_concurrency` (the ranges' limit)."""
    seeder = S3Seeder(s3_server)
    files = {f"wide/f{i:02d}": os.urandom(1000 + i) for i in range(24)}
    for key, data in files.items():
        seeder.put(key, data, checksum="crc64nvme")
    faults = Faults(delay=0.2)
    with fault_proxy(s3_server.endpoint, faults) as proxy:
        config = _config(proxy.endpoint, s3_server)
        transfer = replace(
            config.transfer, max_concurrency=2, small_file_concurrency=12
        )
        await download(
            f"s3://{s3_server.bucket}/wide/",
            tmp_path,
            config=replace(config, transfer=transfer),
        )
    for key, data in files.items():
        assert (tmp_path / key.removeprefix("wide/")).read_bytes() == data
    # Each GET holds its connection for a round trip: 12 at once need 12 (2, with
    # the ranges' limit, as before); the listing has one more.
    assert 6 < faults.connections <= 12 + 2 + 1, faults.connections
