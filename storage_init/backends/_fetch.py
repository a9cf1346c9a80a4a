"""The data GETs of every network backend: `WirePool` direct, aiohttp via proxies.

Backends build the URL and headers (signatures, pins, ranges) and read the response
through one interface, whichever client sent the request.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from functools import cache
from typing import TYPE_CHECKING, NamedTuple, Protocol

from .. import _recvfile as recvfile
from .._crc import crc_algorithm
from ..config import WIRE_BUFFER
from ..errors import ErrorTable, map_errors
from ._base import FetchedFile
from ._common import NETWORK_ERRORS, Response
from ._wire import Attempt, WirePool, WireResponse

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping
    from pathlib import Path

    import aiohttp

    from .._recvfile import FileRun
    from ..config import ProxyConfig
    from ..models import ObjectInfo
    from ._base import BlockingBody, BlockingGet, RangeBody

__all__ = ["ERROR_BODY_LIMIT", "DataGet", "Fetched", "FetchedRanges", "Fetcher", "Head"]

#: Bytes of an error response's body kept for its message (S3's XML error, say).
ERROR_BODY_LIMIT = 64 * 1024 + 1


# A NamedTuple, not a frozen dataclass: defining it at import costs a tenth
# (README, "Start-up is mostly imports").
class Head(NamedTuple):
    """The head of a data GET's response, as a backend's `DataGet.accept` sees it.

    Attributes:
        error_body: for a status of 300 or more, the start of the body (at most
            `ERROR_BODY_LIMIT` bytes); otherwise empty.
    """

    status: int
    headers: Mapping[str, str]
    content_length: int | None
    error_body: bytes


# A NamedTuple, not a frozen dataclass: defining it at import costs a tenth
# (README, "Start-up is mostly imports").
class DataGet(NamedTuple):
    """A data GET ready to send, and how its backend judges the response.

    Attributes:
        url: the URL, already encoded and signed (or headers carry the auth).
        uri: the object's URI, for errors (their messages drop its query string).
        errors: how the client's exceptions map onto `storage_init.errors`.
        accept: checks the head and returns what it says of the object (or None
            when nothing new); raises a `TransferError` for a status of 300 or
            more and for a head that does not match the request. Synchronous, so
            that a worker thread can send the request.
        crc_fields: the response fields that carry a CRC of the object, and the
            CRC each carries (`_crc.CRC_ALGORITHMS`), strongest first: a body
            received natively gets the CRC of the first one its head holds.
    """

    url: str
    headers: Mapping[str, str]
    uri: str
    errors: ErrorTable
    accept: Callable[[Head], ObjectInfo | None]
    crc_fields: tuple[tuple[str, str], ...] = ()


class Fetched(Response, Protocol):
    """A response whose head has arrived (status and headers as `Response`).

    Attributes:
        content_length: the Content-Length, if the response states one.
    """

    content_length: int | None

    def body(self, uri: str, info: ObjectInfo | None) -> RangeBody:
        """The body, for the engine to read (errors mapped for `uri`)."""
        ...

    async def error_body(self, limit: int) -> bytes:
        """Up to `limit` bytes of an error response's body."""
        ...


class _WireBody:
    def __init__(
        self,
        response: WireResponse,
        uri: str,
        info: ObjectInfo | None,
        errors: ErrorTable,
    ) -> None:
        self._response = response
        self._uri = uri
        self._errors = errors
        self.info = info

    async def read(self, size_hint: int) -> memoryview:
        """See `RangeBody.read`: a view of the connection's buffer."""
        with map_errors(self._errors, uri=self._uri):
            return await self._response.read(size_hint)

    def read_blocking(self, size: int, timeout: float) -> memoryview:
        """See `BlockingBody.read_blocking`."""
        with map_errors(self._errors, uri=self._uri):
            return self._response.read_blocking(size, timeout)

    def receive_to_file(
        self, run: FileRun, count: int, chunk: int, timeout: float
    ) -> bool:
        """See `BlockingBody.receive_to_file`."""
        with map_errors(self._errors, uri=self._uri):
            return self._response.receive_to_file_blocking(run, count, chunk, timeout)

    def abort(self) -> None:
        """See `BlockingBody.abort`."""
        self._response.abort()


