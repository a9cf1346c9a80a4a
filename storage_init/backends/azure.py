"""Azure Blob backend on azure-storage-blob's aio client (extra ``azure``).

``az://container/path`` and ``https://<account>.blob.core.windows.net/container/path``
follow S3's semantics: the blob if it exists, else the prefix ``path/`` (never
siblings). The SDK lists blobs and reads properties, with whichever credential
`resolve_access` chose. The data GETs go on our aiohttp session as parallel ranged
reads pinned with ``If-Match`` to the listed ETag: the SDK's own download fetches
4 MiB chunks one after another and buffers its first 32 MiB in memory. GETs are
authorised with the SAS token, a Bearer token from azure-identity, or, for an
account key, a read-only container SAS signed once locally (one HMAC per container
rather than a SharedKey signature per request).

Blobs uploaded in one Put Blob carry a Content-MD5, which is verified; blobs
committed from blocks usually carry none, and only their size is checked. The
report says which (``content-md5`` or ``size``).
"""

from __future__ import annotations

import logging
import ssl
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import quote

import aiohttp
import anyio
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import AioHttpTransport
from azure.storage.blob import ContainerSasPermissions, generate_container_sas
from azure.storage.blob.aio import BlobServiceClient, ExponentialRetry

from ..errors import (
    AccessDeniedError,
    BackendUnavailableError,
    ErrorTable,
    NetworkError,
    ObjectNotFoundError,
    TransferError,
    map_errors,
)
from ..models import ObjectInfo
from ._aiohttp import AIOHTTP_ERRORS, new_session
from ._azauth import AzureAccess, resolve_access
from ._common import (
    NETWORK_ERRORS,
    WholeObjects,
    check_range,
    simple_error,
    status_error,
)
from ._fetch import DataGet, FetchedRanges, Fetcher

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from azure.core.credentials_async import AsyncTokenCredential
    from azure.storage.blob import BlobProperties

    from ..config import AzureOptions, ProxyConfig, StorageConfig
    from ..uri import ObjectURI
    from ._fetch import Head

__all__ = ["AzureBackend"]

log = logging.getLogger(__name__)

#: The REST API version of our own GETs (Bearer tokens need 2017-11-09 or later).
API_VERSION = "2023-11-03"
_TOKEN_SCOPE = "https://storage.azure.com/.default"  # noqa: S105 (a scope, not a secret)
#: A locally signed SAS lives this long; it is renewed when less than half is left.
_SAS_LIFETIME = timedelta(hours=4)
_TOKEN_MARGIN = 300.0
_CREDENTIAL_HINT = (
    "set AZURE_STORAGE_ACCESS_KEY, AZURE_STORAGE_CONNECTION_STRING or "
    "AZURE_CLIENT_ID, or put a SAS token in the URL"
)


def _http_error(exc: BaseException, uri: str) -> TransferError:
    assert isinstance(exc, HttpResponseError)
    if exc.status_code is None:
        # azure-identity failures carry no status: the credential was refused.
        return AccessDeniedError("authentication failed", uri=uri)
    code = getattr(exc, "error_code", None) or exc.reason or ""
    return status_error(exc.status_code, uri, str(getattr(code, "value", code)))


def _certificate_failure(exc: BaseException) -> bool:
    """Whether `exc` (an SDK error) was a refused TLS certificate, or caused by one."""
    seen: BaseException | None = exc
    for _ in range(6):  # the SDK wraps aiohttp's error once or twice
        if seen is None:
            return False
        if isinstance(
            seen, aiohttp.ClientConnectorCertificateError | ssl.SSLCertVerificationError
        ):
            return True
        inner = getattr(seen, "inner_exception", None)
        seen = inner if isinstance(inner, BaseException) else seen.__cause__
    return False


def _request_error(exc: BaseException, uri: str) -> TransferError:
    if _certificate_failure(exc):
        return TransferError("TLS certificate verification failed", uri=uri)
    return NetworkError("connection error", uri=uri)


class _Retry(ExponentialRetry):
    """The SDK's retries, sooner and never on a refused certificate.

    Its default waits 15, 18 and 24 s; ours 1, 3 and 5 s. No retry fixes a
    certificate.
    """

    def __init__(self) -> None:
        super().__init__(initial_backoff=1, increment_base=2, random_jitter_range=1)

    def increment(
        self,
        settings: dict[str, Any],
        request: Any,
        response: Any | None = None,
        error: AzureError | None = None,
    ) -> bool:
        if error is not None and _certificate_failure(error):
            return False
        return bool(super().increment(settings, request, response, error))


