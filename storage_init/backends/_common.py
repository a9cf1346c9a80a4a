"""What every backend shares, whichever HTTP client it uses.

The mapping of HTTP statuses and network failures onto the error tree, the check
of a ranged response, and the defaults of stores that keep no upload parts. No
aiohttp here: the lean S3 path never imports it (about 95 ms of start-up).
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Protocol

from .._redact import redact_text
from ..errors import (
    AccessDeniedError,
    ErrorTable,
    IntegrityError,
    NetworkError,
    ObjectChangedError,
    ObjectNotFoundError,
    RemoteError,
    TransferError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ..models import ObjectInfo

__all__ = [
    "FIRST_PAGE_SIZE",
    "NETWORK_ERRORS",
    "Response",
    "WholeObjects",
    "check_range",
    "simple_error",
    "status_error",
]

#: Objects asked for in a listing's first page; later pages take the configured
#: size. No file starts before the first page is in and parsed, and a store
#: answers 100 keys sooner than 1000: the engine then works on those while the
#: next page is on its way (`Engine._list_into`). 1000 small files on SeaweedFS:
#: the first GET 193 ms after start, not 262-275 (medians of 10, by hand with a
#: scratch in-process timer; README, How it works).
FIRST_PAGE_SIZE = 100


class Response(Protocol):
    """The part of a response that `check_range` reads."""

    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...


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


#: Failures of any connection: broken, refused or timed out (retried); a refused
#: certificate is permanent.
NETWORK_ERRORS: ErrorTable = {
    ssl.SSLCertVerificationError: simple_error(
        TransferError, "TLS certificate verification failed"
    ),
    TimeoutError: simple_error(NetworkError, "timed out"),
    OSError: simple_error(NetworkError, "connection error"),
}


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
    response: Response,
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
