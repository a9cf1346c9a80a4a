"""http(s):// backend on aiohttp (core: no extra needed).

A URL names one file. A HEAD (or, where HEAD is refused, a ``Range: bytes=0-0`` GET)
learns its size, its ETag and whether the server serves byte ranges, following
redirects (presigned URLs, CDNs); the final URL is used for the data. With ranges,
the engine fetches parallel ranges, each pinned with ``If-Range`` to a strong ETag
(or ``Last-Modified``), so a changed file answers 200 instead of a mixed 206 and is
detected; without, one streamed GET. Verification uses ``Repr-Digest``/``Digest``
SHA-256, ``Content-MD5``/``Digest`` MD5, or ``--sha256``. Any Content-Type is
accepted. Headers from KServe's ``<host>-headers`` are sent and never logged.
"""

from __future__ import annotations

import base64
import binascii
import re
from contextlib import suppress
from types import MappingProxyType
from typing import TYPE_CHECKING, Self

import anyio
import yarl

from ..config import HTTPOptions, ProxyConfig
from ..errors import (
    IntegrityError,
    ObjectChangedError,
    ObjectNotFoundError,
    map_errors,
)
from ..models import ObjectInfo
from ._aiohttp import AIOHTTP_ERRORS, new_session
from ._common import NETWORK_ERRORS, WholeObjects, check_range, status_error
from ._fetch import DataGet, FetchedRanges, Fetcher

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    import aiohttp

    from ..config import StorageConfig
    from ..uri import ObjectURI
    from ._fetch import Head

__all__ = ["HTTPBackend", "PlainHTTPBackend"]

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def _digests(headers: Mapping[str, str]) -> dict[str, str]:
    """Stated digests of the content: sha256 as base64, md5 as hex."""
    found: dict[str, str] = {}
    # RFC 9530 Repr-Digest: sha-256=:BASE64:, ...; RFC 3230 Digest: SHA-256=BASE64
    for header in ("Repr-Digest", "Digest"):
        for item in headers.get(header, "").split(","):
            algo, _, value = item.strip().partition("=")
            value = value.strip().strip(":")
            if algo.lower() == "sha-256" and value:
                found.setdefault("sha256", value)
            elif algo.lower() == "md5" and value:
                found.setdefault("md5b64", value)
    md5 = headers.get("Content-MD5") or found.pop("md5b64", "")
    found.pop("md5b64", None)
    if md5:
        with suppress(binascii.Error, ValueError):
            found["md5"] = base64.b64decode(md5, validate=True).hex()
    return found


def _strong_etag(headers: Mapping[str, str]) -> str | None:
    etag = headers.get("ETag")
    if not etag or etag.startswith("W/"):
        return None  # weak validators cannot guard byte ranges
    return etag.strip('"')


