"""storage-init: fast, verified model downloads from object storage.

The public API is exactly what this module re-exports::

    report = await storage_init.download("s3://bucket/models/llama", "/mnt/models")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__ as __version__

if TYPE_CHECKING:
    from .api import download as download
    from .api import download_many as download_many
    from .backends.memory import MemoryBackend as MemoryBackend
    from .config import AzureOptions as AzureOptions
    from .config import GCSOptions as GCSOptions
    from .config import HTTPOptions as HTTPOptions
    from .config import RetryConfig as RetryConfig
    from .config import S3Options as S3Options
    from .config import StorageConfig as StorageConfig
    from .config import TransferConfig as TransferConfig
    from .config import from_env as from_env
    from .errors import AccessDeniedError as AccessDeniedError
    from .errors import BackendUnavailableError as BackendUnavailableError
    from .errors import ConfigError as ConfigError
    from .errors import IntegrityError as IntegrityError
    from .errors import InvalidURIError as InvalidURIError
    from .errors import LocalIOError as LocalIOError
    from .errors import NetworkError as NetworkError
    from .errors import ObjectChangedError as ObjectChangedError
    from .errors import ObjectNotFoundError as ObjectNotFoundError
    from .errors import RemoteError as RemoteError
    from .errors import RetriesExhaustedError as RetriesExhaustedError
    from .errors import StorageInitError as StorageInitError
    from .errors import TransferError as TransferError
    from .errors import UnsafePathError as UnsafePathError
    from .models import DownloadReport as DownloadReport
    from .models import FileReport as FileReport
    from .models import ObjectInfo as ObjectInfo
    from .models import ProgressCallback as ProgressCallback
    from .models import TransferStats as TransferStats
    from .models import VerifyMode as VerifyMode

#: Public name -> the module that defines it. Imported on first use (PEP 562), so
#: that ``storage-init --version`` and ``import storage_init.errors`` do not pay
#: for the engine, anyio and asyncio (about 70 ms).
_LAZY = {
    "download": ".api",
    "download_many": ".api",
    "MemoryBackend": ".backends.memory",
    "AzureOptions": ".config",
    "GCSOptions": ".config",
    "HTTPOptions": ".config",
    "RetryConfig": ".config",
    "S3Options": ".config",
    "StorageConfig": ".config",
    "TransferConfig": ".config",
    "from_env": ".config",
    "AccessDeniedError": ".errors",
    "BackendUnavailableError": ".errors",
    "ConfigError": ".errors",
    "IntegrityError": ".errors",
    "InvalidURIError": ".errors",
    "LocalIOError": ".errors",
    "NetworkError": ".errors",
    "ObjectChangedError": ".errors",
    "ObjectNotFoundError": ".errors",
    "RemoteError": ".errors",
    "RetriesExhaustedError": ".errors",
    "StorageInitError": ".errors",
    "TransferError": ".errors",
    "UnsafePathError": ".errors",
    "DownloadReport": ".models",
    "FileReport": ".models",
    "ObjectInfo": ".models",
    "ProgressCallback": ".models",
    "TransferStats": ".models",
    "VerifyMode": ".models",
}


if not TYPE_CHECKING:
    # Hidden from type checkers, which would otherwise type every unknown name
    # (a typo) as Any; they see the imports above instead.

    def __getattr__(name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            msg = f"module {__name__!r} has no attribute {name!r}"
            raise AttributeError(msg)
        from importlib import import_module

        value = getattr(import_module(module, __name__), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = (
    "AccessDeniedError",
    "AzureOptions",
    "BackendUnavailableError",
    "ConfigError",
    "DownloadReport",
    "FileReport",
    "GCSOptions",
    "HTTPOptions",
    "IntegrityError",
    "InvalidURIError",
    "LocalIOError",
    "MemoryBackend",
    "NetworkError",
    "ObjectChangedError",
    "ObjectInfo",
    "ObjectNotFoundError",
    "ProgressCallback",
    "RemoteError",
    "RetriesExhaustedError",
    "RetryConfig",
    "S3Options",
    "StorageConfig",
    "StorageInitError",
    "TransferConfig",
    "TransferError",
    "TransferStats",
    "UnsafePathError",
    "VerifyMode",
    "__version__",
    "download",
    "download_many",
)
