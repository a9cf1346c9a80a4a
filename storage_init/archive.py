"""Unpack a downloaded model archive (.tar, .tar.gz, .tgz, .tar.bz2, .tar.xz, .zip).

KServe unpacks a source that is one archive file into the destination and deletes
the archive; storage-init does the same, defensively:

- every member name goes through `safe_relative`: absolute paths, ``..`` segments
  and NUL bytes are refused (zip-slip, tar-slip);
- symbolic and hard links must point inside the destination; device files, FIFOs
  and other special members are refused;
- the bytes actually written (not the sizes the headers claim) are counted against
  `max_bytes`, and members against `max_members`, so a bomb stops early;
- each file is written to a temp file beside its final path and renamed when
  complete, so no partial file sits at a final path.

Everything here blocks; the engine runs it in a thread.
"""

from __future__ import annotations

import os
import stat
from typing import IO, TYPE_CHECKING

from ._paths import safe_relative
from .errors import IntegrityError, UnsafePathError
from .writer import TempFile, local_error

if TYPE_CHECKING:
    import tarfile
    from collections.abc import Iterator
    from pathlib import Path, PurePosixPath

__all__ = ["ARCHIVE_SUFFIXES", "extract", "is_archive"]

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".zip")
_BLOCK = 1024 * 1024


def _corrupt() -> tuple[type[Exception], ...]:
    """What a damaged archive raises (BadGzipFile is an OSError: listed first).

    The archive modules load only when an archive is unpacked: importing them
    cost every run 8 ms of its start.
    """
    import gzip
    import lzma
    import tarfile
    import zipfile
    import zlib

    return (
        tarfile.TarError,
        zipfile.BadZipFile,
        gzip.BadGzipFile,
        EOFError,
        zlib.error,
        lzma.LZMAError,
    )


def is_archive(name: str) -> bool:
    """Whether KServe would unpack a file of this name."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


class _Budget:
    def __init__(self, max_bytes: int, max_members: int, archive: str) -> None:
        self.bytes_left = max_bytes
        self.members_left = max_members
        self._archive = archive
        self._max_bytes = max_bytes
        self._max_members = max_members

    def member(self) -> None:
        self.members_left -= 1
        if self.members_left < 0:
            msg = f"archive has more than {self._max_members} members"
            raise IntegrityError(msg, uri=self._archive)

    def spend(self, n: int) -> None:
        self.bytes_left -= n
        if self.bytes_left < 0:
            msg = f"archive unpacks to more than {self._max_bytes} bytes"
            raise IntegrityError(msg, uri=self._archive)


def _copy(source: IO[bytes], final: Path, budget: _Budget) -> None:
    """Stream `source` into `final` through a temp file, within the budget."""
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = TempFile(final, 0, preallocate=False)
    try:
        offset = 0
        while block := source.read(_BLOCK):
            budget.spend(len(block))
            temp.write(offset, [block])
            offset += len(block)
        temp.commit()
    except BaseException:
        temp.discard()
        raise


def _link_target(name: PurePosixPath, target: str, *, hard: bool, uri: str) -> str:
    """Check that a link stays inside the destination; return its target."""
    if target.startswith("/"):
        msg = f"link {name} points to an absolute path"
        raise UnsafePathError(msg, uri=uri)
    resolved = target if hard else os.path.normpath(str(name.parent / target))
    if resolved == ".." or resolved.startswith("../"):
        msg = f"link {name} points outside the destination"
        raise UnsafePathError(msg, uri=uri)
    return target


def _tar_members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while (member := tar.next()) is not None:
        yield member


def _extract_tar(path: Path, dest: Path, budget: _Budget, uri: str) -> int:
    import tarfile

    count = 0
    with tarfile.open(path, mode="r:*") as tar:
        for member in _tar_members(tar):
            budget.member()
            name = safe_relative(member.name, uri=uri)
            final = dest / name
            if member.isdir():
                final.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                source = tar.extractfile(member)
                assert source is not None
                with source:
                    _copy(source, final, budget)
                count += 1
            elif member.issym():
                target = _link_target(name, member.linkname, hard=False, uri=uri)
                final.parent.mkdir(parents=True, exist_ok=True)
                final.unlink(missing_ok=True)
                final.symlink_to(target)
                count += 1
            elif member.islnk():
                source_name = safe_relative(member.linkname, uri=uri)
                _link_target(name, str(source_name), hard=True, uri=uri)
                final.parent.mkdir(parents=True, exist_ok=True)
                final.unlink(missing_ok=True)
                os.link(dest / source_name, final)
                count += 1
            else:
                msg = f"archive member {member.name!r} is a device or special file"
                raise UnsafePathError(msg, uri=uri)
    return count


def _extract_zip(path: Path, dest: Path, budget: _Budget, uri: str) -> int:
    import zipfile

    count = 0
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            budget.member()
            name = safe_relative(info.filename, uri=uri)
            final = dest / name
            mode = info.external_attr >> 16
            if info.is_dir():
                final.mkdir(parents=True, exist_ok=True)
                continue
            kind = stat.S_IFMT(mode)  # zero when the writer stored no file type
            if kind and kind not in (stat.S_IFREG, stat.S_IFLNK):
                msg = f"archive member {info.filename!r} is a special file"
                raise UnsafePathError(msg, uri=uri)
            # Zip "symlinks" are written as regular files holding the target
            # path, as Python's zipfile does: nothing can point outside.
            with archive.open(info) as source:
                _copy(source, final, budget)
            count += 1
    return count


def extract(
    path: Path,
    dest: Path,
    *,
    max_bytes: int,
    max_members: int = 1_000_000,
    uri: str = "",
) -> int:
    """Unpack the archive at `path` into `dest`, then delete the archive.

    Args:
        path: the downloaded archive.
        dest: the directory to unpack into.
        max_bytes: the most bytes the members may add up to once unpacked.
        max_members: the most members the archive may hold.
        uri: the source, named in errors.

    Returns:
        The number of files (and links) unpacked.

    Raises:
        UnsafePathError: a member would land outside `dest`, or is a special file.
        IntegrityError: the archive is corrupt or larger than the limits.
        LocalIOError: the destination cannot be written.
    """
    budget = _Budget(max_bytes, max_members, uri)
    corrupt = _corrupt()
    try:
        if path.name.lower().endswith(".zip"):
            count = _extract_zip(path, dest, budget, uri)
        else:
            count = _extract_tar(path, dest, budget, uri)
    except corrupt as exc:
        detail = str(exc) or type(exc).__name__
        msg = f"cannot unpack {path.name}: {detail}"
        raise IntegrityError(msg, uri=uri) from exc
    except OSError as exc:
        raise local_error(exc, dest) from exc
    path.unlink()
    return count
