"""The S3 backend against a real SeaweedFS server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import anyio
import pytest

from storage_init import (
    AccessDeniedError,
    IntegrityError,
    ObjectNotFoundError,
    S3Options,
    StorageConfig,
    TransferConfig,
    download,
)
from storage_init._md5lanes import available as md5_lanes_available
from storage_init._md5lanes import md5_spans
from storage_init.backends._common import FIRST_PAGE_SIZE
from storage_init.backends.s3 import S3Backend
from storage_init.manifest import MANIFEST_NAME
from storage_init.models import MiB, TransferStats
from tests.backends.conformance import BackendConformance
from tests.conftest import S3Server, read_tree
from tests.faultproxy import Faults, fault_proxy
from tests.s3util import S3Seeder

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def seeder(s3_server: S3Server) -> S3Seeder:
    return S3Seeder(s3_server)


#: Which control plane sends HEADs and listings; every test runs with both.
_SDK = False


@pytest.fixture(autouse=True, params=["lean", "sdk"])
def control_plane(request: pytest.FixtureRequest, monkeypatch) -> None:
    """Run the test with our own S3 requests, then with aiobotocore's."""
    monkeypatch.setattr(sys.modules[__name__], "_SDK", request.param == "sdk")


def _options(server: S3Server, **kwargs: object) -> S3Options:
    base: dict[str, object] = {
        "endpoint_url": server.endpoint,
        "region": "us-east-1",
        "access_key_id": server.access_key,
        "secret_access_key": server.secret_key,
        "sdk": _SDK,
    }
    base.update(kwargs)
    return S3Options(**base)  # type: ignore[arg-type]


def _config(server: S3Server, **transfer: object) -> StorageConfig:
    knobs: dict[str, object] = {"part_size": 5 * MiB, "chunk_size": 256 * 1024}
    knobs.update(transfer)
    return StorageConfig(
        s3=_options(server),
        transfer=TransferConfig(**knobs),  # type: ignore[arg-type]
    )


def _proxied(server: S3Server, endpoint: str) -> StorageConfig:
    """Requests through the fault proxy at `endpoint`; 5 MiB parts."""
    return StorageConfig(
        s3=_options(server, endpoint_url=endpoint),
        transfer=TransferConfig(part_size=5 * MiB),
    )


class TestS3Conformance(BackendConformance):
    @pytest.fixture
    async def backend(self, s3_server: S3Server) -> AsyncIterator[S3Backend]:
        backend = S3Backend(_options(s3_server))
        try:
            yield backend
        finally:
            await backend.aclose()

    @pytest.fixture
    async def paged_backend(self, s3_server: S3Server) -> AsyncIterator[S3Backend]:
        backend = S3Backend(_options(s3_server, page_size=2))
        try:
            yield backend
        finally:
            await backend.aclose()

    @pytest.fixture
    async def denied_backend(self, s3_server: S3Server) -> AsyncIterator[S3Backend]:
        backend = S3Backend(_options(s3_server, secret_access_key="wrong"))
        try:
            yield backend
        finally:
            await backend.aclose()

    @pytest.fixture
    def bucket(self, s3_server: S3Server) -> str:
        return s3_server.bucket

    @pytest.fixture
    def seed(self, seeder: S3Seeder):
        return seeder.put


