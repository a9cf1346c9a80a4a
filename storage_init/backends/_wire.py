"""A lean HTTP/1.1 client for the data GETs: blocking sockets in worker threads.

Each request runs in a worker thread on a blocking socket, and the engine reads its
body in that thread too: it receives into the connection's buffer, writes the
bytes at their offset and updates their CRC on the same core, without waking the
event loop. One event loop doing all of that for every stream left the 2-core
benchmark machine idle for 1.8-3.6 CPU-seconds per 2 GiB downloaded (read from
``/proc/stat`` around alternating runs, by hand) while s5cmd left 0.2-0.6: the
loop could only serve one stream at a time, and SeaweedFS waited on it. A
prototype with eight threads left as little idle as s5cmd and came within 10 % of
its wall time (medians 3.04 and 2.81 s, 4 runs each).

aiohttp is not used here because it copies every body byte twice in user space and
allocates a bytes object per read; the kernel writes straight into one
preallocated buffer per connection instead (the first version of this client, on
asyncio's ``BufferedProtocol``, cut user CPU from 0.84-0.89 s to 0.20-0.28 s per
2 GiB from nginx, with a fifth of the page faults; `/usr/bin/time`, `perf stat`,
by hand).

Only what data GETs need: GET and HEAD with headers, keep-alive reuse, TLS, bodies
framed by Content-Length, chunked encoding or the end of the connection. No
proxies, redirects or cookies: callers send those requests through aiohttp.

A receive that waits longer than the timeout without a byte fails (``SO_RCVTIMEO``
on plain sockets, so that one ``MSG_WAITALL`` receive fills a chunk; Python's own
timeout under TLS), so a blocked thread always returns. `abort`
shuts a connection down from another thread, which makes a blocked receive return
at once: that is how a cancelled caller gets its thread back.

Memory per connection is its buffer plus the kernel's socket buffer, whatever the
body size: nothing is read before the reader asks for it.
"""

from __future__ import annotations

import contextlib
import functools
import mmap
import socket
import ssl
import struct
import threading
from collections import defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple, TypeVar, overload
from urllib.parse import urlsplit

from .. import _recvfile as recvfile
from .._threads import run_abortable

if TYPE_CHECKING:
    import ctypes
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from .._recvfile import FileRun

__all__ = [
    "Attempt",
    "Headers",
    "WireError",
    "WireFile",
    "WirePool",
    "WireResponse",
    "drop_ahead",
]

T = TypeVar("T")

#: Largest response head (status line and headers) accepted.
MAX_HEAD = 64 * 1024
_CHUNK_SCRATCH = 64 * 1024
#: Bytes asked for while reading a head: little of the body comes with it (copied).
_HEAD_READ = 16 * 1024


class WireError(ConnectionError):
    """The connection broke, or the server's response is not valid HTTP/1.1."""


class Headers(Mapping[str, str]):
    """A response's header fields, read-only, looked up whatever the case.

    A name sent more than once has its values joined with ", ", as HTTP allows
    for every field a client reads here; Content-Length is kept once (differing
    values are refused by `_parse_head`). Iteration gives the names in lower
    case. (multidict did this job; importing it cost 3-4 ms of every start, on
    the way to the first request.)
    """

    __slots__ = ("_fields",)

    def __init__(self, fields: dict[str, str] | None = None) -> None:
        #: lower-case name -> value
        self._fields = fields or {}

    def __getitem__(self, name: str) -> str:
        return self._fields[name.lower()]

    # `Mapping`'s get and `in` go through __getitem__ and a KeyError: a small
    # file's response is asked a dozen names, most of them absent.
    @overload
    def get(self, name: str, /) -> str | None: ...
    @overload
    def get(self, name: str, /, default: str | T) -> str | T: ...
    def get(self, name: str, /, default: str | T | None = None) -> str | T | None:
        return self._fields.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"


def _parse_head(head: bytes) -> tuple[int, Headers]:
    """Parse a response head (without the blank line) into status and headers.

    Raises:
        WireError: the status line or a header line is malformed.
    """
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        msg = "malformed HTTP status line"
        raise WireError(msg)
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            msg = "malformed HTTP header line"
            raise WireError(msg)
        name, value = name.lower(), value.strip()
        seen = fields.get(name)
        if seen is None:
            fields[name] = value
        elif name == "content-length":
            # Two lengths leave the body's end ambiguous (RFC 9112, 6.3).
            if value != seen:
                msg = "conflicting Content-Length headers"
                raise WireError(msg)
        else:
            fields[name] = f"{seen}, {value}"
    return int(code), Headers(fields)