_ERRORS: ErrorTable = {
    ResourceNotFoundError: lambda exc, uri: ObjectNotFoundError(
        "no such container or blob", uri=uri
    ),
    HttpResponseError: _http_error,
    ServiceRequestError: _request_error,
    ServiceResponseError: _request_error,
    AzureError: simple_error(TransferError, "Azure request failed"),
    **AIOHTTP_ERRORS,
}


def _is_folder(blob: BlobProperties) -> bool:
    # Accounts with a hierarchical namespace list directories as empty blobs.
    return (blob.metadata or {}).get("hdi_isfolder", "").lower() == "true"


def _info(blob: BlobProperties) -> ObjectInfo:
    md5 = blob.content_settings.content_md5 if blob.content_settings else None
    checksums = {"md5": bytes(md5).hex()} if md5 else {}
    return ObjectInfo(
        key=blob.name,
        size=int(blob.size),
        etag=(blob.etag or "").strip('"') or None,
        checksums=MappingProxyType(checksums),
        etag_is_md5=False,
        detailed=True,
    )


class AzureBackend(WholeObjects, FetchedRanges):
    """The Azure Blob backend for one account and credential.

    Args:
        access: the endpoint and credential (`resolve_access`).
        options: timeouts, TLS, identity settings, page size.
        credential: for ``identity`` access, a token credential of the caller's
            (an async server's own azure-identity credential); it is not closed
            here. Without it, one is made from `options` and closed by `aclose`.
        max_connections: size of the connection pool, and direct connections
            kept open (`TransferConfig.connections`).
        proxy: proxies by scheme.
    """

    def __init__(
        self,
        access: AzureAccess,
        options: AzureOptions,
        *,
        credential: AsyncTokenCredential | None = None,
        max_connections: int = 16,
        proxy: ProxyConfig | None = None,
    ) -> None:
        from ..config import ProxyConfig

        self._access = access
        self._options = options
        self._proxy = proxy or ProxyConfig()
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._fetch: Fetcher | None = None
        self._service: BlobServiceClient | None = None
        self._identity = credential
        self._owns_identity = False
        self._token: tuple[str, float] = ("", 0.0)
        self._sas: dict[str, tuple[str, datetime]] = {}
        self._lock = anyio.Lock()

    @classmethod
    def from_config(cls, config: StorageConfig, uri: ObjectURI | None = None) -> Self:
        """Build the backend for `uri`'s account from ``config.azure``.

        Raises:
            ConfigError: no account can be found for `uri`, or a key is malformed.
            BackendUnavailableError: a client ID is set but azure-identity is not
                installed.
        """
        access = resolve_access(config.azure, uri)
        log.debug(
            "Azure account %s at %s, credential: %s (%s)",
            access.account,
            access.endpoint,
            access.kind,
            access.source,
        )
        backend = cls(
            access,
            config.azure,
            max_connections=config.transfer.connections,
            proxy=config.proxy,
        )
        if access.kind == "identity":
            backend._identity = backend._new_identity()
            backend._owns_identity = True
        return backend

    def _new_identity(self) -> AsyncTokenCredential:
        try:
            from azure.identity.aio import (
                ClientSecretCredential,
                DefaultAzureCredential,
            )
        except ImportError:
            scheme, extra = "az", "azure-identity"
            raise BackendUnavailableError(scheme, extra, "azure.identity") from None
        opts = self._options
        if opts.client_id and opts.tenant_id and opts.client_secret:
            return ClientSecretCredential(
                opts.tenant_id, opts.client_id, opts.client_secret
            )
        # Workload identity (AZURE_FEDERATED_TOKEN_FILE) or managed identity.
        return DefaultAzureCredential(managed_identity_client_id=opts.client_id)

    def _sdk_credential(self) -> Any:
        access = self._access
        if access.kind == "sas":
            return access.secret
        if access.kind == "key":
            return {"account_name": access.account, "account_key": access.secret}
        return self._identity

    async def _client(self) -> BlobServiceClient:
        if self._service is not None:
            return self._service
        async with self._lock:
            if self._service is None:
                opts = self._options
                verify = (opts.ca_bundle or True) if opts.verify_ssl else False
                session = self._session = new_session(
                    max_connections=self._max_connections,
                    verify=verify,
                    connect_timeout=opts.connect_timeout,
                    read_timeout=opts.read_timeout,
                )
                self._fetch = Fetcher(
                    lambda: session,
                    self._proxy,
                    verify=verify,
                    connect_timeout=opts.connect_timeout,
                    read_timeout=opts.read_timeout,
                    max_idle=self._max_connections,
                )
                # The SDK shares our connection pool; we close the session.
                transport = AioHttpTransport(session=self._session, session_owner=False)
                endpoint = self._access.endpoint
                proxy = self._proxy.for_url(endpoint)
                self._service = BlobServiceClient(
                    endpoint,
                    credential=self._sdk_credential(),
                    transport=transport,
                    proxies={"http": proxy, "https": proxy} if proxy else None,
                    retry_policy=_Retry(),
                    connection_verify=verify,
                )
            return self._service

    def _uri(self, container: str, key: str) -> str:
        return f"{self._access.endpoint}/{container}/{key}"

    @contextmanager
    def _mapped(self, uri: str) -> Iterator[None]:
        """`map_errors` for SDK calls, saying so when a refusal met no credentials."""
        try:
            with map_errors(_ERRORS, uri=uri):
                yield
        except AccessDeniedError as exc:
            if self._access.kind != "anonymous":
                raise
            msg = f"{exc.reason}; no Azure credentials were found ({_CREDENTIAL_HINT})"
            raise AccessDeniedError(msg, uri=uri) from exc

    async def stat(self, bucket: str, key: str) -> ObjectInfo | None:
        """See `Backend.stat`. A directory of a hierarchical namespace is None."""
        service = await self._client()
        blob = service.get_blob_client(bucket, key)
        try:
            with self._mapped(self._uri(bucket, key)):
                props = await blob.get_blob_properties()
        except ObjectNotFoundError:
            return None
        if _is_folder(props):
            return None
        props.name = key
        return _info(props)

    async def list_objects(self, bucket: str, prefix: str) -> AsyncIterator[ObjectInfo]:
        """See `Backend.list_objects`. Directory markers are left out."""
        service = await self._client()
        container = service.get_container_client(bucket)
        uri = self._uri(bucket, prefix)
        with self._mapped(uri):
            pages = container.list_blobs(
                name_starts_with=prefix or None,
                include=["metadata"],
                results_per_page=self._options.page_size,
            ).by_page()
        while True:
            with self._mapped(uri):
                try:
                    page = await anext(pages)
                except StopAsyncIteration:
                    return
                blobs = [blob async for blob in page]
            for blob in blobs:
                if not _is_folder(blob):
                    yield _info(blob)

    async def _authorize(self, container: str) -> tuple[str, dict[str, str]]:
        """The query string and headers that authorise a GET in `container`."""
        headers = {"x-ms-version": API_VERSION}
        access = self._access
        if access.kind == "sas":
            return access.secret, headers
        if access.kind == "key":
            return self._container_sas(container), headers
        if access.kind == "identity":
            headers["Authorization"] = f"Bearer {await self._bearer()}"
        return "", headers

    def _container_sas(self, container: str) -> str:
        now = datetime.now(UTC)
        sas, expiry = self._sas.get(container, ("", now))
        if expiry - now < _SAS_LIFETIME / 2:
            expiry = now + _SAS_LIFETIME
            sas = generate_container_sas(
                self._access.account,
                container,
                account_key=self._access.secret,
                permission=ContainerSasPermissions(read=True),
                expiry=expiry,
            )
            self._sas[container] = (sas, expiry)
        return sas

    async def _bearer(self) -> str:
        token, expires = self._token
        if time.time() > expires - _TOKEN_MARGIN:
            assert self._identity is not None
            with map_errors(_ERRORS, uri=self._access.endpoint):
                fresh = await self._identity.get_token(_TOKEN_SCOPE)
            token, expires = fresh.token, float(fresh.expires_on)
            self._token = (token, expires)
        return token

    async def _data_get(
        self, bucket: str, info: ObjectInfo, start: int, end: int, *, whole: bool
    ) -> tuple[DataGet, Fetcher]:
        await self._client()
        assert self._fetch is not None
        uri = self._uri(bucket, info.key)
        url = (
            f"{self._access.endpoint}/{quote(bucket, safe='$')}"
            f"/{quote(info.key, safe='/')}"
        )
        query, headers = await self._authorize(bucket)
        if query:
            url += f"?{query}"
        if info.etag:
            headers["If-Match"] = f'"{info.etag}"'
        if not whole:
            headers["Range"] = f"bytes={start}-{end - 1}"

        def accept(head: Head) -> None:
            if head.status >= 300:
                code = head.headers.get("x-ms-error-code", "")
                with self._mapped(uri):
                    raise status_error(head.status, uri, code)
            if not whole:
                check_range(head, start, end, info.size, uri)

        return DataGet(url, headers, uri, NETWORK_ERRORS, accept), self._fetch

    async def aclose(self) -> None:
        """See `Backend.aclose`. Runs to the end even when the caller is cancelled."""
        with anyio.CancelScope(shield=True):
            if self._service is not None:
                await self._service.close()
            if self._identity is not None and self._owns_identity:
                await self._identity.close()
            if self._fetch is not None:
                await self._fetch.aclose()
            if self._session is not None:
                await self._session.close()
            self._service = self._identity = self._session = self._fetch = None
