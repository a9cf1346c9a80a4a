"""The Azure Blob backend against Azurite on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Self

import pytest

from storage_init import (
    AccessDeniedError,
    AzureOptions,
    IntegrityError,
    StorageConfig,
    TransferConfig,
    download,
)
from storage_init.backends._azauth import AzureAccess
from storage_init.backends.azure import AzureBackend
from storage_init.models import MiB
from tests.backends.conformance import BackendConformance
from tests.conftest import AzureServer, read_tree

pytestmark = pytest.mark.integration


def _backend(server: AzureServer, **options: object) -> AzureBackend:
    access = AzureAccess(server.endpoint, server.account, "key", server.key)
    return AzureBackend(access, AzureOptions(**options))  # type: ignore[arg-type]


class TestAzureConformance(BackendConformance):
    has_parts = False
    stored_checksum = "md5"

    @pytest.fixture
    async def backend(self, azure_server: AzureServer) -> AsyncIterator[AzureBackend]:
        backend = _backend(azure_server)
        try:
            yield backend
        finally:
            await backend.aclose()

    @pytest.fixture
    async def paged_backend(
        self, azure_server: AzureServer
    ) -> AsyncIterator[AzureBackend]:
        backend = _backend(azure_server, page_size=2)
        try:
            yield backend
        finally:
            await backend.aclose()

    @pytest.fixture
    async def denied_backend(
        self, azure_server: AzureServer
    ) -> AsyncIterator[AzureBackend]:
        wrong = "A" * 86 + "=="
        access = AzureAccess(azure_server.endpoint, azure_server.account, "key", wrong)
        backend = AzureBackend(access, AzureOptions())
        try:
            yield backend
        finally:
            await backend.aclose()

    @pytest.fixture
    def bucket(self, azure_server: AzureServer) -> str:
        return azure_server.container

    @pytest.fixture
    def seed(self, azure_server: AzureServer):
        def put(key: str, data: bytes, **_: object) -> None:
            azure_server.put(key, data)

        return put


def _config(server: AzureServer, endpoint: str | None = None) -> StorageConfig:
    return StorageConfig(
        azure=AzureOptions(connection_string=server.connection_string(endpoint)),
        transfer=TransferConfig(part_size=5 * MiB),
    )


def _sas(server: AzureServer, container: str, **permissions: bool) -> str:
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    return generate_container_sas(
        server.account,
        container,
        account_key=server.key,
        permission=ContainerSasPermissions(**permissions),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )


async def test_model_tree_md5_or_size(azure_server: AzureServer, tmp_path) -> None:
    """A prefix arrives whole: Put Blob blobs checked by Content-MD5, blocks by size."""
    small = {"config.json": b"{}", "empty": b"", "sub dir/ü.bin": os.urandom(3000)}
    big = os.urandom(13 * MiB + 7)
    for name, data in small.items():
        azure_server.put(f"amodel/m/{name}", data)
    azure_server.put("amodel/m/w/model.safetensors", big, blocks=True)
    azure_server.put("amodel/m-v2/other", b"sibling")
    # A hierarchical-namespace directory marker is not a file.
    azure_server.put("amodel/m/w", b"", metadata={"hdi_isfolder": "true"})
    report = await download(
        "az://models/amodel/m", tmp_path, config=_config(azure_server)
    )
    assert read_tree(tmp_path) == {**small, "w/model.safetensors": big}
    checks = {f.path: f.verification for f in report.files}
    assert checks.pop("w/model.safetensors") == "size"
    assert set(checks.values()) == {"content-md5"}


async def test_wrong_content_md5_is_detected(azure_server: AzureServer, tmp_path):
    """A blob whose bytes do not match its Content-MD5 fails; nothing is left."""
    from azure.storage.blob import BlobServiceClient, ContentSettings

    azure_server.put("abad/x.bin", os.urandom(6 * MiB))
    with BlobServiceClient.from_connection_string(
        azure_server.connection_string()
    ) as service:
        blob = service.get_blob_client("models", "abad/x.bin")
        blob.set_http_headers(ContentSettings(content_md5=bytearray(16)))
    with pytest.raises(IntegrityError):
        await download("az://models/abad", tmp_path, config=_config(azure_server))
    assert list(tmp_path.iterdir()) == []


async def test_https_url_with_sas(azure_server: AzureServer, tmp_path) -> None:
    """An account URL with a SAS token in its query needs no other credential.

    The connection string (no key) only points the account at Azurite.
    """
    azure_server.put("asas/m/a.bin", b"a" * 100)
    sas = _sas(azure_server, "models", read=True, list=True)
    url = f"https://{azure_server.account}.blob.core.windows.net/models/asas/m?{sas}"
    config = StorageConfig(
        azure=AzureOptions(connection_string=azure_server.connection_string(key=False))
    )
    await download(url, tmp_path, config=config)
    assert read_tree(tmp_path) == {"a.bin": b"a" * 100}


async def test_read_only_sas_cannot_list(azure_server: AzureServer, tmp_path):
    """A SAS without list permission reads one blob but is refused a prefix."""
    azure_server.put("aro/m/a.bin", b"a")
    sas = _sas(azure_server, "models", read=True)
    base = f"https://{azure_server.account}.blob.core.windows.net/models/aro"
    config = StorageConfig(
        azure=AzureOptions(connection_string=azure_server.connection_string(key=False))
    )
    await download(f"{base}/m/a.bin?{sas}", tmp_path, config=config)
    assert read_tree(tmp_path) == {"a.bin": b"a"}
    with pytest.raises(AccessDeniedError):
        await download(f"{base}/m?{sas}", tmp_path / "x", config=config)


async def test_public_container_anonymously(azure_server: AzureServer, tmp_path):
    """A public container is listed and read with no credentials at all."""
    azure_server.put("pm/a.bin", b"public", container="public")
    config = StorageConfig(
        azure=AzureOptions(connection_string=azure_server.connection_string(key=False))
    )
    report = await download("az://public/pm", tmp_path, config=config)
    assert read_tree(tmp_path) == {"a.bin": b"public"}
    assert report.files[0].verification == "content-md5"
    with pytest.raises(AccessDeniedError, match="no Azure credentials"):
        await download("az://models/pm", tmp_path / "x", config=config)


async def test_resets_are_resumed(azure_server: AzureServer, tmp_path) -> None:
    """A blob body reset mid-range resumes where it stopped (fault proxy)."""
    from tests.faultproxy import Faults, fault_proxy

    data = os.urandom(12 * MiB)
    azure_server.put("afault/f.bin", data)
    faults = Faults(reset_at=4_000_000, budget=2)
    with fault_proxy(azure_server.host, faults) as proxy:
        endpoint = f"{proxy.endpoint}/{azure_server.account}"
        report = await download(
            "az://models/afault/f.bin", tmp_path, config=_config(azure_server, endpoint)
        )
    assert faults.injected == 2
    assert report.files[0].verification == "content-md5"
    assert (tmp_path / "f.bin").read_bytes() == data


def test_cli_with_kserve_environment(azure_server: AzureServer, tmp_path) -> None:
    """KServe's AZURE_STORAGE_ACCESS_KEY (an account key) with an account URL.

    The key never appears in the output, even with --debug.
    """
    azure_server.put("acli/m/a.json", b"{}")
    url = f"https://{azure_server.account}.blob.core.windows.net/models/acli/m"
    env = {
        **os.environ,
        "AZURE_STORAGE_ACCESS_KEY": azure_server.key,
        "AZURE_STORAGE_CONNECTION_STRING": azure_server.connection_string(key=False),
    }
    result = subprocess.run(
        [sys.executable, "-m", "storage_init", "--debug", url, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "a.json").read_bytes() == b"{}"
    assert azure_server.key not in result.stdout + result.stderr
    assert "sig=" not in result.stdout + result.stderr


class _StaticToken:
    """An AsyncTokenCredential whose tokens Azurite accepts (--oauth basic).

    The Azure AD endpoint that would issue real tokens is not reachable here;
    Azurite checks the issuer, audience and lifetime of a token, not its signature.
    """

    def __init__(self) -> None:
        self.calls = 0

    async def get_token(self, *scopes: str, **kwargs: object):
        import base64
        import json
        import time

        from azure.core.credentials import AccessToken

        assert scopes == ("https://storage.azure.com/.default",)
        self.calls += 1
        now = int(time.time())
        claims = {
            "aud": "https://storage.azure.com",
            "iss": "https://sts.windows.net/00000000-0000-0000-0000-000000000000/",
            "iat": now - 60,
            "nbf": now - 60,
            "exp": now + 3600,
            "oid": "00000000-0000-0000-0000-000000000001",
        }

        def part(data: dict[str, object]) -> str:
            raw = json.dumps(data).encode()
            return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

        token = f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."
        return AccessToken(token, now + 3600)

    async def close(self) -> None:
        raise AssertionError("a caller's credential must not be closed by us")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *args: object) -> None:
        return None


@pytest.fixture(scope="module")
def azure_tls_server(tmp_path_factory: pytest.TempPathFactory):
    """A second Azurite, on https, accepting OAuth Bearer tokens."""
    import trustme
    from azure.storage.blob import BlobServiceClient

    from tests.conftest import ROOT, run_server

    state = tmp_path_factory.mktemp("azurite-tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.cert_chain_pems[0].write_to_path(str(state / "cert.pem"))
    cert.private_key_pem.write_to_path(str(state / "key.pem"))
    ca.cert_pem.write_to_path(str(state / "ca.pem"))
    azurite = ROOT / ".servers" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
    with run_server(
        "azure_azurite.sh",
        state,
        AZURITE=str(azurite),
        TLS_CERT=str(state / "cert.pem"),
        TLS_KEY=str(state / "key.pem"),
    ) as values:
        server = AzureServer(
            account=values["AZURITE_ACCOUNT"],
            key=values["AZURITE_KEY"],
            endpoint=values["AZURITE_ENDPOINT"],
        )
        with BlobServiceClient.from_connection_string(
            server.connection_string(), connection_verify=str(state / "ca.pem")
        ) as service:
            container = service.create_container("models")
            container.upload_blob("tok/m/a.bin", b"token" * 1000)
            container.upload_blob("tok/m/b/c.json", b"{}")
        yield server, str(state / "ca.pem")


async def test_bearer_token_credential(azure_tls_server, tmp_path) -> None:
    """A caller's token credential lists (SDK) and reads (our GETs) over https."""
    server, ca = azure_tls_server
    access = AzureAccess(server.endpoint, server.account, "identity")
    credential = _StaticToken()
    backend = AzureBackend(access, AzureOptions(ca_bundle=ca), credential=credential)
    try:
        report = await download("az://models/tok/m", tmp_path, backends={"az": backend})
    finally:
        await backend.aclose()
    assert read_tree(tmp_path) == {"a.bin": b"token" * 1000, "b/c.json": b"{}"}
    assert {f.verification for f in report.files} == {"content-md5"}
    assert credential.calls >= 2  # the SDK's listing and our GETs both asked