def _closes(headers: Headers) -> bool:
    """Whether the server says it closes the connection after this response."""
    options = headers.get("Connection", "").lower().split(",")
    return "close" in (option.strip() for option in options)


def _timeval(seconds: float) -> bytes:
    """`seconds` as the ``struct timeval`` that SO_RCVTIMEO takes (0 would be never)."""
    seconds = max(seconds, 0.001)
    whole = int(seconds)
    return struct.pack("@ll", whole, int((seconds - whole) * 1e6))


def _buffer(size: int) -> mmap.mmap:
    """A body buffer of `size` bytes whose pages are made only as bytes land in them.

    A bytearray is zero-filled, every page of it, when made: 64 connections'
    256 KiB buffers were 16 MiB of page faults and RSS for bodies of 100 KiB.
    An anonymous map has no pages until they are written (here by the kernel's
    receive, one page at a time): a connection holds what its largest body
    touched, whatever its buffer's size.
    """
    # Private: shared anonymous memory is shmem, whose faults cost more.
    return mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


def _open_socket(host: str, port: int, timeout: float | None) -> socket.socket:
    """A TCP connection to `host`, tried address by address, `timeout` per connect.

    As `socket.create_connection`, but an ASCII host goes to getaddrinfo as
    bytes: a str is encoded with the "idna" codec, whose first use imports
    encodings.idna, stringprep and unicodedata, 5.5-5.9 ms in front of the
    first request (by hand, 5 runs of a first ``getaddrinfo("127.0.0.1", ...)``;
    as bytes 0.04 ms).

    Raises:
        OSError: getaddrinfo's failure, or the last address's.
    """
    name: str | bytes = host.encode("ascii") if host.isascii() else host
    failure: OSError | None = None
    for family, kind, proto, _, address in socket.getaddrinfo(
        name, port, 0, socket.SOCK_STREAM
    ):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
        except OSError as exc:
            sock.close()
            failure = exc
            continue
        return sock
    if failure is None:
        msg = f"no address for {host}"
        raise OSError(msg)
    raise failure


