"""What every backend that GETs bytes with aiohttp shares.

The error table for aiohttp's exceptions, the body that hands over aiohttp's
buffered chunks without copying them, and returning a response's connection to the
pool only when that is safe.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING

import aiohttp

from .._redact import redact_text
from ..config import READ_BUFFER
from ..errors import (
    AccessDeniedError,
    ErrorTable,
    IntegrityError,
    NetworkError,
    ObjectChangedError,
    ObjectNotFoundError,
    RemoteError,
    TransferError,
    map_errors,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..models import ObjectInfo
    from ._fetch import Fetched

__all__ = [
    "AIOHTTP_ERRORS",
    "ChunkBody",
    "WholeObjects",
    "check_range",
    "finish",
    "new_session",
    "simple_error",
    "status_error",
]


class WholeObjects:
    """Defaults for stores whose listings say all, and that keep no upload parts."""

    async def describe(self, bucket: str, info: ObjectInfo) -> ObjectInfo:
        """See `Backend.describe`: the listing (or `stat`) already said everything."""
        del bucket
        return info

    async def part_sizes(self, bucket: str, info: ObjectInfo) -> list[int]:
        """See `Backend.part_sizes`: one part, the whole object."""
        del bucket
        return [info.size]


def simple_error(
    kind: type[TransferError], prefix: str
) -> Callable[[BaseException, str], TransferError]:
    """An error-table entry: `kind` with `prefix` and the (redacted) SDK message."""

    def build(exc: BaseException, uri: str) -> TransferError:
        detail = redact_text(str(exc)) or type(exc).__name__
        return kind(f"{prefix}: {detail}", uri=uri)

    return build


#: aiohttp's failures in our terms: a broken or timed-out connection is a
#: NetworkError (retried); TLS certificate failures are permanent.
AIOHTTP_ERRORS: ErrorTable = {
    aiohttp.ClientConnectorCertificateError: simple_error(
        TransferError, "TLS certificate verification failed"
    ),
    aiohttp.TooManyRedirects: simple_error(TransferError, "too many redirects"),
    aiohttp.ClientPayloadError: simple_error(NetworkError, "body cut short"),
    aiohttp.ClientError: simple_error(NetworkError, "connection error"),
    asyncio.TimeoutError: simple_error(NetworkError, "timed out"),
    OSError: simple_error(NetworkError, "connection error"),
}


class ChunkBody:
    """A GET body, read chunk by chunk as aiohttp buffered it.

    `readany` hands over the buffered chunks as they are; reading n bytes at a time
    would join them into new strings, a copy of every byte. Lengths are checked by
    the engine (a cut connection raises here), checksums by `verify`.
    """

    def __init__(
        self,
        content: aiohttp.StreamReader,
        uri: str,
        info: ObjectInfo | None = None,
        errors: ErrorTable = AIOHTTP_ERRORS,
    ) -> None:
        self._content = content
        self._uri = uri
        self._errors = errors
        self.info = info

    async def read(self, size_hint: int) -> bytes:
        """See `RangeBody.read`."""
        del size_hint
        with map_errors(self._errors, uri=self._uri):
            return await self._content.readany()


def new_session(
    *,
    max_connections: int,
    verify: bool | str,
    connect_timeout: float,
    read_timeout: float,
) -> aiohttp.ClientSession:
    """The session for a backend's GETs.

    Args:
        max_connections: size of the connection pool.
        verify: verify TLS certificates (False, True, or a CA bundle path).
        connect_timeout: seconds to connect.
        read_timeout: seconds without a byte before a read fails.

    trust_env stays off: it would look up proxies and .netrc in a thread on every
    request; proxies come from `ProxyConfig`, read once by `from_env`.
    """
    tls: ssl.SSLContext | bool = verify is not False
    if isinstance(verify, str):
        tls = ssl.create_default_context(cafile=verify)
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=max_connections, ssl=tls),
        timeout=aiohttp.ClientTimeout(
            sock_connect=connect_timeout, sock_read=read_timeout
        ),
        auto_decompress=False,
        read_bufsize=READ_BUFFER,
    )


def status_error(status: int, uri: str, detail: str = "") -> TransferError:
    """Map an HTTP error status onto the error tree, for every backend.

    Args:
        status: the HTTP status.
        uri: the object concerned.
        detail: what the server said (an error code and message), already redacted.
    """
    text = f"{status}: {detail}" if detail else str(status)
    if status in (404, 410):
        return ObjectNotFoundError(f"not found ({text})", uri=uri)
    if status in (401, 403):
        return AccessDeniedError(f"access denied ({text})", uri=uri)
    if status == 412:
        return ObjectChangedError("object changed during the download", uri=uri)
    if status == 416:
        return IntegrityError(f"range not satisfiable ({text})", uri=uri)
    if status >= 500 or status == 429:
        return RemoteError(f"server error ({text})", uri=uri)
    return TransferError(f"request failed ({text})", uri=uri)


def check_range(
    response: Fetched | aiohttp.ClientResponse,
    start: int,
    end: int,
    size: int,
    uri: str,
) -> None:
    """Check that a ranged GET answered 206 with exactly bytes ``[start, end)``.

    Raises:
        IntegrityError: any other status or Content-Range.
    """
    expected = f"bytes {start}-{end - 1}/{size}"
    got = response.headers.get("Content-Range")
    if response.status != 206 or got != expected:
        msg = f"asked for {expected}, got {response.status} Content-Range {got!r}"
        raise IntegrityError(msg, uri=uri)


def finish(response: aiohttp.ClientResponse) -> None:
    """Return the connection to the pool if the body was read to its end.

    A connection with unread bytes cannot serve another request: it is closed.
    """
    if response.content.at_eof():
        response.release()
    else:
        response.close()