class TestS3Download:
    async def test_model_tree(self, s3_server, seeder, tmp_path, request):
        """A model prefix arrives whole: nested, empty, spaces, unicode, no siblings."""
        base = f"tree-{request.node.name[:20]}/"
        files = {
            "config.json": b'{"a": 1}',
            "empty.txt": b"",
            "sub dir/ü ñ.bin": os.urandom(3000),
            "deep/er/x.safetensors": os.urandom(7 * MiB + 3),
        }
        for name, data in files.items():
            seeder.put(base + "model/" + name, data)
        seeder.put(base + "model-v2/other.bin", b"sibling")
        seeder.put(base + "modelfile", b"sibling")
        report = await download(
            f"s3://{s3_server.bucket}/{base}model",
            tmp_path,
            config=_config(s3_server),
        )
        assert read_tree(tmp_path) == files
        by_path = {f.path: f for f in report.files}
        assert by_path["deep/er/x.safetensors"].verification == "md5-etag"
        assert all(f.verified for f in report.files)

    async def test_single_object(self, s3_server, seeder, tmp_path):
        """An existing key is downloaded as one file named after its basename."""
        seeder.put("single/weights.bin", b"w" * 100)
        await download(
            f"s3://{s3_server.bucket}/single/weights.bin",
            tmp_path,
            config=_config(s3_server),
        )
        assert read_tree(tmp_path) == {"weights.bin": b"w" * 100}

    async def test_pagination_over_1000_keys(self, s3_server, seeder, tmp_path):
        """More than 1000 keys: every page of the listing is followed."""
        with ThreadPoolExecutor(16) as pool:
            list(
                pool.map(
                    lambda i: seeder.put(f"many/{i:05}.txt", str(i).encode()),
                    range(1005),
                )
            )
        report = await download(
            f"s3://{s3_server.bucket}/many", tmp_path, config=_config(s3_server)
        )
        assert len(report.files) == 1005
        assert (tmp_path / "01004.txt").read_bytes() == b"1004"

    async def test_first_listing_page_is_small(self, s3_server, seeder, tmp_path):
        """The first page asks for FIRST_PAGE_SIZE keys, later ones the page size.

        Every object is still downloaded once, whatever page it came in.
        """
        if _SDK:
            pytest.skip("aiobotocore's paginator asks for one page size")
        count = FIRST_PAGE_SIZE + 5
        with ThreadPoolExecutor(16) as pool:
            list(
                pool.map(
                    lambda i: seeder.put(f"paged/{i:04}", str(i).encode()),
                    range(count),
                )
            )
        faults = Faults()
        with fault_proxy(s3_server.endpoint, faults) as proxy:
            report = await download(
                f"s3://{s3_server.bucket}/paged",
                tmp_path,
                config=_proxied(s3_server, proxy.endpoint),
            )
        assert sorted(f.path for f in report.files) == [f"{i:04}" for i in range(count)]
        listings = [r for r in faults.requests if "list-type=2" in r]
        assert len(listings) == 2
        assert f"max-keys={FIRST_PAGE_SIZE}&" in listings[0]
        assert "continuation-token" not in listings[0]
        assert "max-keys=1000&" in listings[1]
        assert "continuation-token" in listings[1]

    @pytest.mark.parametrize(
        ("kwargs", "label"),
        [
            pytest.param({"checksum": "crc64nvme"}, "crc64nvme", id="crc64nvme"),
            pytest.param(
                {"checksum": "crc32c", "part_size": 5 * MiB}, "crc32c", id="crc32c-full"
            ),
            pytest.param(
                {"checksum": "crc32c", "part_size": 5 * MiB, "composite": True},
                "crc32c-composite",
                id="crc32c-composite",
            ),
            pytest.param({"part_size": 5 * MiB}, "multipart-etag", id="multipart-etag"),
            pytest.param({}, "md5-etag", id="md5-etag"),
        ],
    )
    async def test_large_object_verified(
        self, s3_server, seeder, tmp_path, kwargs, label
    ):
        """Multi-range objects are verified with the best checksum the store has."""
        data = os.urandom(17 * MiB + 5)
        key = f"large/{label}.bin"
        seeder.put(key, data, **kwargs)
        report = await download(
            f"s3://{s3_server.bucket}/{key}", tmp_path, config=_config(s3_server)
        )
        (entry,) = report.files
        assert (entry.verification, entry.verified) == (label, True)
        got = hashlib.sha256((tmp_path / f"{label}.bin").read_bytes()).digest()
        assert got == hashlib.sha256(data).digest()

    @pytest.mark.parametrize(
        ("size", "kwargs"),
        [
            pytest.param(1 * MiB, {"checksum": "crc64nvme"}, id="small-crc"),
            pytest.param(12 * MiB, {"checksum": "crc64nvme"}, id="large-crc"),
            # Parts hashed in lanes from disk, 16 at a time.
            pytest.param(12 * MiB, {"part_size": 5 * MiB}, id="multipart-etag"),
        ],
    )
    async def test_corruption_detected(self, s3_server, seeder, tmp_path, size, kwargs):
        """A byte flipped on the wire fails the file; nothing sits at its path."""
        seeder.put(f"flip/{size}.bin", os.urandom(size), **kwargs)
        faults = Faults(flip_at=200_000)
        with fault_proxy(s3_server.endpoint, faults) as proxy:
            config = _proxied(s3_server, proxy.endpoint)
            with pytest.raises(IntegrityError, match="mismatch"):
                await download(
                    f"s3://{s3_server.bucket}/flip/{size}.bin", tmp_path, config=config
                )
        assert faults.injected >= 1
        assert os.listdir(tmp_path) == []

    async def test_small_md5_files_share_kernel_calls(
        self, s3_server, seeder, tmp_path, monkeypatch
    ):
        """Small files with MD5 ETags are hashed many to a call, and verified."""
        if not md5_lanes_available():
            pytest.skip("the MD5 kernel is not built")
        calls: list[int] = []

        def counting(spans, **kwargs):
            calls.append(len(spans))
            return md5_spans(spans, **kwargs)

        monkeypatch.setattr("storage_init.engine.md5_spans", counting)
        # Mixed sizes: lanes finish at different blocks (1 byte to 200 KiB).
        sources = {f"f{i:02d}.bin": os.urandom(1 + i * 5003) for i in range(40)}
        for name, data in sources.items():
            seeder.put(f"md5-small/{name}", data)
        report = await download(
            f"s3://{s3_server.bucket}/md5-small", tmp_path, config=_config(s3_server)
        )
        assert {f.verification for f in report.files} == {"md5-etag"}
        assert read_tree(tmp_path) == sources
        assert sum(calls) == len(sources)
        assert max(calls) > 1, "files share a kernel call"

    async def test_small_md5_file_corrupted(self, s3_server, seeder, tmp_path):
        """A byte flipped in one of many small MD5-ETag files fails the run.

        No temp file is left, and every file at its final path is whole.
        """
        sources = {f"f{i:02d}.bin": os.urandom(50_000) for i in range(24)}
        for name, data in sources.items():
            seeder.put(f"md5-flip/{name}", data)
        faults = Faults(flip_at=30_000, budget=1)
        with fault_proxy(s3_server.endpoint, faults) as proxy:
            config = _proxied(s3_server, proxy.endpoint)
            with pytest.raises(IntegrityError, match="MD5 ETag mismatch"):
                await download(
                    f"s3://{s3_server.bucket}/md5-flip", tmp_path, config=config
                )
        assert faults.injected == 1
        left = {p.name for p in tmp_path.iterdir()} - {MANIFEST_NAME}
        assert left <= set(sources), f"temp files left: {left - set(sources)}"
        assert len(left) < len(sources)
        for name in left:
            assert (tmp_path / name).read_bytes() == sources[name]

    async def test_cancellation_leaves_nothing(self, s3_server, seeder, tmp_path):
        """Cancelled after its first bytes land, a download leaves no file at all."""
        # Both larger than a part: fetched by ranges, neither complete at the cancel.
        seeder.put("cancel/m/a.bin", os.urandom(24 * MiB), checksum="crc32c")
        seeder.put("cancel/m/b.bin", os.urandom(7 * MiB))
        with anyio.CancelScope() as scope:

            def cancel_on_first_bytes(stats: TransferStats) -> None:
                if stats.bytes_done:
                    scope.cancel()

            await download(
                f"s3://{s3_server.bucket}/cancel/m",
                tmp_path,
                config=_config(s3_server),
                progress=cancel_on_first_bytes,
            )
        assert scope.cancelled_caught
        assert list(tmp_path.iterdir()) == []

    # With MD5 ETags, files wait for their MD5 after they are written
    # (`Engine._hash_unhashed`): the cancellation finds some waiting.
    @pytest.mark.parametrize("checksum", ["crc64nvme", None])
    async def test_cancelled_small_files_leave_only_whole_ones(
        self, s3_server, seeder, tmp_path, checksum
    ):
        """Small files cancelled mid-run: finished ones stay whole, no temp is left."""
        sources = {f"f{i:03d}.bin": os.urandom(64 * 1024) for i in range(300)}
        prefix = f"cancel-small-{checksum}"
        for name, data in sources.items():
            seeder.put(f"{prefix}/{name}", data, checksum=checksum)
        with anyio.CancelScope() as scope:

            def cancel_on_first_file(stats: TransferStats) -> None:
                if stats.files_done:
                    scope.cancel()

            await download(
                f"s3://{s3_server.bucket}/{prefix}",
                tmp_path,
                config=_config(s3_server),
                progress=cancel_on_first_file,
            )
        assert scope.cancelled_caught
        left = {p.name for p in tmp_path.iterdir()} - {MANIFEST_NAME}
        assert left, "the first finished file is kept"
        assert len(left) < len(sources), "the cancellation stopped the rest"
        assert left <= set(sources), f"temp files left: {left - set(sources)}"
        for name in left:
            assert (tmp_path / name).read_bytes() == sources[name]

    async def test_not_found(self, s3_server, tmp_path):
        """A missing prefix is ObjectNotFoundError; the destination stays empty."""
        with pytest.raises(ObjectNotFoundError):
            await download(
                f"s3://{s3_server.bucket}/no/such/model",
                tmp_path,
                config=_config(s3_server),
            )
        assert os.listdir(tmp_path) == []

    async def test_missing_bucket(self, s3_server, tmp_path):
        """A missing bucket is ObjectNotFoundError."""
        with pytest.raises(ObjectNotFoundError):
            await download(
                "s3://no-such-bucket-x/m", tmp_path, config=_config(s3_server)
            )

    async def test_bad_credentials(self, s3_server, seeder, tmp_path):
        """Wrong keys are AccessDeniedError, and the secret is not in the message."""
        seeder.put("denied/x", b"x")
        config = StorageConfig(
            s3=_options(s3_server, secret_access_key="wrong-secret-value")
        )
        with pytest.raises(AccessDeniedError) as info:
            await download(f"s3://{s3_server.bucket}/denied/x", tmp_path, config=config)
        assert "wrong-secret-value" not in str(info.value)


