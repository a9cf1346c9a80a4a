"""The GCS backend against fake-gcs-server on 127.0.0.1."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from storage_init import GCSOptions, StorageConfig, TransferConfig, download
from storage_init.backends._common import FIRST_PAGE_SIZE
from storage_init.backends.gcs import GCSBackend
from storage_init.models import MiB
from tests.backends.conformance import BackendConformance
from tests.conftest import GCSServer, read_tree

pytestmark = pytest.mark.integration


class TestGCSConformance(BackendConformance):
    has_parts = False

    @pytest.fixture
    async def backend(self, gcs_server: GCSServer) -> AsyncIterator[GCSBackend]:
        backend = GCSBackend(GCSOptions(emulator_host=gcs_server.host))
        try:
            yield backend
        finally:
            await backend.aclose()

    @pytest.fixture
    async def paged_backend(self, gcs_server: GCSServer) -> AsyncIterator[GCSBackend]:
        backend = GCSBackend(GCSOptions(emulator_host=gcs_server.host, page_size=2))
        try:
            yield backend
        finally:
            await backend.aclose()

    @pytest.fixture
    def denied_backend(self) -> None:
        pytest.skip("fake-gcs-server accepts any credentials")

    @pytest.fixture
    def bucket(self, gcs_server: GCSServer) -> str:
        return gcs_server.bucket

    @pytest.fixture
    def seed(self, gcs_server: GCSServer):
        def put(key: str, data: bytes, **_: object) -> None:
            gcs_server.put(key, data)

        return put


def _config(server: GCSServer) -> StorageConfig:
    return StorageConfig(
        gcs=GCSOptions(emulator_host=server.host),
        transfer=TransferConfig(part_size=5 * MiB),
    )


async def test_model_tree_verified_by_crc32c(gcs_server: GCSServer, tmp_path) -> None:
    """A prefix arrives whole, every file checked against GCS's CRC32C."""
    files = {
        "config.json": b"{}",
        "empty": b"",
        "sub dir/ü.bin": os.urandom(3000),
        "w/model.safetensors": os.urandom(13 * MiB + 7),
    }
    for name, data in files.items():
        gcs_server.put(f"gmodel/m/{name}", data)
    gcs_server.put("gmodel/m-v2/other", b"sibling")
    report = await download(
        f"gs://{gcs_server.bucket}/gmodel/m", tmp_path, config=_config(gcs_server)
    )
    assert read_tree(tmp_path) == files
    assert {f.verification for f in report.files} == {"crc32c"}
    assert all(f.verified for f in report.files)


async def test_single_object_and_missing(gcs_server: GCSServer, tmp_path) -> None:
    """An existing name is one file; a missing one is ObjectNotFoundError."""
    from storage_init import ObjectNotFoundError

    gcs_server.put("gsingle/w.bin", b"w" * 10)
    await download(
        f"gs://{gcs_server.bucket}/gsingle/w.bin", tmp_path, config=_config(gcs_server)
    )
    assert (tmp_path / "w.bin").read_bytes() == b"w" * 10
    with pytest.raises(ObjectNotFoundError):
        await download(
            f"gs://{gcs_server.bucket}/gsingle/nothing",
            tmp_path / "x",
            config=_config(gcs_server),
        )


async def test_pagination(gcs_server: GCSServer, tmp_path) -> None:
    """More than one page of listing (1000 per page) is followed."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: gcs_server.put(f"gmany/{i:05}", b"x"), range(1003)))
    report = await download(
        f"gs://{gcs_server.bucket}/gmany", tmp_path, config=_config(gcs_server)
    )
    assert len(report.files) == 1003


async def test_first_listing_page_is_small(gcs_server: GCSServer, tmp_path) -> None:
    """The first page asks for FIRST_PAGE_SIZE objects, later ones the page size."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.faultproxy import Faults, fault_proxy

    count = FIRST_PAGE_SIZE + 3
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: gcs_server.put(f"gpaged/{i:04}", b"x"), range(count)))
    faults = Faults()
    with fault_proxy(gcs_server.host, faults) as proxy:
        config = StorageConfig(gcs=GCSOptions(emulator_host=proxy.endpoint))
        report = await download(
            f"gs://{gcs_server.bucket}/gpaged", tmp_path, config=config
        )
    assert sorted(f.path for f in report.files) == [f"{i:04}" for i in range(count)]
    listings = [r for r in faults.requests if "/o?" in r and "prefix=" in r]
    assert len(listings) == 2
    assert f"maxResults={FIRST_PAGE_SIZE}" in listings[0]
    assert "pageToken" not in listings[0]
    assert "maxResults=1000" in listings[1]
    assert "pageToken" in listings[1]


async def test_resets_are_resumed(gcs_server: GCSServer, tmp_path) -> None:
    """A media body reset mid-range resumes where it stopped (fault proxy)."""
    from tests.faultproxy import Faults, fault_proxy

    data = os.urandom(12 * MiB)
    gcs_server.put("gfault/f.bin", data)
    faults = Faults(reset_at=4_000_000, budget=2)
    with fault_proxy(gcs_server.host, faults) as proxy:
        config = StorageConfig(
            gcs=GCSOptions(emulator_host=proxy.endpoint),
            transfer=TransferConfig(part_size=5 * MiB),
        )
        report = await download(
            f"gs://{gcs_server.bucket}/gfault/f.bin", tmp_path, config=config
        )
    assert faults.injected == 2
    assert report.files[0].verification == "crc32c"
    assert (tmp_path / "f.bin").read_bytes() == data


def test_cli_with_kserve_environment(gcs_server: GCSServer, tmp_path) -> None:
    """The CLI reads STORAGE_EMULATOR_HOST, as KServe's initializer does."""
    import subprocess
    import sys

    gcs_server.put("gcli/m/a.json", b"{}")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "storage_init",
            f"gs://{gcs_server.bucket}/gcli/m",
            str(tmp_path),
        ],
        env={**os.environ, "STORAGE_EMULATOR_HOST": gcs_server.host},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "a.json").read_bytes() == b"{}"
