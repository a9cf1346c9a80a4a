"""What the backends that use aiohttp share (SDK sessions, probes, proxied GETs).

The error table for aiohttp's exceptions, the body that hands over aiohttp's
buffered chunks without copying them, and returning a response's connection to the
pool only when that is safe.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

import aiohttp

from ..config import READ_BUFFER
from ..errors import ErrorTable, NetworkError, TransferError, map_errors
from ._common import NETWORK_ERRORS, simple_error

if TYPE_CHECKING:
    from ..models import ObjectInfo

__all__ = ["AIOHTTP_ERRORS", "ChunkBody", "finish", "new_session"]

#: aiohttp's failures in our terms: a broken or timed-out connection is a
#: NetworkError (retried); TLS certificate failures are permanent.
AIOHTTP_ERRORS: ErrorTable = {
    aiohttp.ClientConnectorCertificateError: simple_error(
        TransferError, "TLS certificate verification failed"
    ),
    aiohttp.TooManyRedirects: simple_error(TransferError, "too many redirects"),
    aiohttp.ClientPayloadError: simple_error(NetworkError, "body cut short"),
    aiohttp.ClientError: simple_error(NetworkError, "connection error"),
    **NETWORK_ERRORS,
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


def finish(response: aiohttp.ClientResponse) -> None:
    """Return the connection to the pool if the body was read to its end.

    A connection with unread bytes cannot serve another request: it is closed.
    """
    if response.content.at_eof():
        response.release()
    else:
        response.close()