@pytest.mark.parametrize(
    ("extra_env", "botocore_loaded"),
    [
        pytest.param({}, False, id="kserve-env-lean"),
        pytest.param({"STORAGE_INIT_S3_SDK": "1"}, True, id="forced-sdk"),
        pytest.param({"AWS_PROFILE": "default"}, True, id="profile-needs-sdk"),
    ],
)
def test_botocore_only_when_needed(
    s3_server, seeder, tmp_path, extra_env, botocore_loaded, control_plane
) -> None:
    """With KServe's variables (keys, endpoint, region) botocore is never imported.

    Importing it costs about 240 ms of start-up; what only the SDK resolves
    (profiles, FIPS, forced) still goes through it, and the download is the same.
    """
    import subprocess

    seeder.put("lean/a.json", b"{}")
    program = (
        "import sys; from storage_init.cli import main; "
        "code = main(sys.argv[1:]); "
        "print('botocore' in sys.modules); sys.exit(code)"
    )
    env = {
        **os.environ,
        **s3_server.env(),
        **extra_env,
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
    }
    (tmp_path / "credentials").write_text("[default]\n")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            program,
            "--quiet",
            f"s3://{s3_server.bucket}/lean/a.json",
            str(tmp_path / "out"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(botocore_loaded)
    assert (tmp_path / "out" / "a.json").read_bytes() == b"{}"
