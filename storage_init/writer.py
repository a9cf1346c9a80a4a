"""Temp files beside the destination: positional writes, atomic rename, cleanup.

A file is written as ``.<name>.<random>.partial`` in its destination directory, so
that the final `os.replace` is a rename within one filesystem: a reader of the
destination sees either no file or the complete, verified one. Every method here
blocks: the engine calls them from worker threads (several may `write` one file at
once, at different offsets) or, for small files, on the event loop.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import random
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import LocalIOError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["PARTIAL_SUFFIX", "WRITE_PIECE", "TempFile", "local_error"]

PARTIAL_SUFFIX = ".partial"
#: Bytes per pwrite: chunks are received 256 KiB at a time (fewer Python steps) but
#: written in pieces of this size. The kernel sizes page-cache folios to the write
#: (ext4 on Linux 6.18, large folios): 256 KiB writes ask for order-6 folios, and
#: on this VM, once another program had written with small writes (s5cmd, Go's
#: 32 KiB), those cost 1.5-4 s more system time per 2 GiB, spent copying into
#: the new folios (perf: copy_folio_from_iter_atomic, with writers spinning on the
#: inode lock meanwhile). 2 x 1 GiB model, each run right after an s5cmd run, by
#: hand: 256 KiB writes 3.5-5.0 s (system 3.3-5.9 s); 32 KiB pieces 2.05-2.24 s
#: (system 1.0-1.2 s), as s5cmd's 1.9-2.1 s; 64 KiB pieces 2.0-2.3 s, less steady.
WRITE_PIECE = 32 * 1024


def _write_pieces(fd: int, view: memoryview, offset: int) -> int:
    """Write all of `view` at `offset`, `WRITE_PIECE` bytes per pwrite at most.

    Raises:
        OSError: a write failed.
    """
    size = len(view)
    done = 0
    while done < size:
        wrote = os.pwrite(fd, view[done : done + WRITE_PIECE], offset + done)
        if not wrote:  # never on a local file; but never a loop forever
            raise OSError(errno.EIO, "the file took no bytes")
        done += wrote
    return size


def local_error(exc: OSError, path: Path | str) -> LocalIOError:
    """Translate an OSError on a local path into a `LocalIOError`, clearly worded."""
    reasons = {
        errno.ENOSPC: "no space left on device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied",
        errno.ENOTDIR: "a parent is not a directory",
        errno.EISDIR: "is a directory",
        errno.ENAMETOOLONG: "file name too long",
    }
    reason = reasons.get(exc.errno or 0, exc.strerror or str(exc))
    return LocalIOError(f"cannot write {path}: {reason}")


class TempFile:
    """A temp file beside `final` that becomes `final` once `commit` is called.

    Args:
        final: the destination path; its parent directory must exist.
        size: the expected size.
        preallocate: check that `size` bytes are free and give the file its size
            up front, so that a disk too small fails before any byte is fetched.
            Not worth its syscalls for small files. The check is not a
            reservation: a disk filled meanwhile still fails at write time, as
            cleanly.
        token: a name for a resumable temp file (``.NAME.TOKEN.partial``); an
            existing file of that name and size is reopened, not truncated, and
            `reopened` is set. Without it the name is random and always new.

    Raises:
        LocalIOError: the temp file cannot be created or preallocated.
    """

    def __init__(
        self,
        final: Path,
        size: int,
        *,
        preallocate: bool = True,
        token: str | None = None,
    ) -> None:
        self.final = final
        self.size = size
        self.reopened = False
        # Unique enough among concurrent runs (O_EXCL catches the rest), and unlike
        # `secrets`, no system call per file: Python's generator, which it reseeds
        # in a forked child.
        suffix = token or f"{random.getrandbits(32):08x}"
        # Strings, not `Path.with_name`: for a small file pathlib's parsing was
        # a tenth of the Python a lane worker ran per file (cProfile).
        directory, name = os.path.split(final)
        temp_name = f".{name[:200]}.{suffix}{PARTIAL_SUFFIX}"
        self._name = os.path.join(directory, temp_name)  # noqa: PTH118
        self._fd: int | None = None
        # Made here, not on first use: ranges of one file start in several
        # threads at once. 64 bytes >= sizeof(pthread_mutex_t) (40-48 on Linux;
        # zeroed, it is the static initializer of glibc and musl).
        self._mutex = ctypes.create_string_buffer(64)
        try:
            if token is not None:
                self._reopen()
            if self._fd is None:
                self._fd = os.open(
                    self._name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644
                )
                if size and preallocate:
                    self._preallocate(size)
        except OSError as exc:
            self.discard()
            raise local_error(exc, final) from exc

    def _reopen(self) -> None:
        """Open an existing temp file of the right size, or remove a wrong one."""
        try:
            fd = os.open(self._name, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        if os.fstat(fd).st_size == self.size:
            self._fd = fd
            self.reopened = True
            return
        os.close(fd)
        _unlink(self._name)

    @property
    def path(self) -> Path:
        """The temp file's path."""
        return Path(self._name)

    def _preallocate(self, size: int) -> None:
        # Not posix_fallocate: on ext4 its unwritten extents are converted as the
        # ranges land, which cost about 0.35 s of system CPU per 2 GiB written by 8
        # ranges at once (a prototype, 4 runs each by hand: 1.82-1.85 s wall with
        # it, 1.44-1.48 s without); a statvfs check keeps the early failure.
        assert self._fd is not None
        fs = os.fstatvfs(self._fd)
        if fs.f_bavail * fs.f_frsize < size:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        os.ftruncate(self._fd, size)

    @property
    def write_mutex(self) -> ctypes.Array[ctypes.c_char]:
        """A pthread mutex (zeroed: the static initializer) for native writers.

        Threads writing this file from C (`_recvfile`) take it around each
        chunk's writes. ext4 serialises writes to a file on its inode lock, whose
        waiters spin while the holder copies: 8 ranges of one 4 GiB file spent
        ~18 % of their CPU spinning there (perf), CPU the server needed. Waiting
        on this mutex, they sleep.
        """
        return self._mutex

    @property
    def fd(self) -> int:
        """The open descriptor, for reads by the verifier.

        Raises:
            LocalIOError: the file was already committed or discarded.
        """
        if self._fd is None:
            msg = f"temp file for {self.final} is closed"
            raise LocalIOError(msg)
        return self._fd

    def write(self, offset: int, buffers: Sequence[bytes | memoryview]) -> int:
        """Write `buffers` back to back at `offset`; return the bytes written.

        One pwrite per `WRITE_PIECE` bytes at most (see there for why).

        Raises:
            LocalIOError: the write failed (disk full, I/O error).
        """
        fd = self.fd
        total = 0
        try:
            for buf in buffers:
                total += _write_pieces(fd, memoryview(buf), offset + total)
        except OSError as exc:
            raise local_error(exc, self.final) from exc
        return total

    def commit(self) -> int:
        """Close the file and rename it to `final`, replacing any older file.

        Returns:
            The file's modification time in nanoseconds (a rename keeps it).

        Raises:
            LocalIOError: the rename failed.
        """
        fd, self._fd = self.fd, None
        try:
            mtime_ns = os.fstat(fd).st_mtime_ns
            os.close(fd)
            os.replace(self._name, self.final)  # noqa: PTH105 (see __init__)
        except OSError as exc:
            self.discard()
            raise local_error(exc, self.final) from exc
        return mtime_ns

    def discard(self) -> None:
        """Close and delete the temp file. Safe to call more than once."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        _unlink(self._name)


def _unlink(path: str) -> None:
    """Delete `path` if it exists.

    Raises:
        OSError: it exists and cannot be deleted.
    """
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # noqa: PTH108 (see TempFile.__init__)
