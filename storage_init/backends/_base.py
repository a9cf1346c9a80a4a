"""The backend contract: the few operations the engine needs from a store.

A backend is created once per store (`ObjectURI.store`: the scheme, or for Azure Blob
URLs the account and its SAS) and per download, shared by every source/destination
pair of that store, and closed with `aclose`. Every method translates the SDK's
errors into the `storage_init.errors` tree at this boundary (`map_errors`): SDK
exceptions never reach the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Protocol, cast, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from contextlib import AbstractAsyncContextManager
    from pathlib import Path

    from .._recvfile import FileRun
    from ..config import StorageConfig
    from ..models import ObjectInfo
    from ..uri import ObjectURI

__all__ = [
    "Backend",
    "BlockingBody",
    "BlockingGet",
    "FetchedFile",
    "RangeBody",
    "as_blocking",
]


class RangeBody(Protocol):
    """The body of one GET, read in order.

    Attributes:
        info: what the response headers say about the object (ETag, checksums),
            or None when they say nothing new.
    """

    info: ObjectInfo | None

    async def read(self, size_hint: int) -> bytes | memoryview:
        """Return the next bytes of the body; an empty result at its end.

        Chunks are what the transport has buffered, without copies to join them:
        `size_hint` is a preference, not a limit. A `memoryview` is a view of the
        connection's buffer, valid only until the next read: consume it first.

        Raises:
            NetworkError: the connection broke or timed out.
        """
        ...


@runtime_checkable
class BlockingBody(RangeBody, Protocol):
    """A body that a worker thread can read without the event loop.

    The engine reads such a body, writes it and updates its CRC in one worker
    thread per request (see `backends._wire` for why).
    """

    def read_blocking(self, size: int, timeout: float) -> memoryview:
        """Return the next `size` bytes of the body (fewer at its end; empty after).

        Blocks. The view is valid only until the next read.

        Raises:
            NetworkError: the connection broke, or no byte came for `timeout` s.
        """
        ...

    def receive_to_file(
        self, run: FileRun, count: int, chunk: int, timeout: float
    ) -> bool:
        """Receive the next `count` bytes into `run`'s file, CRC and all, if it can.

        Blocks. Does what `read_blocking` of `chunk`-byte chunks and their writes
        would, natively (`_recvfile`); `run` counts what was done, whatever the
        outcome.

        Returns:
            False, having done nothing, when this body cannot (TLS, chunked
            framing, more than a chunk or `count` held from the head, no
            native loop): read it.

        Raises:
            NetworkError: the connection broke, or no byte came for `timeout` s.
            LocalIOError: a write to the file failed.
        """
        ...

    def abort(self) -> None:
        """Break the connection off from another thread: a read returns promptly."""
        ...


# A NamedTuple, not a frozen dataclass: defining it at import costs a tenth
# (README, "Start-up is mostly imports").
class FetchedFile(NamedTuple):
    """A whole object `BlockingGet.fetch_to_file` wrote to a file.

    Attributes:
        info: what the response headers say of the object, as `RangeBody.info`.
        received: bytes written, from offset 0.
        crc_kind: the library's number of the CRC computed over them (`_crc`),
            or -1 for none.
        crc: that CRC.
    """

    info: ObjectInfo | None
    received: int
    crc_kind: int
    crc: int


#: Per concrete body type: whether it is a `BlockingBody`.
_blocking_types: dict[type, bool] = {}


def as_blocking(body: RangeBody) -> BlockingBody | None:
    """`body` as a `BlockingBody` if its type is one, else None.

    The same answer as ``isinstance(body, BlockingBody)``, asked once per type:
    a runtime-checkable Protocol's check looks up every member each time, ~40 us
    on Python 3.11, and the engine asks for every range it fetches. The members
    are methods, so the answer is the class's.
    """
    kind = type(body)
    known = _blocking_types.get(kind)
    if known is None:
        known = _blocking_types[kind] = isinstance(body, BlockingBody)
    return cast("BlockingBody", body) if known else None


class BlockingGet(Protocol):
    """A whole-object GET, prepared (signed) on the event loop, sent from a thread.

    One worker thread calls `fetch_to_file`, or `send` and reads the body, then
    calls `close`; `abort` may come from any thread meanwhile.
    """

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
        """Send the request and write the `size`-byte body into file `fd`, natively.

        Blocks. The request, the head and the body go in one native call
        (`_recvfile.get_to_file`), which computes the CRC that the response's
        checksum fields name (else `default_crc`, a library CRC number or -1),
        receiving `chunk` bytes at a time; a wait of more than `timeout` seconds
        fails. The head is checked as `send` checks it, once the body is written.

        Returns:
            What was written; or None, when this GET cannot go natively (TLS,
            no native library) or its response is not a plain 200 of `size`
            bytes: nothing was written, and `send` sends it the usual way.

        Raises:
            TransferError: as `send`; `LocalIOError` when a write fails.
        """
        ...

    def send(self) -> BlockingBody:
        """Send the request and return its body once the head has been checked.

        Blocks. The body's `info` is what the headers say of the object.

        Raises:
            TransferError: as `Backend.open_range` (errors mapped at this boundary).
        """
        ...

    def abort(self) -> None:
        """Break the request off: `send` or a read of its body returns promptly."""
        ...

    def close(self) -> None:
        """Give the connection back for reuse if the body was read to its end."""
        ...


class Backend(Protocol):
    """Operations on one kind of store."""

    @classmethod
    def from_config(
        cls, config: StorageConfig, uri: ObjectURI | None = None
    ) -> Backend:
        """Build the backend from its options in `config`, for `uri`'s store.

        Raises:
            ConfigError: the options are invalid.
        """
        ...

    async def stat(self, bucket: str, key: str) -> ObjectInfo | None:
        """Return what the store says of `key`, or None if there is no such object.

        Raises:
            AccessDeniedError: the credentials are refused.
            TransferError: any other failure.
        """
        ...

    def list_objects(self, bucket: str, prefix: str) -> AsyncIterator[ObjectInfo]:
        """Yield every object whose key starts with `prefix`, page by page.

        Raises:
            ObjectNotFoundError: the bucket does not exist.
            AccessDeniedError: listing is refused.
        """
        ...

    async def describe(self, bucket: str, info: ObjectInfo) -> ObjectInfo:
        """Return `info` completed with the stored checksums and part count.

        Raises:
            ObjectChangedError: the object no longer has the ETag in `info`.
            TransferError: any other failure.
        """
        ...

    async def part_sizes(self, bucket: str, info: ObjectInfo) -> list[int]:
        """Return the lengths of the upload's parts, in order.

        Raises:
            IntegrityError: the parts do not add up to the object size.
            TransferError: any other failure.
        """
        ...

    def open_range(
        self, bucket: str, info: ObjectInfo, start: int, end: int, *, whole: bool
    ) -> AbstractAsyncContextManager[RangeBody]:
        """Open a GET of bytes ``[start, end)`` pinned to ``info.etag``.

        With `whole`, the request asks for the entire object without a Range header,
        so that stores return its checksums in the headers.

        Raises:
            ObjectChangedError: the ETag no longer matches (412).
            IntegrityError: the Content-Range is not the one asked for.
            ObjectNotFoundError, AccessDeniedError, RemoteError, NetworkError.
        """
        ...

    async def prepare_get(self, bucket: str, info: ObjectInfo) -> BlockingGet | None:
        """Prepare a GET of the whole object, pinned to ``info.etag``, for a thread.

        As `open_range` with `whole`, but sent and read by one worker thread: the
        engine's path for small files. None when this store's bodies can only be
        read on the event loop (through a proxy, from memory).

        Raises:
            TransferError: preparing failed (credentials could not be loaded, say).
        """
        ...

    async def aclose(self) -> None:
        """Close connections. The backend cannot be used afterwards."""
        ...