class _WireFetched:
    def __init__(self, response: WireResponse, errors: ErrorTable) -> None:
        self._response = response
        self._errors = errors
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers
        self.content_length = response.content_length

    def body(self, uri: str, info: ObjectInfo | None) -> RangeBody:
        return _WireBody(self._response, uri, info, self._errors)

    async def error_body(self, limit: int) -> bytes:
        return await self._response.read_some(limit)


class _AiohttpFetched:
    def __init__(self, response: aiohttp.ClientResponse, errors: ErrorTable) -> None:
        self._response = response
        self._errors = errors
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers
        self.content_length = response.content_length

    def body(self, uri: str, info: ObjectInfo | None) -> RangeBody:
        from ._aiohttp import ChunkBody

        return ChunkBody(self._response.content, uri, info, self._errors)

    async def error_body(self, limit: int) -> bytes:
        return await self._response.content.read(limit)


class Fetcher:
    """Sends a backend's data GETs.

    Args:
        session: returns the backend's aiohttp session (made on first use), for
            requests that go through a proxy.
        proxy: proxies by scheme.
        verify: verify TLS certificates: False, True or a CA bundle path.
        connect_timeout: seconds to connect.
        read_timeout: seconds to wait for a response head.
        max_idle: direct connections kept open per host between requests: the
            requests in flight (`TransferConfig.connections`), so that none is
            made again (a round trip, and a TLS handshake).
    """

    def __init__(
        self,
        session: Callable[[], aiohttp.ClientSession],
        proxy: ProxyConfig,
        *,
        verify: bool | str,
        connect_timeout: float,
        read_timeout: float,
        max_idle: int,
    ) -> None:
        self._session = session
        self._proxy = proxy
        self._wire = WirePool(
            verify=verify,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            buffer_size=WIRE_BUFFER,
            max_idle=max_idle,
        )

    @asynccontextmanager
    async def get(
        self,
        url: str,
        headers: Mapping[str, str],
        *,
        uri: str,
        errors: ErrorTable = NETWORK_ERRORS,
        method: str = "GET",
    ) -> AsyncIterator[Fetched]:
        """Send GET (or HEAD) `url`, already encoded; yield the response's head.

        Raises:
            NetworkError: the connection failed or broke (through `errors`).
            TransferError: anything else `errors` maps.
        """
        proxy = self._proxy.for_url(url)
        if proxy is None:
            with map_errors(errors, uri=uri):
                response = await self._wire.request(url, headers, method=method)
            try:
                yield _WireFetched(response, errors)
            finally:
                self._wire.release(response)
            return
        # aiohttp only for proxies: the lean S3 path never imports it.
        import yarl

        from ._aiohttp import AIOHTTP_ERRORS, finish

        table = {**AIOHTTP_ERRORS, **errors}
        with map_errors(table, uri=uri):
            via_proxy = await self._session().request(
                method, yarl.URL(url, encoded=True), headers=dict(headers), proxy=proxy
            )
        try:
            yield _AiohttpFetched(via_proxy, table)
        finally:
            finish(via_proxy)

    @asynccontextmanager
    async def open(self, get: DataGet) -> AsyncIterator[RangeBody]:
        """Send `get`; yield its body once `get.accept` has passed the head.

        Raises:
            TransferError: what `get.accept` raises, or the request failed.
        """
        async with self.get(get.url, get.headers, uri=get.uri, errors=get.errors) as r:
            error_body = b""
            if r.status >= 300:
                with map_errors(get.errors, uri=get.uri):
                    error_body = await r.error_body(ERROR_BODY_LIMIT)
            got = get.accept(Head(r.status, r.headers, r.content_length, error_body))
            yield r.body(get.uri, got)

    def blocking(self, get: DataGet) -> BlockingGet | None:
        """`get` to send from a worker thread, or None when it goes through a proxy."""
        if self._proxy.for_url(get.url) is not None:
            return None
        return _BlockingGet(self._wire, get)

    async def aclose(self) -> None:
        """Close the idle direct connections (the session is the backend's)."""
        await self._wire.aclose()