async def test_untrusted_certificate_is_refused(azure_tls_server, tmp_path) -> None:
    """Without the test CA, the https endpoint is refused, not silently trusted."""
    from storage_init import TransferError

    server, _ = azure_tls_server
    access = AzureAccess(server.endpoint, server.account, "identity")
    backend = AzureBackend(access, AzureOptions(), credential=_StaticToken())
    try:
        with pytest.raises(TransferError, match="certificate"):
            await download("az://models/tok/m", tmp_path, backends={"az": backend})
    finally:
        await backend.aclose()
    assert list(tmp_path.iterdir()) == []


async def test_service_principal_credential_from_configuration() -> None:
    """AZURE_CLIENT_ID/TENANT/SECRET (or KServe's AZ_*) make a client-secret
    credential, which the backend owns and closes. (No Azure AD here: tokens
    themselves are tested with a caller's credential against Azurite above.)
    """
    from azure.identity.aio import ClientSecretCredential, DefaultAzureCredential

    from storage_init.config import from_env
    from storage_init.uri import parse_uri

    env = {
        "AZ_CLIENT_ID": "00000000-0000-0000-0000-000000000001",
        "AZ_TENANT_ID": "00000000-0000-0000-0000-000000000002",
        "AZ_CLIENT_SECRET": "not-a-real-secret",
        "AZURE_STORAGE_ACCOUNT_NAME": "acct",
    }
    config = from_env(env)
    backend = AzureBackend.from_config(config, parse_uri("az://c/m"))
    try:
        assert isinstance(backend._identity, ClientSecretCredential)
        assert backend._owns_identity
    finally:
        await backend.aclose()
    del env["AZ_CLIENT_SECRET"]  # workload or managed identity
    backend = AzureBackend.from_config(from_env(env), parse_uri("az://c/m"))
    try:
        assert isinstance(backend._identity, DefaultAzureCredential)
    finally:
        await backend.aclose()