class _Connection:
    """One keep-alive connection on a blocking socket, used by one thread at a time.

    `abort` (from any thread) is the exception: it shuts the socket down under a
    receive, which then returns.
    """

    def __init__(self, sock: socket.socket, buffer_size: int) -> None:
        self._sock = sock
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._buf = _buffer(buffer_size)
        self._view = memoryview(self._buf)
        self._timeout = -1.0
        self.reusable = True
        self._reset(head=False)

    def _reset(self, *, head: bool) -> None:
        self._no_body = head
        self._early = b""  # body bytes that came with the head, not yet handed out
        self._remaining: int | None = None  # bytes still to receive; None: to EOF
        self._chunked: _ChunkDecoder | None = None
        #: The whole body was received and handed out.
        self.done = False
        self.status = 0
        self.headers = Headers()

    def set_timeout(self, seconds: float) -> None:
        """Fail a send or a receive that waits `seconds` without progress."""
        if seconds == self._timeout:
            return
        self._timeout = seconds
        if self._tls:
            # Python's ssl retries a read that SO_RCVTIMEO interrupted, forever;
            # its own timeout (a poll before each read) works.
            self._sock.settimeout(seconds)
            return
        value = _timeval(seconds)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)

    def _timed_out(self) -> TimeoutError:
        self.reusable = False
        return TimeoutError(f"no data for {self._timeout:g} s")

    def _recv(self, view: memoryview, *, fill: bool) -> int:
        """Receive into `view`; with `fill`, until it is full or the stream ends.

        Raises:
            TimeoutError: nothing arrived within the timeout.
            OSError: the connection broke.
        """
        try:
            if fill and not self._tls:
                # One system call per chunk, not one per segment that arrived.
                return self._sock.recv_into(view, len(view), socket.MSG_WAITALL)
            return self._sock.recv_into(view)  # TLS: one record at most
        except (BlockingIOError, TimeoutError):
            raise self._timed_out() from None
        except OSError:
            self.reusable = False
            raise

    # -- a request ---------------------------------------------------------------

    def send(self, request: bytes, *, head: bool = False) -> None:
        """Send `request` (a HEAD when `head`) and read the response's head.

        Raises:
            WireError: the connection broke, or the head is malformed.
            TimeoutError: the server did not answer within the timeout.
            OSError: the connection broke.
        """
        self.send_only(request, head=head)
        self.read_head()

    def send_only(self, request: bytes, *, head: bool = False) -> None:
        """Send `request` (a HEAD when `head`); `read_head` reads the answer.

        Raises:
            TimeoutError: the send made no progress within the timeout.
            OSError: the connection broke.
        """
        self._reset(head=head)
        try:
            self._sock.sendall(request)
        except (BlockingIOError, TimeoutError):
            raise self._timed_out() from None
        except OSError:
            self.reusable = False
            raise

    def read_head(self) -> None:
        """Read the head of the response to the request sent last.

        Raises:
            WireError: the connection broke, or the head is malformed.
            TimeoutError: the server did not answer within the timeout.
            OSError: the connection broke.
        """
        raw = bytearray()
        scratch = self._view[:_HEAD_READ]
        while True:
            end = raw.find(b"\r\n\r\n")
            if end < 0:
                if len(raw) > MAX_HEAD:
                    self.reusable = False
                    msg = "response head too large"
                    raise WireError(msg)
                n = self._recv(scratch, fill=False)
                if not n:
                    self.reusable = False
                    msg = "the server closed the connection before responding"
                    raise WireError(msg)
                raw += scratch[:n]
                continue
            try:
                status, headers = _parse_head(bytes(raw[:end]))
            except WireError:
                self.reusable = False
                raise
            del raw[: end + 4]
            if not 100 <= status < 200:  # interim responses are skipped
                break
        self._start_body(status, headers, bytes(raw))

    def _start_body(self, status: int, headers: Headers, rest: bytes) -> None:
        self.status, self.headers = status, headers
        if _closes(headers):
            self.reusable = False
        if self._no_body:
            if rest:
                self.reusable = False
                msg = "the server sent a body after a HEAD"
                raise WireError(msg)
            self.done = True
            return
        if "chunked" in headers.get("Transfer-Encoding", "").lower():
            self._chunked = _ChunkDecoder()
            self._chunked.feed(rest)
            return
        length = headers.get("Content-Length")
        if status in (204, 304):
            self._remaining = 0
        elif length is not None and length.isdigit():
            self._remaining = int(length)
        else:
            self.reusable = False  # the body ends with the connection
        if self._remaining is not None:
            if len(rest) > self._remaining:
                self.reusable = False
                msg = "the server sent more than Content-Length"
                raise WireError(msg)
            self._remaining -= len(rest)
        self._early = rest
        self.done = not rest and self._remaining == 0

    def read(self, size: int) -> memoryview:
        """The next body bytes: `size` (at most the buffer) unless the body ends.

        The view is valid until the next call, which reuses the buffer; it is empty
        at the end of the body.

        Raises:
            WireError: the connection closed mid-body, or the framing is malformed.
            TimeoutError: nothing arrived within the timeout.
            OSError: the connection broke.
        """
        early, self._early = self._early, b""
        if self.done and not early:
            return self._view[:0]
        want = size if size > 0 else len(self._buf)
        if want > len(self._buf):
            # The reader's chunk size rules: the buffer grows to it, once.
            self._buf = _buffer(want)
            self._view = memoryview(self._buf)
        if self._chunked is not None:  # (its early bytes went to the decoder)
            return self._read_chunked(self._view[:want])
        if self._remaining is not None:
            want = min(want, len(early) + self._remaining)
        got = len(early)
        if got >= want:
            self.done = self._remaining == 0
            return memoryview(early)
        # The bytes that came with the head start the chunk: a small body is then
        # one receive and one write, not two of each.
        view = self._view[:want]
        view[:got] = early
        while got < want:
            n = self._recv(view[got:], fill=True)
            if not n:
                break
            got += n
        if self._remaining is None:
            self.done = got < want  # the connection ended: so did the body
        else:
            self._remaining -= got - len(early)
            if got < want:
                self.reusable = False
                msg = "the server closed the connection mid-response"
                raise WireError(msg)
            self.done = self._remaining == 0
        return view[:got]

    def receive_to_file(self, run: FileRun, count: int, chunk: int) -> bool:
        """Receive the body's next `count` bytes straight into `run`'s file.

        The native loop (`_recvfile`) does what `read` and the reader's writes and
        CRC would, with one release of the GIL; bytes that came with the head go
        first, so that a small body is a single call. `run` counts what was done,
        whatever the outcome.

        Returns:
            False, having done nothing, unless the connection can: plain TCP, a
            body framed by Content-Length with `count` bytes or more still to
            come (at most a chunk of them held from the head), and the loop
            available.

        Raises:
            WireError: the connection closed mid-body.
            TimeoutError: nothing arrived within the timeout.
            OSError: the connection broke.
            LocalIOError: a write to the file failed.
        """
        remaining, early = self._remaining, self._early
        if (
            self._tls
            or self._chunked is not None
            or remaining is None
            or count > remaining + len(early)
            or len(early) > min(chunk, count)
            or not recvfile.available()
        ):
            return False
        if len(self._buf) < chunk:
            self._buf = _buffer(chunk)
            self._view = memoryview(self._buf)
        self._buf[: len(early)] = early
        self._early = b""
        complete = False
        try:
            complete = recvfile.receive_to_file(
                self._sock.fileno(), self._buf, chunk, run, count, have=len(early)
            )
        except (BlockingIOError, TimeoutError):
            raise self._timed_out() from None
        except OSError:
            self.reusable = False
            raise
        finally:
            # Bytes held from the head were already taken off `_remaining`.
            self._remaining = remaining - max(0, run.received - len(early))
            self.done = self._remaining == 0
            if not complete:
                self.reusable = False
        if not complete:
            msg = "the server closed the connection mid-response"
            raise WireError(msg)
        return True

    def get_to_file(
        self,
        request: bytes,
        fd: int,
        size: int,
        table: tuple[bytes, ctypes.Array[ctypes.c_int]],
        chunk: int,
        path: Path,
    ) -> recvfile.FileGet | None:
        """Send `request`; receive its `size`-byte body into file `fd`, natively.

        One call of `_recvfile.get_to_file`: on plain TCP only, with the native
        loop `available` (the caller checks). Afterwards the head is parsed here
        as `send` would, and the response is done.

        Returns:
            What was done, or None when the response is not a plain 200 of
            `size` bytes: nothing was written, and the connection is spent.

        Raises:
            WireError: the connection closed early, or the head is malformed.
            TimeoutError: nothing arrived within the timeout.
            OSError: the connection broke.
            LocalIOError: a write to the file failed.
        """
        self._reset(head=False)
        if len(self._buf) < chunk + _HEAD_READ:
            self._buf = _buffer(chunk + _HEAD_READ)
            self._view = memoryview(self._buf)
        self.reusable = False  # until the response is whole
        try:
            got = recvfile.get_to_file(
                self._sock.fileno(),
                request,
                self._buf,
                chunk,
                _HEAD_READ,
                fd,
                size,
                table,
                path,
            )
        except (BlockingIOError, TimeoutError):
            raise self._timed_out() from None
        if got.outcome == recvfile.NOT_PLAIN:
            return None
        if got.outcome == recvfile.CLOSED:
            msg = "the server closed the connection mid-response"
            if not got.head_received:
                msg = "the server closed the connection before responding"
            raise WireError(msg)
        self.status, self.headers = _parse_head(got.head)
        self.reusable = not _closes(self.headers)
        self._remaining, self.done = 0, True
        return got

    def _read_chunked(self, out: memoryview) -> memoryview:
        decoder = self._chunked
        assert decoder is not None
        while True:
            try:
                n = decoder.decode_into(out)
            except WireError:
                self.reusable = False
                raise
            self.done = decoder.finished
            if n or self.done:
                return out[:n]
            got = self._recv(decoder.scratch, fill=False)
            if not got:
                self.reusable = False
                msg = "the server closed the connection mid-response"
                raise WireError(msg)
            decoder.feed(decoder.scratch[:got])

    def abort(self) -> None:
        """Shut the connection down; a receive blocked in another thread returns."""
        self.reusable = False
        with contextlib.suppress(OSError):
            # The plain socket's shutdown, also under TLS: no close_notify to send.
            socket.socket.shutdown(self._sock, socket.SHUT_RDWR)

    def close(self) -> None:
        self.reusable = False
        self._sock.close()