class FetchedRanges:
    """`open_range` and `prepare_get` for the backends whose GETs use a `Fetcher`.

    A backend builds each GET in `_data_get`; the event loop's path sends it with
    `Fetcher.open`, the small-file lane with `Fetcher.blocking`.
    """

    async def _data_get(
        self, bucket: str, info: ObjectInfo, start: int, end: int, *, whole: bool
    ) -> tuple[DataGet, Fetcher]:
        """The GET of bytes ``[start, end)`` (the whole object with `whole`)."""
        raise NotImplementedError

    @asynccontextmanager
    async def open_range(
        self, bucket: str, info: ObjectInfo, start: int, end: int, *, whole: bool
    ) -> AsyncIterator[RangeBody]:
        """See `Backend.open_range`."""
        get, fetch = await self._data_get(bucket, info, start, end, whole=whole)
        async with fetch.open(get) as body:
            yield body

    async def prepare_get(self, bucket: str, info: ObjectInfo) -> BlockingGet | None:
        """See `Backend.prepare_get`."""
        get, fetch = await self._data_get(bucket, info, 0, info.size, whole=True)
        return fetch.blocking(get)


@cache
def _native_fields(
    fields: tuple[tuple[str, str], ...],
) -> tuple[tuple[str, int], ...]:
    """`fields` with the library's number of each CRC, those it computes only."""
    native = ((name, crc_algorithm(crc).native) for name, crc in fields)
    return tuple((name, kind) for name, kind in native if kind is not None)


class _BlockingGet:
    """A `DataGet` sent and read in one worker thread: see `BlockingGet`."""

    def __init__(self, pool: WirePool, get: DataGet) -> None:
        self._pool = pool
        self._get = get
        self._attempt = Attempt()
        self._response: WireResponse | None = None

    def send(self) -> BlockingBody:
        get = self._get
        with map_errors(get.errors, uri=get.uri):
            response = self._pool.request_blocking(
                get.url, get.headers, attempt=self._attempt
            )
            self._response = response
            error_body = b""
            if response.status >= 300:
                error_body = response.read_some_blocking(ERROR_BODY_LIMIT)
        length = response.content_length
        got = get.accept(Head(response.status, response.headers, length, error_body))
        return _WireBody(response, get.uri, got, get.errors)

    def fetch_to_file(
        self,
        fd: int,
        size: int,
        *,
        default_crc: int,
        path: Path,
        chunk: int,
        timeout: float,
    ) -> FetchedFile | None:
        if not recvfile.available():
            return None  # (before the table: without the library no CRC is native)
        get = self._get
        table = recvfile.checksum_table(_native_fields(get.crc_fields), default_crc)
        with map_errors(get.errors, uri=get.uri):
            got = self._pool.get_to_file_blocking(
                get.url,
                get.headers,
                fd=fd,
                size=size,
                table=table,
                chunk=chunk,
                path=path,
                timeout=timeout,
                attempt=self._attempt,
            )
        if got is None:
            return None
        info = get.accept(Head(got.status, got.headers, size, b""))
        return FetchedFile(info, got.received, got.crc_kind, got.crc)

    def abort(self) -> None:
        # The attempt holds the connection from before the head until the end.
        self._attempt.abort()

    def close(self) -> None:
        if self._response is not None:
            self._pool.release(self._response)
            self._response = None
