"""Google Cloud Storage backend on gcloud-aio-storage (extra ``gcs``).

``gs://bucket/key`` follows S3's semantics: the object if it exists, else the prefix
``key/`` (never siblings). gcloud-aio-storage lists and reads metadata (with the
credentials of gcloud-aio-auth); the media GETs go on our aiohttp session, pinned to
the listed generation with ``generation=N``: the bytes always come from that one
version, and a replaced object (its old generation gone) fails with
ObjectChangedError rather than mixing. Every object's listing carries its CRC32C, so
every file is verified by combining per-range CRCs, with no HEAD and no second pass.
"""

from __future__ import annotations

import base64
import binascii
import logging
from contextlib import suppress
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import quote

import aiohttp
import anyio
from gcloud.aio.auth import Token
from gcloud.aio.storage import Storage

from ..errors import (
    ErrorTable,
    ObjectChangedError,
    ObjectNotFoundError,
    TransferError,
    map_errors,
)
from ..models import ObjectInfo
from ._aiohttp import AIOHTTP_ERRORS, new_session
from ._common import FIRST_PAGE_SIZE, WholeObjects, check_range, status_error
from ._fetch import DataGet, FetchedRanges, Fetcher

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from ..config import GCSOptions, ProxyConfig, StorageConfig
    from ..uri import ObjectURI
    from ._fetch import Head

__all__ = ["GCSBackend"]

log = logging.getLogger(__name__)

GCS_API = "https://storage.googleapis.com"
_SCOPES = ["https://www.googleapis.com/auth/devstorage.read_only"]


def _read_error(status: int, uri: str, *, pinned: bool) -> TransferError:
    if status == 404 and pinned:
        # The generation pinned at listing time is gone: the object was replaced.
        msg = "object replaced or deleted during the download"
        return ObjectChangedError(msg, uri=uri)
    return status_error(status, uri)


def _response_error(exc: BaseException, uri: str) -> TransferError:
    assert isinstance(exc, aiohttp.ClientResponseError)
    return status_error(exc.status, uri)


_ERRORS: ErrorTable = {aiohttp.ClientResponseError: _response_error, **AIOHTTP_ERRORS}


def _info(item: Mapping[str, Any]) -> ObjectInfo:
    """An `ObjectInfo` from a JSON API object resource (listing or metadata)."""
    checksums: dict[str, str] = {}
    if item.get("crc32c"):
        checksums["crc32c"] = item["crc32c"]
    if item.get("md5Hash"):  # absent for composite objects
        with suppress(binascii.Error, ValueError):
            checksums["md5"] = base64.b64decode(item["md5Hash"]).hex()
    return ObjectInfo(
        key=item["name"],
        size=int(item["size"]),
        # The generation identifies the version: it pins reads and keys resumes.
        etag=str(item["generation"]),
        checksums=MappingProxyType(checksums),
        checksum_type="FULL_OBJECT",
        etag_is_md5=False,
        detailed=True,
    )