class _ChunkDecoder:
    """Decodes ``Transfer-Encoding: chunked`` from raw bytes into a buffer."""

    def __init__(self) -> None:
        self.scratch = memoryview(bytearray(_CHUNK_SCRATCH))
        self._raw = bytearray()
        self._left = 0  # payload bytes left in the current chunk
        self._state = "size"  # size -> data -> crlf -> size ... -> trailer
        self.finished = False
        #: payload is waiting for room in the output buffer
        self.blocked = False

    def feed(self, data: bytes | memoryview) -> None:
        self._raw += data

    def decode_into(self, out: memoryview) -> int:
        """Move decoded payload into `out`; return how many bytes were written.

        Raises:
            WireError: the chunk framing is malformed.
        """
        written, raw = 0, self._raw
        self.blocked = False
        while raw and not self.finished:
            if self._state == "size":
                end = raw.find(b"\r\n")
                if end < 0:
                    if len(raw) > 1024:
                        msg = "malformed chunk size line"
                        raise WireError(msg)
                    break
                size = raw[:end].split(b";", 1)[0].strip()
                try:
                    self._left = int(size, 16)
                except ValueError:
                    msg = "malformed chunk size line"
                    raise WireError(msg) from None
                del raw[: end + 2]
                self._state = "data" if self._left else "trailer"
            elif self._state == "data":
                n = min(self._left, len(raw), len(out) - written)
                if n == 0:
                    self.blocked = True  # the output buffer is full
                    break
                out[written : written + n] = raw[:n]
                del raw[:n]
                written += n
                self._left -= n
                if self._left == 0:
                    self._state = "crlf"
            elif self._state == "crlf":
                if len(raw) < 2:
                    break
                if raw[:2] != b"\r\n":
                    msg = "malformed chunk terminator"
                    raise WireError(msg)
                del raw[:2]
                self._state = "size"
            else:  # trailer: header lines until an empty one
                end = raw.find(b"\r\n")
                if end < 0:
                    break
                del raw[: end + 2]
                if end == 0:
                    self.finished = True
        return written