class HTTPBackend(WholeObjects, FetchedRanges):
    """Single files over https (`PlainHTTPBackend`: http).

    Args:
        options: headers per host, TLS settings, the expected SHA-256, timeouts.
        max_connections: size of the connection pool, and direct connections
            kept open (`TransferConfig.connections`).
        proxy: proxies by scheme.
    """

    scheme = "https"

    def __init__(
        self,
        options: HTTPOptions,
        *,
        max_connections: int = 16,
        proxy: ProxyConfig | None = None,
    ) -> None:
        self._options = options
        self._proxy = proxy or ProxyConfig()
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._fetch: Fetcher | None = None
        # By (host, key): the URL after redirects, and the If-Range validator.
        self._urls: dict[tuple[str, str], str] = {}
        self._validators: dict[tuple[str, str], str] = {}

    @classmethod
    def from_config(cls, config: StorageConfig, uri: ObjectURI | None = None) -> Self:
        """Build the backend from ``config.http``."""
        del uri  # one instance serves every bucket
        return cls(
            config.http,
            max_connections=config.transfer.connections,
            proxy=config.proxy,
        )

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            opts = self._options
            self._session = new_session(
                max_connections=self._max_connections,
                verify=self._verify(),
                connect_timeout=opts.connect_timeout,
                read_timeout=opts.read_timeout,
            )
        return self._session

    def _get_fetcher(self) -> Fetcher:
        if self._fetch is None:
            opts = self._options
            self._fetch = Fetcher(
                self._get_session,
                self._proxy,
                verify=self._verify(),
                connect_timeout=opts.connect_timeout,
                read_timeout=opts.read_timeout,
                max_idle=self._max_connections,
            )
        return self._fetch

    def _verify(self) -> bool | str:
        opts = self._options
        if opts.verify_ssl and opts.ca_bundle:
            return opts.ca_bundle
        return opts.verify_ssl

    def _headers(self, url: str) -> dict[str, str]:
        host = (yarl.URL(url, encoded=True).host or "").lower()
        return dict(self._options.headers.get(host, {}))

    def _request(
        self, method: str, url: str, headers: dict[str, str]
    ) -> aiohttp.client._RequestContextManager:
        return self._get_session().request(
            method,
            yarl.URL(url, encoded=True),
            headers={**self._headers(url), **headers},
            proxy=self._proxy.for_url(url),
            allow_redirects=True,
        )

    async def stat(self, bucket: str, key: str) -> ObjectInfo | None:
        """See `Backend.stat`; None when the server answers 404 or 410."""
        url = f"{self.scheme}://{bucket}/{key}"
        return await self._probe(url, (bucket, key))

    async def _probe(self, url: str, where: tuple[str, str]) -> ObjectInfo | None:
        with map_errors(AIOHTTP_ERRORS, uri=url):
            async with self._request("HEAD", url, {}) as response:
                status, headers, final = response.status, response.headers, response.url
            size = int(headers.get("Content-Length", "-1")) if status == 200 else -1
            ranges_ok = headers.get("Accept-Ranges", "").lower() == "bytes"
            if status in (403, 405, 501) or size < 0:
                # HEAD refused, or no length: ask for the first byte instead.
                async with self._request(
                    "GET", url, {"Range": "bytes=0-0"}
                ) as response:
                    status, headers, final = (
                        response.status,
                        response.headers,
                        response.url,
                    )
                    match = _CONTENT_RANGE.match(headers.get("Content-Range", ""))
                    if status == 206 and match and match.group(3) != "*":
                        size, ranges_ok = int(match.group(3)), True
                    elif status == 200 and response.content_length is not None:
                        size, ranges_ok = response.content_length, False
        if status == 404 or status == 410:
            return None
        if status >= 300:
            raise status_error(status, url)
        if size < 0:
            msg = "the server states no length for this file"
            raise IntegrityError(msg, uri=url)
        self._urls[where] = str(final)
        checksums = _digests(headers)
        if self._options.sha256:
            digest = bytes.fromhex(self._options.sha256)
            checksums["sha256"] = base64.b64encode(digest).decode()
        etag = _strong_etag(headers)
        validator = f'"{etag}"' if etag else headers.get("Last-Modified")
        if validator and ranges_ok:
            self._validators[where] = validator
        return ObjectInfo(
            key=where[1],
            size=size,
            etag=etag,
            checksums=MappingProxyType(checksums),
            etag_is_md5=False,
            detailed=True,
            ranges_ok=ranges_ok,
        )

    async def list_objects(self, bucket: str, prefix: str) -> AsyncIterator[ObjectInfo]:
        """See `Backend.list_objects`: http(s) URLs name single files."""
        msg = "not found (404)"
        raise ObjectNotFoundError(msg, uri=f"{self.scheme}://{bucket}/{prefix}")
        yield  # type: ignore[unreachable]  # makes this an async generator

    async def _data_get(
        self, bucket: str, info: ObjectInfo, start: int, end: int, *, whole: bool
    ) -> tuple[DataGet, Fetcher]:
        where = (bucket, info.key)
        url = self._urls.get(where) or f"{self.scheme}://{bucket}/{info.key}"
        headers: dict[str, str] = {}
        if not whole:
            headers["Range"] = f"bytes={start}-{end - 1}"
            validator = self._validators.get(where)
            if validator:
                # A changed file then answers 200 (the whole new file), not 206.
                headers["If-Range"] = validator

        def accept(head: Head) -> None:
            if head.status >= 300:
                raise status_error(head.status, url)
            if whole:
                if head.content_length not in (None, info.size):
                    msg = f"expected {info.size} bytes, got {head.content_length}"
                    raise ObjectChangedError(msg, uri=url)
            elif head.status != 206:
                msg = "the file changed (the server ignored If-Range)"
                raise ObjectChangedError(msg, uri=url)
            else:
                check_range(head, start, end, info.size, url)

        headers = {**self._headers(url), **headers}
        get = DataGet(url, headers, url, NETWORK_ERRORS, accept)
        return get, self._get_fetcher()

    async def aclose(self) -> None:
        """See `Backend.aclose`. Runs to the end even when the caller is cancelled."""
        with anyio.CancelScope(shield=True):
            if self._fetch is not None:
                await self._fetch.aclose()
                self._fetch = None
            if self._session is not None:
                await self._session.close()
                self._session = None


class PlainHTTPBackend(HTTPBackend):
    """Single files over plain http."""

    scheme = "http"
