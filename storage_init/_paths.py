"""Map remote keys to local paths that cannot escape the destination. Pure."""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import PurePosixPath

from .errors import UnsafePathError

__all__ = ["is_selected", "safe_relative"]


def safe_relative(rel: str, *, uri: str = "") -> PurePosixPath:
    """Return `rel` as a relative path that stays inside its destination.

    Empty and ``.`` segments are dropped (``a//b`` is ``a/b``), as a file system
    would. A directory marker (``a/``) keeps meaning a directory to the caller.

    Raises:
        UnsafePathError: `rel` is absolute, has a ``..`` segment or a NUL byte,
            or names nothing.
    """
    if "\x00" in rel:
        msg = "key contains a NUL byte"
        raise UnsafePathError(msg, uri=uri)
    if rel.startswith("/"):
        msg = f"key {rel!r} is an absolute path"
        raise UnsafePathError(msg, uri=uri)
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if ".." in parts:
        msg = f"key {rel!r} escapes the destination"
        raise UnsafePathError(msg, uri=uri)
    if not parts:
        msg = f"key {rel!r} names no file"
        raise UnsafePathError(msg, uri=uri)
    return PurePosixPath(*parts)


def is_selected(rel: str, allow: tuple[str, ...], ignore: tuple[str, ...]) -> bool:
    """Whether `rel` passes KServe's allow list (if any) and then its ignore list."""
    if allow and not any(fnmatchcase(rel, p) for p in allow):
        return False
    return not any(fnmatchcase(rel, p) for p in ignore)
