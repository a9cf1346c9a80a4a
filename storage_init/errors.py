"""The exception tree of storage_init, and the helper that maps SDK errors onto it.

Everything storage_init raises on purpose derives from `StorageInitError`::

    StorageInitError                      base; everything we raise on purpose
    ├── ConfigError                       bad flag/env/options                  → exit 2
    │   ├── InvalidURIError               (.uri)
    │   └── BackendUnavailableError       extra not installed; names the pip extra
    └── TransferError                     (.uri, .attempts); runtime failures   → exit 1
        ├── ObjectNotFoundError           also a FileNotFoundError              → exit 3
        ├── AccessDeniedError             also a PermissionError                → exit 3
        ├── ObjectChangedError            ETag/generation changed mid-download
        ├── IntegrityError                size / checksum / Content-Range mismatch
        ├── UnsafePathError               a key would escape the destination
        ├── LocalIOError                  the destination cannot be written
        ├── RemoteError                   5xx, throttling, protocol errors (retry)
        ├── NetworkError                  reset, DNS, timeouts (retry)
        └── RetriesExhaustedError         (.last_error) after the retry budget

Retryability is a class property (`TransferError.retryable`), never string matching.
Messages never contain secrets: URIs are shown with their query string and userinfo
removed (`storage_init.uri.redact`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import ClassVar

from ._redact import redact

__all__ = [
    "AccessDeniedError",
    "BackendUnavailableError",
    "ConfigError",
    "IntegrityError",
    "InvalidURIError",
    "LocalIOError",
    "NetworkError",
    "ObjectChangedError",
    "ObjectNotFoundError",
    "RemoteError",
    "RetriesExhaustedError",
    "StorageInitError",
    "TransferError",
    "UnsafePathError",
    "flatten_group",
    "map_errors",
]


class StorageInitError(Exception):
    """Base class of every error storage_init raises on purpose."""

    #: Errors raised alongside this one by concurrent tasks (see `download`).
    failures: tuple[StorageInitError, ...] = ()


class ConfigError(StorageInitError):
    """Raised when a flag, an environment variable or an option is invalid."""


class InvalidURIError(ConfigError):
    """Raised when a source URI cannot be parsed or names an unsupported scheme."""

    def __init__(self, uri: str, reason: str) -> None:
        self.uri = redact(uri)
        self.reason = reason
        super().__init__(f"invalid URI {self.uri!r}: {reason}")


class BackendUnavailableError(ConfigError):
    """Raised when the extra that a scheme needs is not installed."""

    def __init__(self, scheme: str, extra: str, missing: str) -> None:
        self.scheme = scheme
        self.extra = extra
        super().__init__(
            f"{scheme}:// needs the {extra!r} extra ({missing} is not installed): "
            f"pip install 'storage-init[{extra}]'"
        )


class TransferError(StorageInitError):
    """Raised when a download fails at run time.

    Attributes:
        uri: the object (or prefix) concerned, redacted.
        attempts: how many attempts were made before giving up.
    """

    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, uri: str = "", attempts: int = 1) -> None:
        self.uri = redact(uri) if uri else ""
        self.attempts = attempts
        self.reason = message
        super().__init__(f"{self.uri}: {message}" if self.uri else message)


class ObjectNotFoundError(TransferError, FileNotFoundError):
    """Raised when the object or prefix does not exist (HTTP 404, no keys listed)."""


class AccessDeniedError(TransferError, PermissionError):
    """Raised when the store refuses the credentials (HTTP 401/403, bad keys)."""


class ObjectChangedError(TransferError):
    """Raised when the object changed during the download (HTTP 412 on If-Match)."""


class IntegrityError(TransferError):
    """Raised when a size, checksum or Content-Range is not what was expected."""


class UnsafePathError(TransferError):
    """Raised when a remote key would be written outside the destination."""


class LocalIOError(TransferError):
    """Raised when the destination cannot be written: disk full, read-only, ..."""


class RemoteError(TransferError):
    """Raised on server errors (5xx), throttling and protocol errors; retryable."""

    retryable = True


class NetworkError(TransferError):
    """Raised on connection resets, DNS failures, truncated bodies and timeouts."""

    retryable = True


class RetriesExhaustedError(TransferError):
    """Raised when a retryable error persisted through the whole retry budget."""

    def __init__(self, last_error: TransferError, *, attempts: int) -> None:
        self.last_error = last_error
        super().__init__(
            f"gave up after {attempts} attempts: {last_error.reason}",
            uri=last_error.uri,
            attempts=attempts,
        )


#: Maps an exception type to a function building our error from it and the URI.
ErrorTable = Mapping[type[BaseException], Callable[[BaseException, str], TransferError]]


@contextmanager
def map_errors(table: ErrorTable, *, uri: str) -> Iterator[None]:
    """Translate SDK exceptions into the storage_init tree, keeping the cause.

    The first entry of `table` whose type matches wins, so list subclasses first.
    Our own errors and anything not in the table pass through unchanged.

    Raises:
        TransferError: the translated error, with the original as ``__cause__``.
    """
    try:
        yield
    except StorageInitError:
        raise
    except Exception as exc:
        for exc_type, build in table.items():
            if isinstance(exc, exc_type):
                raise build(exc, uri) from exc
        raise


def flatten_group(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """Return the first `StorageInitError` in `group`, the others as `.failures`.

    Public functions never leak an ExceptionGroup of our own errors. If any member
    is not ours (a bug, a KeyboardInterrupt), the group itself is returned.
    """
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    ours = [e for e in leaves if isinstance(e, StorageInitError)]
    if len(ours) != len(leaves) or not ours:
        return group
    first = ours[0]
    first.failures = tuple(ours[1:])
    return first
