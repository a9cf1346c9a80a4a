"""Lazy registry of backends by scheme.

A backend module is imported only when a URI of its scheme is downloaded, so an
``https://`` download never pays for importing aiobotocore. A scheme whose extra is
not installed fails with the ``pip install`` line that fixes it.
"""

from __future__ import annotations

from importlib import import_module
from importlib.util import find_spec
from typing import TYPE_CHECKING, cast

from ..errors import BackendUnavailableError, InvalidURIError

if TYPE_CHECKING:
    from ._base import Backend

__all__ = ["SCHEMES", "backend_class", "extra_installed"]

#: scheme -> (module:class, extra, the import that the extra provides)
SCHEMES: dict[str, tuple[str, str, str]] = {
    "s3": ("storage_init.backends.s3:S3Backend", "s3", "aiobotocore"),
    "gs": ("storage_init.backends.gcs:GCSBackend", "gcs", "gcloud.aio.storage"),
    "az": ("storage_init.backends.azure:AzureBackend", "azure", "azure.storage.blob"),
    "http": ("storage_init.backends.http:PlainHTTPBackend", "", ""),
    "https": ("storage_init.backends.http:HTTPBackend", "", ""),
    "memory": ("storage_init.backends.memory:MemoryBackend", "", ""),
}

#: Schemes KServe accepts that this version cannot download yet.
_PLANNED = ("hf", "oci", "hdfs", "webhdfs")


def backend_class(scheme: str, uri: str = "") -> type[Backend]:
    """Return the backend class for `scheme`, importing it on first use.

    Raises:
        InvalidURIError: the scheme is unknown or not supported yet.
        BackendUnavailableError: the extra that the scheme needs is not installed.
    """
    entry = SCHEMES.get(scheme)
    if entry is None:
        supported = ", ".join(f"{s}://" for s in SCHEMES if s != "memory")
        if scheme in _PLANNED:
            reason = f"{scheme}:// is not supported yet (supported: {supported})"
        else:
            reason = f"unsupported scheme {scheme!r} (supported: {supported})"
        raise InvalidURIError(uri or f"{scheme}://", reason)
    target, extra, needs = entry
    module_name, _, class_name = target.partition(":")
    # find_spec, not an import: importing aiobotocore costs 240 ms that a lean S3
    # download never pays (`backends._s3lean`).
    if needs and not _installed(needs):
        raise BackendUnavailableError(scheme, extra, needs)
    module = import_module(module_name)
    return cast("type[Backend]", getattr(module, class_name))


def extra_installed(scheme: str) -> bool:
    """Whether `scheme` is known and its extra installed, importing neither."""
    entry = SCHEMES.get(scheme)
    return entry is not None and (not entry[2] or _installed(entry[2]))


def _installed(module: str) -> bool:
    """Whether `module` (dotted) can be imported, without importing it."""
    try:
        return find_spec(module) is not None
    except ImportError:  # a parent package is missing
        return False
