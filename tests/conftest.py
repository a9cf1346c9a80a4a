"""Shared fixtures: a clean environment, the asyncio backend, and the S3 server."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parent.parent
SERVERS = ROOT / "scripts" / "servers"
_STRIP_PREFIXES = ("AWS_", "S3_", "STORAGE_", "GOOGLE_", "AZURE_", "AZ_", "CA_BUNDLE_")
_STRIP = {"awsAnonymousCredential", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"}


def read_tree(root: Path) -> dict[str, bytes]:
    """Every file below `root` by relative path, except storage-init's manifest.

    Temp files are not excluded: one left behind fails the comparison.
    """
    from storage_init.manifest import MANIFEST_NAME

    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME
    }


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts without cloud, proxy or storage-init variables."""
    for name in list(os.environ):
        if name.startswith(_STRIP_PREFIXES) or name.upper() in _STRIP:
            monkeypatch.delenv(name)
    # No test may reach real cloud credentials or metadata services.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def unraisables(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What finalizers report during the test (an unclosed socket's
    ResourceWarning, say), collected instead of failing whichever test the
    garbage collector happens to run in; the test asserts on the list."""
    reports: list[str] = []

    def hook(args: sys.UnraisableHookArgs) -> None:
        reports.append(repr(args.exc_value))

    monkeypatch.setattr(sys, "unraisablehook", hook)
    return reports


@dataclass(frozen=True)
class S3Server:
    """A running SeaweedFS S3 gateway on 127.0.0.1."""

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str

    def env(self) -> dict[str, str]:
        """The variables a KServe pod would carry to reach this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }


@contextlib.contextmanager
def run_server(script: str, state: Path, **env: str) -> Iterator[dict[str, str]]:
    """Start a server with its ``scripts/servers`` script; yield what it exports."""
    full_env = {
        **os.environ,
        "STATE_DIR": str(state),
        "SERVERS_PY": sys.executable,
        **env,
    }
    path = str(SERVERS / script)
    subprocess.run([path, "start"], env=full_env, check=True, capture_output=True)
    try:
        yield dict(
            item.split("=", 1)
            for item in (state / "env").read_text().split()
            if "=" in item
        )
    finally:
        subprocess.run([path, "stop"], env=full_env, check=False, capture_output=True)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """SeaweedFS, started once per test session by the project's own script."""
    state = tmp_path_factory.mktemp("seaweedfs")
    weed = str(Path(sys.executable).parent / "weed")
    with run_server("s3_seaweedfs.sh", state, WEED=weed) as values:
        yield S3Server(
            endpoint=values["AWS_ENDPOINT_URL"],
            access_key=values["AWS_ACCESS_KEY_ID"],
            secret_key=values["AWS_SECRET_ACCESS_KEY"],
            bucket=values["S3_BUCKET"],
        )


@dataclass(frozen=True)
class HTTPServer:
    """nginx on 127.0.0.1: plain http, and https with a test CA."""

    base_url: str
    tls_url: str
    root: Path
    ca_bundle: Path

    def put(self, name: str, data: bytes) -> str:
        """Serve `data` at /`name`; return its http URL."""
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in [path.parent, *path.parent.parents]:
            if parent == self.root.parent:
                break
            parent.chmod(0o755)
        path.write_bytes(data)
        path.chmod(0o644)
        return f"{self.base_url}/{name}"


@pytest.fixture(scope="session")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HTTPServer]:
    """nginx, started once per test session by the project's own script."""
    import trustme

    state = Path(tempfile.mkdtemp(prefix="nginx-", dir="/tmp"))
    state.chmod(0o755)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(state / "server.pem"))
    ca.cert_pem.write_to_path(str(state / "ca.pem"))
    pem = str(state / "server.pem")
    try:
        with run_server("http_nginx.sh", state, TLS_CERT=pem, TLS_KEY=pem) as values:
            yield HTTPServer(
                base_url=values["HTTP_BASE_URL"],
                tls_url=values["HTTPS_BASE_URL"],
                root=Path(values["HTTP_ROOT"]),
                ca_bundle=state / "ca.pem",
            )
    finally:
        shutil.rmtree(state, ignore_errors=True)


@dataclass(frozen=True)
class GCSServer:
    """fake-gcs-server on 127.0.0.1."""

    host: str
    bucket: str

    def put(self, name: str, data: bytes) -> None:
        """Upload an object through the JSON API, as a client would."""
        import urllib.parse
        import urllib.request

        url = (
            f"{self.host}/upload/storage/v1/b/{self.bucket}/o?uploadType=media"
            f"&name={urllib.parse.quote(name, safe='')}"
        )
        request = urllib.request.Request(
            url,
            data=data,
            method="POST",
            headers={"Content-Type": "application/octet-stream"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GCSServer]:
    """fake-gcs-server, started once per test session by the project's own script."""
    state = tmp_path_factory.mktemp("fake-gcs")
    with run_server("gcs_fake.sh", state) as values:
        yield GCSServer(
            host=values["STORAGE_EMULATOR_HOST"], bucket=values["GCS_BUCKET"]
        )


@dataclass(frozen=True)
class AzureServer:
    """Azurite (Blob service) on 127.0.0.1, with its development account."""

    account: str
    key: str
    endpoint: str
    container: str = "models"

    @property
    def host(self) -> str:
        """``http://127.0.0.1:PORT``, what a proxy forwards to."""
        return self.endpoint.rsplit("/", 1)[0]

    def connection_string(
        self, endpoint: str | None = None, *, key: bool = True
    ) -> str:
        """A connection string for this account, optionally through another host."""
        blob = endpoint or self.endpoint
        secret = f"AccountKey={self.key};" if key else ""
        return f"AccountName={self.account};{secret}BlobEndpoint={blob};"

    def put(
        self,
        name: str,
        data: bytes,
        *,
        container: str | None = None,
        blocks: bool = False,
        metadata: dict[str, str] | None = None,
    ) -> None:
        """Upload as the SDK does: one Put Blob (Content-MD5 set) or blocks (none)."""
        from azure.storage.blob import BlobServiceClient

        with BlobServiceClient.from_connection_string(
            self.connection_string(),
            max_single_put_size=1024 if blocks else 64 << 20,
            max_block_size=4 << 20,
        ) as service:
            blob = service.get_blob_client(container or self.container, name)
            blob.upload_blob(data, overwrite=True, metadata=metadata)


@pytest.fixture(scope="session")
def azure_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureServer]:
    """Azurite, started once per test session by the project's own script."""
    from azure.storage.blob import BlobServiceClient

    state = tmp_path_factory.mktemp("azurite")
    azurite = ROOT / ".servers" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
    with run_server("azure_azurite.sh", state, AZURITE=str(azurite)) as values:
        server = AzureServer(
            account=values["AZURITE_ACCOUNT"],
            key=values["AZURITE_KEY"],
            endpoint=values["AZURITE_ENDPOINT"],
        )
        with BlobServiceClient.from_connection_string(
            server.connection_string()
        ) as service:
            service.create_container(server.container)
            service.create_container("public", public_access="container")
        yield server