class WireResponse:
    """A response whose head has arrived; its body is read with `read`.

    Attributes:
        status: the HTTP status.
        headers: the response headers (case-insensitive).
        content_length: the Content-Length, or None when the body is framed
            otherwise.
    """

    def __init__(self, connection: _Connection, key: _Key, buffer_size: int) -> None:
        self._connection = connection
        self._key = key
        self._buffer_size = buffer_size
        self.status = connection.status
        self.headers = connection.headers
        length = self.headers.get("Content-Length", "")
        self.content_length = int(length) if length.isdigit() else None

    def read_blocking(self, size: int, timeout: float | None = None) -> memoryview:
        """See `_Connection.read`; `timeout` replaces the pool's read timeout.

        Blocks: call it from a worker thread.

        Raises:
            WireError: the connection broke or the response is malformed.
            TimeoutError: no byte arrived for `timeout` seconds.
            OSError: the connection broke.
        """
        if timeout is not None:
            self._connection.set_timeout(timeout)
        return self._connection.read(size)

    def receive_to_file_blocking(
        self, run: FileRun, count: int, chunk: int, timeout: float
    ) -> bool:
        """See `_Connection.receive_to_file`; `timeout` as for `read_blocking`."""
        self._connection.set_timeout(timeout)
        return self._connection.receive_to_file(run, count, chunk)

    async def read(self, size: int) -> memoryview:
        """`read_blocking` in a worker thread."""
        return await run_abortable(
            functools.partial(self.read_blocking, size), self.abort
        )

    def read_some_blocking(self, limit: int) -> bytes:
        """Up to `limit` bytes of the body, copied. Blocks: see `read_some`."""
        out = bytearray()
        while len(out) < limit:
            data = self._connection.read(min(limit - len(out), self._buffer_size))
            if not data:
                break
            out += data
        return bytes(out)

    async def read_some(self, limit: int) -> bytes:
        """Up to `limit` bytes of the body, copied (error bodies, listings)."""
        return await run_abortable(
            functools.partial(self.read_some_blocking, limit), self.abort
        )

    def abort(self) -> None:
        """Break the connection off; a read blocked in another thread returns."""
        self._connection.abort()


