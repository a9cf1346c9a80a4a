"""The library entry points: `download` and `download_many`.

Both are coroutines that run inside the caller's event loop (asyncio): no
`asyncio.run`, no environment read, and no thread of their own: blocking file work
runs on the loop's anyio worker threads, which end with the loop.
"""

from __future__ import annotations

import os
from contextlib import AsyncExitStack
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

from .backends import backend_class
from .config import StorageConfig
from .engine import Engine, Pair
from .errors import LocalIOError, flatten_group
from .uri import parse_uri

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from .backends._base import Backend
    from .models import DownloadReport, ProgressCallback

__all__ = ["download", "download_many"]

StrPath = str | PathLike[str]


async def download(
    src: str,
    dest: StrPath,
    *,
    config: StorageConfig | None = None,
    progress: ProgressCallback | None = None,
    backends: Mapping[str, Backend] | None = None,
) -> DownloadReport:
    """Download `src` (an object or a prefix) into the directory `dest`.

    Args:
        src: a URI such as ``s3://bucket/models/llama``.
        dest: the destination directory; created if missing.
        config: transfer knobs and backend options; defaults apply when None.
        progress: called with a `TransferStats` snapshot as bytes land (large
            files) and as files finish (small ones, which land whole).
        backends: backend instances to use by scheme, instead of building them from
            `config`; the caller keeps ownership and closes them.

    Returns:
        The frozen report: one entry per file, with how it was verified.

    Raises:
        ConfigError: the URI, a destination or an option is invalid.
        ObjectNotFoundError: nothing exists at `src`.
        AccessDeniedError: the store refused the credentials.
        TransferError: any other failure; no partial file is left at a final path.
    """
    (report,) = await download_many(
        [(src, dest)], config=config, progress=progress, backends=backends
    )
    return report


async def download_many(
    pairs: Sequence[tuple[str, StrPath]],
    *,
    config: StorageConfig | None = None,
    progress: ProgressCallback | None = None,
    backends: Mapping[str, Backend] | None = None,
) -> tuple[DownloadReport, ...]:
    """Download several ``(src, dest)`` pairs concurrently, under shared limits.

    Arguments and errors are those of `download`. If several pairs fail at once,
    the first error is raised and the others are attached as its ``.failures``.

    Returns:
        One report per pair, in the order given.
    """
    config = config or StorageConfig()
    uris = [parse_uri(src) for src, _ in pairs]
    dests = [_prepare_dest(Path(dest)) for _, dest in pairs]
    async with AsyncExitStack() as stack:
        given = dict(backends or {})
        owned: dict[str, Backend] = {}
        for uri in uris:
            if uri.scheme not in given and uri.store not in owned:
                backend = backend_class(uri.scheme, uri.raw).from_config(config, uri)
                stack.push_async_callback(backend.aclose)
                owned[uri.store] = backend
        jobs = [
            Pair(uri, dest, given.get(uri.scheme) or owned[uri.store])
            for uri, dest in zip(uris, dests, strict=True)
        ]
        try:
            reports = await Engine(config, progress=progress).run(jobs)
        except ExceptionGroup as group:
            raise flatten_group(group) from None
    return tuple(reports)


def _prepare_dest(dest: Path) -> Path:
    """Create `dest` if needed and check it is a writable directory.

    Raises:
        LocalIOError: `dest` is a file, or cannot be created or written.
    """
    if dest.exists() and not dest.is_dir():
        msg = f"destination {dest} exists and is not a directory"
        raise LocalIOError(msg)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        msg = f"cannot create destination {dest}: {exc.strerror}"
        raise LocalIOError(msg) from None
    if not os.access(dest, os.W_OK | os.X_OK):
        msg = f"destination {dest} is not writable"
        raise LocalIOError(msg)
    return dest.absolute()