class GCSBackend(WholeObjects, FetchedRanges):
    """The GCS backend: one gcloud-aio Storage client and one aiohttp session.

    Args:
        options: emulator host, credentials file, anonymous access, timeouts.
        max_connections: size of the connection pool, and direct connections
            kept open (`TransferConfig.connections`).
        proxy: proxies by scheme.
    """

    def __init__(
        self,
        options: GCSOptions,
        *,
        max_connections: int = 16,
        proxy: ProxyConfig | None = None,
    ) -> None:
        from ..config import ProxyConfig

        self._options = options
        self._proxy = proxy or ProxyConfig()
        self._max_connections = max_connections
        self._api = options.emulator_host or GCS_API
        self._session: aiohttp.ClientSession | None = None
        self._fetch: Fetcher | None = None
        self._storage: Storage | None = None
        self._token: Token | None = None
        self._lock = anyio.Lock()

    @classmethod
    def from_config(cls, config: StorageConfig, uri: ObjectURI | None = None) -> Self:
        """Build the backend from ``config.gcs``."""
        del uri  # one instance serves every bucket
        return cls(
            config.gcs,
            max_connections=config.transfer.connections,
            proxy=config.proxy,
        )

    async def _client(self) -> Storage:
        async with self._lock:
            if self._storage is None:
                opts = self._options
                session = self._session = new_session(
                    max_connections=self._max_connections,
                    verify=opts.verify_ssl,
                    connect_timeout=opts.connect_timeout,
                    read_timeout=opts.read_timeout,
                )
                self._fetch = Fetcher(
                    lambda: session,
                    self._proxy,
                    verify=opts.verify_ssl,
                    connect_timeout=opts.connect_timeout,
                    read_timeout=opts.read_timeout,
                    max_idle=self._max_connections,
                )
                anonymous = opts.anonymous or bool(opts.emulator_host)
                if not anonymous:
                    self._token = Token(
                        service_file=opts.credentials_file,
                        session=self._session,
                        scopes=_SCOPES,
                    )
                self._storage = Storage(
                    session=self._session,
                    api_root=self._api,
                    # "dev" means: send no token (the emulator, public buckets).
                    api_is_dev=anonymous,
                    token=self._token,
                )
            return self._storage

    async def _auth(self) -> dict[str, str]:
        if self._token is None:
            return {}
        try:
            with map_errors(_ERRORS, uri="gs://"):
                return {"Authorization": f"Bearer {await self._token.get()}"}
        except TransferError:
            if self._options.credentials_file:
                raise
            # KServe's rule: no credentials found means anonymous access.
            log.warning("no Google credentials found; reading anonymously")
            self._token = None
            return {}

    async def stat(self, bucket: str, key: str) -> ObjectInfo | None:
        """See `Backend.stat`."""
        storage = await self._client()
        try:
            with map_errors(_ERRORS, uri=f"gs://{bucket}/{key}"):
                item = await storage.download_metadata(bucket, key)
        except ObjectNotFoundError:
            return None
        return _info(item)

    async def list_objects(self, bucket: str, prefix: str) -> AsyncIterator[ObjectInfo]:
        """See `Backend.list_objects` (the first page: `FIRST_PAGE_SIZE`)."""
        storage = await self._client()
        first = min(self._options.page_size, FIRST_PAGE_SIZE)
        params = {"prefix": prefix, "maxResults": str(first)}
        while True:
            with map_errors(_ERRORS, uri=f"gs://{bucket}/{prefix}"):
                page = await storage.list_objects(bucket, params=params)
            for item in page.get("items", ()):
                yield _info(item)
            token = page.get("nextPageToken")
            if not token:
                return
            params = {
                **params,
                "maxResults": str(self._options.page_size),
                "pageToken": token,
            }

    async def _data_get(
        self, bucket: str, info: ObjectInfo, start: int, end: int, *, whole: bool
    ) -> tuple[DataGet, Fetcher]:
        await self._client()
        assert self._fetch is not None
        uri = f"gs://{bucket}/{info.key}"
        url = (
            f"{self._api}/download/storage/v1/b/{quote(bucket, safe='')}"
            f"/o/{quote(info.key, safe='')}?alt=media"
        )
        if info.etag:
            url += f"&generation={info.etag}"
        headers = await self._auth()
        if not whole:
            headers["Range"] = f"bytes={start}-{end - 1}"

        def accept(head: Head) -> None:
            if head.status >= 300:
                raise _read_error(head.status, uri, pinned=bool(info.etag))
            served = head.headers.get("X-Goog-Generation")
            if info.etag and served and served != info.etag:
                msg = f"generation {served} served, {info.etag} listed"
                raise ObjectChangedError(msg, uri=uri)
            if not whole:
                check_range(head, start, end, info.size, uri)

        return DataGet(url, headers, uri, _ERRORS, accept), self._fetch

    async def aclose(self) -> None:
        """See `Backend.aclose`. Runs to the end even when the caller is cancelled."""
        with anyio.CancelScope(shield=True):
            if self._token is not None:
                await self._token.close()
            if self._fetch is not None:
                await self._fetch.aclose()
            if self._session is not None:
                await self._session.close()
            self._session = self._storage = self._token = self._fetch = None