_Key = tuple[str, str, int]


class Attempt:
    """The connection a request is using, for `abort` from another thread.

    It keeps the connection after the head arrived: `abort` then breaks off the
    body's reads too.
    """

    def __init__(self) -> None:
        self.connection: _Connection | None = None
        self.aborted = False

    def abort(self) -> None:
        """Break the request off: a blocked send or read returns promptly."""
        self.aborted = True
        if self.connection is not None:
            self.connection.abort()


def _request(url: str, headers: Mapping[str, str], method: str) -> tuple[_Key, bytes]:
    """The connection key of `url`, and the request's bytes.

    Raises:
        ValueError: the URL's port is not a number.
    """
    # The origin is parsed once per endpoint, not once per GET: urlsplit and its
    # hostname and port were a tenth of a lane worker's Python per small file.
    slash = url.find("/", url.find("://") + 3)
    origin = _origin(url[:slash]) if slash > 0 and "#" not in url else None
    if origin is None:
        origin, target = _origin_and_target(url)
    else:
        target = url[slash:]
    key, netloc = origin
    lines = [f"{method} {target} HTTP/1.1", f"Host: {netloc}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return key, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@functools.lru_cache(maxsize=32)
def _origin(origin: str) -> tuple[_Key, str] | None:
    """`origin`'s connection key and Host, if it is only a scheme and authority.

    Raises:
        ValueError: the port is not a number.
    """
    (key, netloc), target = _origin_and_target(origin)
    return None if target != "/" else (key, netloc)


def _origin_and_target(url: str) -> tuple[tuple[_Key, str], str]:
    """`url`'s connection key and Host, and its request target.

    Raises:
        ValueError: the port is not a number.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    port = parts.port or (443 if scheme == "https" else 80)
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return ((scheme, host, port), netloc), target


class _Ahead:
    """A request sent ahead (`WirePool.send_ahead`): its connection, once sent."""

    __slots__ = ("connection", "sent", "taken")

    def __init__(self) -> None:
        self.sent = threading.Event()
        self.connection: _Connection | None = None  # None: it could not be sent
        self.taken = False  # by a request, or by `drop_ahead`


#: Requests sent ahead, by method and URL, until a request for the same takes one.
_ahead: dict[tuple[str, str], _Ahead] = {}
_ahead_lock = threading.Lock()


def _take_ahead(method: str, url: str, wait: float) -> _Connection | None:
    """The connection of a request sent ahead for `method` `url`, if one was sent.

    Waits up to `wait` seconds for one still being sent; one sent later than that
    is closed by its sender.
    """
    with _ahead_lock:
        entry = _ahead.pop((method, url), None)
    if entry is None:
        return None
    entry.sent.wait(wait)
    with _ahead_lock:
        entry.taken = True
        return entry.connection


def drop_ahead() -> None:
    """Close the requests sent ahead that no request took (and any still sending)."""
    with _ahead_lock:
        entries = list(_ahead.values())
        _ahead.clear()
        for entry in entries:
            entry.taken = True
    for entry in entries:
        if entry.connection is not None:
            entry.connection.close()


# A NamedTuple, not a frozen dataclass: defining it at import costs a tenth
# (README, "Start-up is mostly imports").
class WireFile(NamedTuple):
    """A response whose body `WirePool.get_to_file_blocking` put in a file.

    Attributes:
        status: the HTTP status (200).
        headers: the response headers (case-insensitive).
        received: body bytes written: the Content-Length.
        crc_kind: the library's number of the CRC computed (`_crc`), or -1.
        crc: the CRC of the body.
    """

    status: int
    headers: Headers
    received: int
    crc_kind: int
    crc: int


class WirePool:
    """Keep-alive connections for GETs, by scheme, host and port; thread-safe.

    Args:
        verify: verify TLS certificates: False, True, or the path of a CA bundle.
        connect_timeout: seconds to connect (and finish the TLS handshake).
        read_timeout: seconds to wait for a response head, and between body
            bytes unless the reader says otherwise.
        buffer_size: bytes of body buffer per connection, to start with: a
            reader asking for larger chunks grows it to their size.
        max_idle: idle connections kept per host.
    """

    def __init__(
        self,
        *,
        verify: bool | str = True,
        connect_timeout: float = 15.0,
        read_timeout: float = 30.0,
        buffer_size: int = 256 << 10,
        max_idle: int = 16,
    ) -> None:
        self._verify = verify
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._buffer_size = buffer_size
        self._max_idle = max_idle
        self._idle: defaultdict[_Key, list[_Connection]] = defaultdict(list)
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None
        self._closed = False

    def _tls_context(self) -> ssl.SSLContext:
        with self._lock:
            if self._tls is None:
                if isinstance(self._verify, str):
                    context = ssl.create_default_context(cafile=self._verify)
                else:
                    context = ssl.create_default_context()
                    if not self._verify:
                        context.check_hostname = False
                        context.verify_mode = ssl.CERT_NONE
                self._tls = context
            return self._tls

    def _connect(self, key: _Key) -> _Connection:
        scheme, host, port = key
        sock = _open_socket(host, port, self._connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                # The handshake runs under the connect timeout.
                sock = self._tls_context().wrap_socket(sock, server_hostname=host)
            sock.settimeout(None)  # blocking; `set_timeout` bounds every wait
            # Inside: a buffer that cannot be mapped (ENOMEM) closes the socket too.
            return _Connection(sock, self._buffer_size)
        except BaseException:
            sock.close()
            raise

    def _checkout(self, key: _Key) -> _Connection | None:
        with self._lock:
            idle = self._idle[key]
            return idle.pop() if idle else None

    def request_blocking(
        self,
        url: str,
        headers: Mapping[str, str],
        *,
        method: str = "GET",
        attempt: Attempt | None = None,
    ) -> WireResponse:
        """Send ``GET url`` (or HEAD); return the response once its head has arrived.

        Blocks: call it from a worker thread, or use `request`. Pass the response
        to `release` when done with it. A reused connection that the server had
        closed meanwhile is replaced once, transparently (GET is idempotent).

        Raises:
            WireError: the connection broke, or the response is malformed.
            OSError: the connection could not be made.
            TimeoutError: connecting, or the response head, took too long.
        """
        attempt = attempt or Attempt()
        key, request = _request(url, headers, method)
        # A request sent ahead for the same is answered on its connection; if
        # that broke, this one is sent on a new one, as on a reused connection.
        ahead = _take_ahead(method, url, self._connect_timeout) if _ahead else None

        def send(connection: _Connection) -> None:
            connection.set_timeout(self._read_timeout)
            if connection is ahead:
                connection.read_head()
            else:
                connection.send(request, head=method == "HEAD")

        connection, _ = self._exchange(key, attempt, send, first=ahead)
        return WireResponse(connection, key, self._buffer_size)

    def send_ahead(
        self, url: str, headers: Mapping[str, str], *, method: str = "GET"
    ) -> None:
        """Send a request now, from a thread of its own, for a later one to answer.

        The next `request_blocking` of the same method and URL, on any pool, reads
        this request's response instead of sending its own: the CLI sends the
        first listing this way while the engine's modules load. Best effort: if
        this one cannot be sent, or breaks, the later request sends its own; one
        that none takes is closed by `drop_ahead`. For requests that may be sent
        twice (GET, HEAD) with headers that stay valid meanwhile (a SigV4
        signature: 15 minutes).

        Raises:
            ValueError: the URL's port is not a number.
        """
        key, request = _request(url, headers, method)
        entry = _Ahead()
        with _ahead_lock:
            if (method, url) in _ahead:
                return
            _ahead[(method, url)] = entry

        def send() -> None:
            connection: _Connection | None = None
            try:
                connection = self._connect(key)
                connection.set_timeout(self._read_timeout)
                connection.send_only(request, head=method == "HEAD")
            except BaseException as exc:
                if connection is not None:
                    connection.close()
                connection = None
                if not isinstance(exc, (OSError, ValueError)):
                    raise
            finally:
                # Whatever happened, a request waiting for this one stops waiting.
                with _ahead_lock:
                    if not entry.taken:
                        entry.connection, connection = connection, None
                entry.sent.set()
            if connection is not None:  # dropped, or given up on, meanwhile
                connection.close()

        threading.Thread(target=send, name="storage-init-ahead", daemon=True).start()

    def _exchange(
        self,
        key: _Key,
        attempt: Attempt,
        act: Callable[[_Connection], T],
        *,
        first: _Connection | None = None,
    ) -> tuple[_Connection, T]:
        """Run `act` on `first`, or a pooled connection to `key`, or a new one.

        Returns the connection and what `act` returned. A reused connection (or
        `first`) that breaks (`act` raises ConnectionError) is closed and `act`
        runs once more on a new one: the server may have closed it meanwhile,
        and GETs may be sent again. Any other failure closes the connection and
        propagates.

        Raises:
            WireError: `attempt` was aborted, or what `act` raises.
            OSError: the connection could not be made.
        """
        connection = first if first is not None else self._checkout(key)
        reused = connection is not None
        while True:
            if connection is None:
                connection = self._connect(key)
            attempt.connection = connection
            if attempt.aborted:
                connection.close()
                msg = "the request was cancelled"
                raise WireError(msg)
            try:
                return connection, act(connection)
            except ConnectionError:
                connection.close()
                if not reused or attempt.aborted:
                    raise
                connection, reused = None, False
            except BaseException:
                connection.close()
                raise

    def get_to_file_blocking(
        self,
        url: str,
        headers: Mapping[str, str],
        *,
        fd: int,
        size: int,
        table: tuple[bytes, ctypes.Array[ctypes.c_int]],
        chunk: int,
        path: Path,
        timeout: float,
        attempt: Attempt,
    ) -> WireFile | None:
        """GET `url`, a `size`-byte body, into file `fd` from offset 0, natively.

        Blocks: call it from a worker thread. The request, the head and the body
        are one call with the GIL released (`_Connection.get_to_file`); a wait
        longer than `timeout` (or the pool's read timeout, if longer) fails. A
        reused connection that breaks is replaced once and the GET sent again:
        the body is written again from its start.

        Returns:
            The response, or None when this cannot be done, having sent nothing
            (TLS; no native loop), or when the response is not a plain 200 of
            `size` bytes (nothing written): send the request the usual way.

        Raises:
            WireError: the connection broke, or the response is malformed.
            OSError: the connection could not be made.
            TimeoutError: connecting, or a receive, took too long.
            LocalIOError: a write to the file failed.
        """
        key, request = _request(url, headers, "GET")
        if key[0] != "http" or not recvfile.available():
            return None

        def get(connection: _Connection) -> recvfile.FileGet | None:
            connection.set_timeout(max(timeout, self._read_timeout))
            return connection.get_to_file(request, fd, size, table, chunk, path)

        connection, got = self._exchange(key, attempt, get)
        attempt.connection = None
        if got is None:
            connection.close()
            return None
        self._checkin(key, connection)
        status, fields = connection.status, connection.headers
        return WireFile(status, fields, got.received, got.crc_kind, got.crc)

    async def request(
        self, url: str, headers: Mapping[str, str], *, method: str = "GET"
    ) -> WireResponse:
        """`request_blocking` in a worker thread; cancelling it breaks the request off.

        Raises:
            See `request_blocking`.
        """
        attempt = Attempt()
        call = functools.partial(
            self.request_blocking, url, headers, method=method, attempt=attempt
        )
        try:
            return await run_abortable(call, attempt.abort)
        except BaseException:
            # Cancelled, perhaps after the head arrived: no one will release it.
            if attempt.connection is not None:
                attempt.connection.close()
            raise

    def release(self, response: WireResponse) -> None:
        """Keep the response's connection for reuse, or close it.

        Only a connection whose body was read to its end is kept: unread bytes
        would be taken for the next response.
        """
        self._checkin(response._key, response._connection)

    def _checkin(self, key: _Key, connection: _Connection) -> None:
        """Keep `connection` idle for reuse if it can be, or close it."""
        with self._lock:
            idle = self._idle[key]
            keep = connection.done and connection.reusable and not self._closed
            if keep and len(idle) < self._max_idle:
                idle.append(connection)
                return
        connection.close()

    async def aclose(self) -> None:
        """Close every idle connection; those released later are closed then."""
        with self._lock:
            self._closed = True
            idle = [c for conns in self._idle.values() for c in conns]
            self._idle.clear()
        for connection in idle:
            connection.close()
