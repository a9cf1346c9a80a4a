"""The http(s) backend against nginx on 127.0.0.1 (and Python's http.server)."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage_init import (
    AccessDeniedError,
    HTTPOptions,
    IntegrityError,
    ObjectChangedError,
    ObjectNotFoundError,
    StorageConfig,
    TransferConfig,
    TransferError,
    download,
)
from storage_init.backends.http import PlainHTTPBackend
from storage_init.models import MiB
from storage_init.uri import parse_uri
from tests.conftest import HTTPServer
from tests.faultproxy import Faults, fault_proxy

pytestmark = pytest.mark.integration


def _config(**http: object) -> StorageConfig:
    return StorageConfig(
        transfer=TransferConfig(part_size=5 * MiB),
        http=HTTPOptions(**http),  # type: ignore[arg-type]
    )


async def test_ranged_download_with_sha256(http_server: HTTPServer, tmp_path) -> None:
    """A large file arrives in parallel ranges; --sha256 verifies it."""
    data = os.urandom(17 * MiB + 3)
    url = http_server.put("m/weights.bin", data)
    digest = hashlib.sha256(data).hexdigest()
    report = await download(url, tmp_path, config=_config(sha256=digest))
    (entry,) = report.files
    assert (entry.path, entry.verification, entry.verified) == (
        "weights.bin",
        "sha256",
        True,
    )
    assert (tmp_path / "weights.bin").read_bytes() == data


async def test_without_digest_checks_the_size(http_server, tmp_path) -> None:
    """nginx states no digest: the size is checked, and the report says so."""
    url = http_server.put("plain.bin", b"x" * 1000)
    report = await download(url, tmp_path)
    assert (report.files[0].verification, report.files[0].verified) == ("size", False)


async def test_wrong_sha256_fails(http_server, tmp_path) -> None:
    """A --sha256 that does not match fails the file; nothing is left."""
    url = http_server.put("bad.bin", os.urandom(7 * MiB))
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        await download(url, tmp_path, config=_config(sha256="0" * 64))
    assert os.listdir(tmp_path) == []


async def test_redirects_are_followed(http_server, tmp_path) -> None:
    """A redirect (presigned URLs, CDNs) leads to the file."""
    http_server.put("target/r.bin", b"redirected")
    await download(f"{http_server.base_url}/redirect/target/r.bin", tmp_path)
    assert (tmp_path / "r.bin").read_bytes() == b"redirected"


async def test_not_found_and_denied(http_server, tmp_path) -> None:
    """404 is ObjectNotFoundError, 403 AccessDeniedError."""
    with pytest.raises(ObjectNotFoundError):
        await download(f"{http_server.base_url}/missing.bin", tmp_path)
    http_server.put("private/p.bin", b"p")
    with pytest.raises(AccessDeniedError):
        await download(f"{http_server.base_url}/private/p.bin", tmp_path)


async def test_host_headers(http_server, tmp_path) -> None:
    """KServe's <host>-headers reach the server (here, a bearer token)."""
    url = http_server.put("private/q.bin", b"secret model")
    headers = {"127.0.0.1": {"Authorization": "Bearer test-token"}}
    await download(url, tmp_path, config=_config(headers=headers))
    assert (tmp_path / "q.bin").read_bytes() == b"secret model"


async def test_changed_file_is_detected(http_server, tmp_path) -> None:
    """A file replaced after the HEAD answers If-Range with 200: ObjectChanged."""
    http_server.put("c.bin", os.urandom(1000))
    uri = parse_uri(f"{http_server.base_url}/c.bin")
    backend = PlainHTTPBackend(HTTPOptions())
    try:
        info = await backend.stat(uri.bucket, uri.key)
        assert info is not None
        time.sleep(1.1)  # nginx's ETag has one-second mtime resolution
        http_server.put("c.bin", os.urandom(1000))
        with pytest.raises(ObjectChangedError):
            async with backend.open_range(uri.bucket, info, 0, 500, whole=False):
                pass
    finally:
        await backend.aclose()


async def test_tls_with_ca_bundle(http_server, tmp_path) -> None:
    """https with the CA passed explicitly; without it the error is permanent."""
    http_server.put("tls.bin", b"over tls")
    url = f"{http_server.tls_url}/tls.bin"
    await download(url, tmp_path, config=_config(ca_bundle=str(http_server.ca_bundle)))
    assert (tmp_path / "tls.bin").read_bytes() == b"over tls"
    with pytest.raises(TransferError, match="certificate") as info:
        await download(url, tmp_path / "no-ca")
    assert not info.value.retryable


async def test_resets_are_resumed(http_server, tmp_path) -> None:
    """A body reset mid-range resumes where it stopped (through the fault proxy)."""
    data = os.urandom(12 * MiB)
    http_server.put("f.bin", data)
    faults = Faults(reset_at=4_000_000, budget=2)
    with fault_proxy(http_server.base_url, faults) as proxy:
        await download(f"{proxy.endpoint}/f.bin", tmp_path, config=_config())
    assert faults.injected == 2
    assert any(start % (5 * MiB) for start, _ in faults.ranges)
    assert (tmp_path / "f.bin").read_bytes() == data


@pytest.fixture
def no_range_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Python's http.server: HTTP/1.0, no Range support, no ETag."""
    root = tmp_path / "www"
    root.mkdir()
    sock_port = subprocess.run(
        [
            sys.executable,
            "-c",
            "import socket; s=socket.socket(); "
            "s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "http.server",
            sock_port,
            "--bind",
            "127.0.0.1",
            "--directory",
            str(root),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                import urllib.request

                with urllib.request.urlopen(
                    f"http://127.0.0.1:{sock_port}/", timeout=1
                ):
                    break
            except OSError:
                time.sleep(0.05)
        yield f"http://127.0.0.1:{sock_port}", root
    finally:
        proc.terminate()
        proc.wait(10)


async def test_server_without_ranges(no_range_server, tmp_path) -> None:
    """Without Range support the file comes in one streamed GET, intact."""
    base, root = no_range_server
    data = os.urandom(11 * MiB)
    (root / "whole.bin").write_bytes(data)
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    del md5  # http.server sends no Content-MD5: the size is what can be checked
    report = await download(f"{base}/whole.bin", tmp_path / "d", config=_config())
    assert report.files[0].size == len(data)
    assert (tmp_path / "d" / "whole.bin").read_bytes() == data


def test_cli_never_prints_header_values_or_query_strings(http_server, tmp_path):
    """Tokens in <host>-headers and signed query strings stay out of all output."""
    env = {
        **os.environ,
        "127.0.0.1-headers": '{"Authorization": "Bearer SEKRET-TOKEN-123"}',
    }
    url = f"{http_server.base_url}/nope.bin?X-Amz-Signature=SIGSECRET456"
    result = subprocess.run(
        [sys.executable, "-m", "storage_init", "--debug", url, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3
    output = result.stdout + result.stderr
    assert "nope.bin" in output
    assert "SEKRET-TOKEN-123" not in output
    assert "SIGSECRET456" not in output
