"""The data-GET client's HTTP/1.1 framing, against scripted responses on 127.0.0.1.

A few lines of asyncio server answer each request with bytes chosen by the test:
the framings real stores use (Content-Length, chunked, close-delimited), split at
awkward places, and the malformed ones a client must refuse.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import gc
import mmap
import os
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path

import anyio
import pytest

from storage_init import _recvfile as recvfile
from storage_init._crc import crc_algorithm
from storage_init._recvfile import FileRun
from storage_init.backends import _wire as wire
from storage_init.backends._wire import (
    Attempt,
    WireError,
    WireFile,
    WirePool,
    _ChunkDecoder,
)

Script = Callable[[bytes, int], list[bytes]]


@asynccontextmanager
async def scripted(
    script: Script, *, close: bool = False, tls: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """Serve `script(request, n)` (pieces written with a yield between them)."""
    count = 0
    writers: set[asyncio.StreamWriter] = set()

    def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        writers.add(writer)  # synchronously, even if the handler never runs
        return handle(reader, writer)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        nonlocal count
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                count += 1
                for piece in script(request, count):
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0)
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()
        await asyncio.sleep(0)


async def _body(pool: WirePool, url: str, hint: int = 1 << 20) -> bytes:
    response = await pool.request(url, {})
    out = bytearray()
    try:
        while data := await response.read(hint):
            out += data
    finally:
        pool.release(response)
    return bytes(out)


def _ok(body: bytes, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body
    )


async def test_content_length_reused_connection() -> None:
    """Bodies framed by Content-Length; the connection serves the next request."""
    data = os.urandom(3 << 20)
    async with (
        scripted(lambda req, n: [_ok(data)[:100], _ok(data)[100:]]) as url,
        aclosing(WirePool(buffer_size=256 << 10)) as pool,
    ):
        assert await _body(pool, url + "/a") == data
        assert await _body(pool, url + "/b") == data
        assert len(pool._idle[("http", "127.0.0.1", int(url.rsplit(":", 1)[1]))]) == 1


async def test_request_line_and_headers_sent() -> None:
    """The request carries the path, query, Host and the caller's headers."""
    seen: list[bytes] = []

    def script(request: bytes, n: int) -> list[bytes]:
        seen.append(request)
        return [_ok(b"x")]

    async with scripted(script) as url, aclosing(WirePool()) as pool:
        response = await pool.request(url + "/k%20y?sig=1", {"Range": "bytes=0-0"})
        assert await response.read_some(10) == b"x"
        pool.release(response)
    head = seen[0].decode()
    assert head.startswith("GET /k%20y?sig=1 HTTP/1.1\r\n")
    assert "\r\nRange: bytes=0-0\r\n" in head
    assert f"\r\nHost: {url.split('://')[1]}\r\n" in head


@pytest.mark.parametrize("split", [1, 7, 100, 5000])
async def test_chunked_body(split: int) -> None:
    """Chunked bodies decode whatever the packet boundaries; trailers are skipped."""
    data = os.urandom(300_000)
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    for i in range(0, len(data), 70_000):
        piece = data[i : i + 70_000]
        wire += f"{len(piece):x};ext=1\r\n".encode() + piece + b"\r\n"
    wire += b"0\r\nX-Trailer: t\r\n\r\n"
    pieces = [wire[i : i + split * 1000] for i in range(0, len(wire), split * 1000)]
    async with (
        scripted(lambda req, n: pieces) as url,
        aclosing(WirePool(buffer_size=64 << 10)) as pool,
    ):
        assert await _body(pool, url, hint=16 << 10) == data
        assert await _body(pool, url) == data  # reused after the trailer


async def test_close_delimited_body() -> None:
    """Without Content-Length or chunking, the body ends with the connection."""
    data = os.urandom(100_000)
    async with (
        scripted(lambda req, n: [b"HTTP/1.0 200 OK\r\n\r\n", data], close=True) as url,
        aclosing(WirePool()) as pool,
    ):
        assert await _body(pool, url) == data
        assert not any(pool._idle.values())  # not reusable


async def test_truncated_body_is_an_error() -> None:
    """A connection closed before Content-Length bytes is a WireError."""
    async with (
        scripted(
            lambda req, n: [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"],
            close=True,
        ) as url,
        aclosing(WirePool()) as pool,
    ):
        with pytest.raises(WireError):
            await _body(pool, url)


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"SPDY/9 200 OK\r\n\r\n", id="status-line"),
        pytest.param(b"HTTP/1.1 2x0 OK\r\n\r\n", id="status-code"),
        pytest.param(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", id="header"),
        pytest.param(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 20000, id="huge-head"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\ncontent-length: 2\r\n\r\nab",
            id="conflicting-lengths",
        ),
    ],
)
async def test_malformed_heads_are_refused(head: bytes) -> None:
    async with (
        scripted(lambda req, n: [head], close=True) as url,
        aclosing(WirePool()) as pool,
    ):
        with pytest.raises(WireError):
            await _body(pool, url)


async def test_headers_any_case_repeated_fields_joined() -> None:
    """Names match whatever their case; a repeated field's values are joined."""
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nCONTENT-LENGTH: 2\r\n"
        b"Digest: md5=a\r\nx-amz-checksum-crc32:  AAAAAA==  \r\ndigest: sha=b\r\n\r\nok"
    )
    async with scripted(lambda req, n: [head]) as url, aclosing(WirePool()) as pool:
        response = await pool.request(url, {})
        assert response.content_length == 2  # the same length twice: one
        assert response.headers["X-Amz-Checksum-CRC32"] == "AAAAAA=="
        assert response.headers.get("DIGEST") == "md5=a, sha=b"
        assert response.headers.get("ETag") is None
        assert set(response.headers) == {
            "content-length",
            "digest",
            "x-amz-checksum-crc32",
        }
        assert await response.read_some(10) == b"ok"
        pool.release(response)


@pytest.mark.parametrize(
    ("url", "key", "line", "host"),
    [
        ("http://h:81/b/k?x=1", ("http", "h", 81), "GET /b/k?x=1", "h:81"),
        ("HTTPS://H/b/k%2F", ("https", "h", 443), "GET /b/k%2F", "H"),
        ("http://u:p@h/k", ("http", "h", 80), "GET /k", "h"),
        ("http://[::1]:9/k", ("http", "::1", 9), "GET /k", "[::1]:9"),
        ("http://h", ("http", "h", 80), "GET /", "h"),
        ("http://h?q=/a", ("http", "h", 80), "GET /?q=/a", "h"),
        ("http://h/k#frag", ("http", "h", 80), "GET /k", "h"),
    ],
)
def test_request_target_and_key(
    url: str, key: tuple[str, str, int], line: str, host: str
) -> None:
    """Every shape of URL gives the key and target urlsplit would, cached or not."""
    for _ in range(2):  # the second time from the origin's cache
        got_key, request = wire._request(url, {"A": "b"}, "GET")
        assert got_key == key
        assert request == f"{line} HTTP/1.1\r\nHost: {host}\r\nA: b\r\n\r\n".encode()


def test_request_bad_port_is_refused() -> None:
    with pytest.raises(ValueError, match=r"[Pp]ort"):
        wire._request("http://h:x/k", {}, "GET")


def test_headers_get_and_in_any_case() -> None:
    headers = wire.Headers({"etag": '"e"'})
    assert headers.get("ETag") == '"e"'
    assert headers.get("Missing", "d") == "d"
    assert "ETAG" in headers
    assert "other" not in headers
    assert object() not in headers  # not a name: no lookup


async def test_connection_close_among_other_options() -> None:
    """``Connection: close`` in a list of options (or a repeated field) is seen."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n"
    async with (
        scripted(lambda req, n: [head + b"Connection: Close\r\n\r\nx"]) as url,
        aclosing(WirePool()) as pool,
    ):
        assert await _body(pool, url) == b"x"
        assert not any(pool._idle.values())  # closed, not kept for reuse


async def test_stale_keep_alive_connection_is_replaced() -> None:
    """A pooled connection the server closed is retried once on a new one."""
    async with (
        scripted(lambda req, n: [_ok(b"%d" % n)], close=True) as url,
        aclosing(WirePool()) as pool,
    ):
        assert await _body(pool, url) == b"1"
        assert await _body(pool, url) == b"2"


@pytest.fixture(autouse=True)
def _no_requests_ahead_left() -> Iterator[None]:
    yield
    wire.drop_ahead()


async def _until(predicate: Callable[[], bool]) -> None:
    with anyio.fail_after(5):
        while not predicate():
            await anyio.sleep(0.005)


async def test_request_sent_ahead_is_answered_by_the_next_alike() -> None:
    """Another pool's request for the same URL reads the response sent ahead for it."""
    seen: list[bytes] = []

    def script(request: bytes, n: int) -> list[bytes]:
        seen.append(request)
        return [_ok(b"%d" % n)]

    async with scripted(script) as url, aclosing(WirePool()) as pool:
        WirePool().send_ahead(url + "/k", {"X-Early": "1"})
        await _until(lambda: len(seen) == 1)
        assert await _body(pool, url + "/k") == b"1"
        assert len(seen) == 1
        assert b"\r\nX-Early: 1\r\n" in seen[0]
        assert await _body(pool, url + "/k") == b"2"  # taken once: sent anew
        assert len(pool._idle[wire._request(url, {}, "GET")[0]]) == 1  # kept
        assert not wire._ahead


async def test_request_ahead_of_another_url_is_not_taken() -> None:
    seen: list[bytes] = []

    def script(request: bytes, n: int) -> list[bytes]:
        seen.append(request)
        return [_ok(request.split(b" ")[1])]

    async with scripted(script) as url, aclosing(WirePool()) as pool:
        WirePool().send_ahead(url + "/a", {})
        await _until(lambda: len(seen) == 1)
        assert await _body(pool, url + "/b") == b"/b"
        wire.drop_ahead()
        assert await _body(pool, url + "/a") == b"/a"
        assert len(seen) == 3  # the one sent ahead was dropped, not read


async def test_request_ahead_that_broke_is_sent_again() -> None:
    """A request sent ahead whose connection closes unanswered is sent again."""
    async with (
        scripted(lambda req, n: [] if n == 1 else [_ok(b"%d" % n)], close=True) as url,
        aclosing(WirePool()) as pool,
    ):
        WirePool().send_ahead(url + "/k", {})
        assert await _body(pool, url + "/k") == b"2"


async def test_request_ahead_that_could_not_connect_holds_no_connection() -> None:
    async with (
        scripted(lambda req, n: [_ok(b"ok")]) as url,
        aclosing(WirePool()) as pool,
    ):
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            closed = f"http://127.0.0.1:{unused.getsockname()[1]}/k"
        WirePool().send_ahead(closed, {})
        await _until(lambda: wire._ahead[("GET", closed)].sent.is_set())
        assert wire._ahead[("GET", closed)].connection is None
        wire.drop_ahead()
        assert await _body(pool, url + "/k") == b"ok"


async def test_interim_response_is_skipped() -> None:
    async with (
        scripted(
            lambda req, n: [b"HTTP/1.1 100 Continue\r\n\r\n", _ok(b"final")]
        ) as url,
        aclosing(WirePool()) as pool,
    ):
        assert await _body(pool, url) == b"final"


async def test_unread_body_closes_the_connection() -> None:
    """A response released before its end never returns to the pool."""
    async with (
        scripted(lambda req, n: [_ok(os.urandom(1 << 20))]) as url,
        aclosing(WirePool(buffer_size=64 << 10)) as pool,
    ):
        response = await pool.request(url, {})
        assert await response.read(1)
        pool.release(response)
        assert not any(pool._idle.values())


async def test_head_timeout() -> None:
    """A server that never answers fails after read_timeout."""
    async with (
        scripted(lambda req, n: []) as url,
        aclosing(WirePool(read_timeout=0.2)) as pool,
    ):
        with pytest.raises(TimeoutError):
            await pool.request(url, {})


@pytest.fixture(scope="module")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, str]:
    """A server TLS context for 127.0.0.1 and the path of the CA that signed it."""
    import trustme

    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    bundle = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    return server, str(bundle)


async def test_tls_body(tls_pair: tuple[ssl.SSLContext, str]) -> None:
    """Bodies over TLS, verified against a CA bundle, in many records."""
    server, bundle = tls_pair
    body = os.urandom(3 << 20)
    async with (
        scripted(lambda req, n: [_ok(body)], tls=server) as url,
        aclosing(WirePool(verify=bundle)) as pool,
    ):
        assert await _body(pool, url, hint=256 << 10) == body
        assert await _body(pool, url) == body  # on the kept connection


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "tls"])
async def test_body_stall_times_out(
    tls_pair: tuple[ssl.SSLContext, str], secure: bool
) -> None:
    """A body that stops mid-way fails after the reader's timeout, TLS or not."""
    server, bundle = tls_pair
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 10
    async with (
        scripted(lambda req, n: [head], tls=server if secure else None) as url,
        aclosing(WirePool(verify=bundle)) as pool,
    ):
        response = await pool.request(url, {})
        assert bytes(await anyio.to_thread.run_sync(response.read_blocking, 10))
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"no data for 0\.3 s"):
            await anyio.to_thread.run_sync(response.read_blocking, 1000, 0.3)
        assert time.monotonic() - started < 2
        pool.release(response)
        assert not any(pool._idle.values())


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "tls"])
async def test_cancelled_read_returns_at_once(
    tls_pair: tuple[ssl.SSLContext, str], secure: bool
) -> None:
    """Cancelling a read blocked on a silent server takes no timeout to return."""
    server, bundle = tls_pair
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
    async with (
        scripted(lambda req, n: [head], tls=server if secure else None) as url,
        aclosing(WirePool(verify=bundle, read_timeout=60)) as pool,
    ):
        response = await pool.request(url, {})
        started = time.monotonic()
        with anyio.move_on_after(0.2) as scope:
            await response.read(1000)
        assert scope.cancelled_caught
        assert time.monotonic() - started < 2
        pool.release(response)


async def test_cancelled_request_returns_at_once() -> None:
    """Cancelling a request whose head never comes takes no timeout to return."""
    async with (
        scripted(lambda req, n: []) as url,
        aclosing(WirePool(read_timeout=60)) as pool,
    ):
        started = time.monotonic()
        with anyio.move_on_after(0.2) as scope:
            await pool.request(url, {})
        assert scope.cancelled_caught
        assert time.monotonic() - started < 2
        assert not any(pool._idle.values())


async def test_buffer_grows_to_the_readers_chunk() -> None:
    """A reader asking for more than the buffer gets whole chunks of that size."""
    body = os.urandom(3 << 20)
    async with scripted(lambda req, n: [_ok(body)]) as url:
        pool = WirePool(buffer_size=64 << 10)
        response = await pool.request(url, {})
        sizes = []
        try:
            while data := await response.read(1 << 20):
                sizes.append(len(data))
        finally:
            pool.release(response)
            await pool.aclose()
        # Whole chunks, the first one starting with the bytes that came with the head.
        assert sizes == [1 << 20] * 3


async def test_body_that_came_with_the_head_starts_one_chunk() -> None:
    """A small body split after its first bytes comes back in one read."""
    body = os.urandom(100_000)
    response_bytes = _ok(body)
    split = len(response_bytes) - len(body) + 1000  # the head and 1000 body bytes
    async with (
        scripted(
            lambda req, n: [response_bytes[:split], response_bytes[split:]]
        ) as url,
        aclosing(WirePool(buffer_size=256 << 10)) as pool,
    ):
        response = await pool.request(url, {})
        first = bytes(await response.read(256 << 10))
        rest = await response.read(256 << 10)
        pool.release(response)
        assert first == body
        assert len(rest) == 0
        # Read to its end: the connection is kept for the next request.
        assert await _body(pool, url) == body
        assert sum(len(c) for c in pool._idle.values()) == 1


def test_chunk_decoder_output_full_then_resumes() -> None:
    """Payload waits in the decoder when the output is full (flow control)."""
    decoder = _ChunkDecoder()
    decoder.feed(b"a\r\n0123456789\r\n0\r\n\r\n")
    out = memoryview(bytearray(4))
    assert decoder.decode_into(out) == 4
    assert decoder.blocked
    assert bytes(out) == b"0123"
    rest = memoryview(bytearray(16))
    assert decoder.decode_into(rest) == 6
    assert bytes(rest[:6]) == b"456789"
    assert decoder.finished


@pytest.mark.parametrize("bad", [b"zz\r\n", b"5\r\nabcdeXX", b"f" * 2000])
def test_chunk_decoder_rejects_bad_framing(bad: bytes) -> None:
    decoder = _ChunkDecoder()
    decoder.feed(bad)
    with pytest.raises(WireError):
        decoder.decode_into(memoryview(bytearray(64)))


async def test_release_after_close_closes_the_connection() -> None:
    """A response released after the pool closed is not kept (nor leaked)."""
    body = os.urandom(1000)
    async with scripted(lambda req, n: [_ok(body)]) as url:
        pool = WirePool()
        response = await pool.request(url, {})
        assert bytes(await response.read(4096)) == body
        await pool.aclose()
        pool.release(response)
        assert not any(pool._idle.values())
        assert response._connection._sock.fileno() == -1


# -- the native receive loop (`_Connection.receive_to_file`) ---------------------


async def _to_file(
    url: str, pool: WirePool, path: Path, *, tls: bool = False
) -> tuple[bytes, list[bool]]:
    """Receive a body as the engine does: natively where the connection can.

    Returns the file's bytes and, per attempt at the native loop, whether it ran.
    """
    response = await pool.request(url, {})
    length = response.content_length or 0
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    attempts: list[bool] = []
    offset = 0
    try:
        while True:
            if offset < length:
                run = FileRun(path, fd, offset)
                attempts.append(
                    await anyio.to_thread.run_sync(
                        response.receive_to_file_blocking,
                        run,
                        length - offset,
                        64 << 10,
                        5.0,
                    )
                )
                offset += run.received
            data = await response.read(64 << 10)
            if not data:
                break
            os.pwrite(fd, data, offset)
            offset += len(data)
        return os.pread(fd, offset, 0), attempts
    finally:
        os.close(fd)
        pool.release(response)


needs_native = pytest.mark.skipif(
    not recvfile.available(), reason="the native library is not built"
)


@needs_native
@pytest.mark.parametrize("size", [100, 1 << 20])
async def test_receive_to_file_with_the_head_bytes(tmp_path: Path, size: int) -> None:
    """Bytes that came with the head go first, then the rest, in one native call.

    The connection is then at the body's end and goes back to the pool.
    """
    data = os.urandom(size)
    wire = _ok(data)
    async with (
        scripted(
            lambda req, n: [wire[: len(wire) - size + 50], wire[-size + 50 :]]
        ) as url,
        aclosing(WirePool(buffer_size=64 << 10)) as pool,
    ):
        got, attempts = await _to_file(url, pool, tmp_path / "f")
        assert got == data
        assert attempts == [True]
        assert sum(len(c) for c in pool._idle.values()) == 1


@needs_native
@pytest.mark.parametrize(
    "framing", ["chunked", "close-delimited", "tls", "more-with-the-head"]
)
async def test_receive_to_file_declines(
    tls_pair: tuple[ssl.SSLContext, str], tmp_path: Path, framing: str
) -> None:
    """Chunked, close-delimited and TLS bodies are left to `read`, intact, as are
    more bytes held from the head than the run asks for."""
    data = os.urandom(200_000 if framing != "more-with-the-head" else 1000)
    server, bundle = tls_pair
    if framing == "chunked":
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        pieces = [head + f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n"]
    elif framing == "close-delimited":
        pieces = [b"HTTP/1.0 200 OK\r\n\r\n", data]
    else:
        pieces = [_ok(data)]
    async with (
        scripted(
            lambda req, n: pieces,
            close=framing == "close-delimited",
            tls=server if framing == "tls" else None,
        ) as url,
        aclosing(WirePool(verify=bundle)) as pool,
    ):
        response = await pool.request(url, {})
        run = FileRun(tmp_path / "f", -1, 0)
        count = 10 if framing == "more-with-the-head" else 1000
        taken = await anyio.to_thread.run_sync(
            response.receive_to_file_blocking, run, count, 64 << 10, 5.0
        )
        assert (taken, run.received) == (False, 0)
        assert await response.read_some(len(data) + 1) == data
        pool.release(response)


@needs_native
async def test_receive_to_file_cut_short(tmp_path: Path) -> None:
    """A body that ends early is a WireError; what came is written and counted."""
    data = os.urandom(300_000)
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {1 << 20}\r\n\r\n".encode()
    async with (
        scripted(lambda req, n: [head, data], close=True) as url,
        aclosing(WirePool(buffer_size=64 << 10)) as pool,
    ):
        response = await pool.request(url, {})
        early = bytes(await response.read(1)) if response._connection._early else b""
        fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
        try:
            run = FileRun(tmp_path / "f", fd, len(early))
            with pytest.raises(WireError, match="mid-response"):
                await anyio.to_thread.run_sync(
                    response.receive_to_file_blocking,
                    run,
                    (1 << 20) - len(early),
                    64 << 10,
                    5.0,
                )
            assert len(early) + run.received == len(data)
            assert os.pread(fd, run.received, len(early)) == data[len(early) :]
        finally:
            os.close(fd)
        pool.release(response)
        assert not any(pool._idle.values())


@needs_native
@pytest.mark.parametrize("splice", [True, False], ids=["splice", "buffered"])
async def test_receive_to_file_splices_unless_told_not_to(
    tmp_path: Path, splice: bool
) -> None:
    """A run without a CRC is spliced when its `splice` says so; otherwise its
    bytes pass through the connection's buffer (which then holds the last
    chunk). The file is the same either way."""
    chunk = 64 << 10
    data = os.urandom(16 * chunk)
    async with (
        scripted(lambda req, n: [_ok(data)]) as url,
        aclosing(WirePool(buffer_size=chunk)) as pool,
    ):
        response = await pool.request(url, {})
        fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
        try:
            run = FileRun(tmp_path / "f", fd, 0, splice=splice)
            taken = await anyio.to_thread.run_sync(
                response.receive_to_file_blocking, run, len(data), chunk, 5.0
            )
            assert (taken, run.received) == (True, len(data))
            assert os.pread(fd, len(data) + 1, 0) == data
        finally:
            os.close(fd)
        buffered = bytes(response._connection._buf[:chunk]) == data[-chunk:]
        assert buffered is not splice
        pool.release(response)


def _resident_kib(buffer: mmap.mmap | bytearray) -> int:
    """KiB of `buffer`'s pages resident in memory (mincore, page by page).

    Not /proc/self/smaps: the kernel merges neighbouring anonymous maps into one
    area, whose Rss then counts other buffers too.
    """
    page = mmap.PAGESIZE
    view = ctypes.c_char.from_buffer(buffer)
    start = ctypes.addressof(view)
    del view
    first = start - start % page  # mincore takes whole pages
    size = start + len(buffer) - first
    pages = (size + page - 1) // page
    libc = ctypes.CDLL(None, use_errno=True)
    vector = (ctypes.c_ubyte * pages)()
    if libc.mincore(ctypes.c_void_p(first), ctypes.c_size_t(size), vector):
        raise OSError(ctypes.get_errno(), "mincore failed")
    return sum(v & 1 for v in vector) * page // 1024


@pytest.mark.skipif(sys.platform != "linux", reason="mincore as Linux has it")
async def test_buffer_holds_only_what_bodies_touched() -> None:
    """A 256 KiB connection buffer that carried 10 kB bodies holds ~12 KiB: pages
    come as the kernel receives into them (a bytearray held all 256 from the start)."""
    data = os.urandom(10_000)
    async with (
        scripted(lambda req, n: [_ok(data)]) as url,
        aclosing(WirePool(buffer_size=256 << 10)) as pool,
    ):
        response = await pool.request(url + "/a", {})
        connection = response._connection
        assert await response.read(256 << 10) == data
        pool.release(response)
        assert _resident_kib(connection._buf) <= 16


async def test_buffer_failure_closes_the_new_socket(monkeypatch, unraisables) -> None:
    """A connection whose buffer cannot be made (ENOMEM) leaves no socket open."""

    def no_memory(size: int) -> mmap.mmap:
        raise OSError(errno.ENOMEM, os.strerror(errno.ENOMEM))

    monkeypatch.setattr(wire, "_buffer", no_memory)
    async with (
        scripted(lambda req, n: [_ok(b"x")]) as url,
        aclosing(WirePool()) as pool,
    ):
        with pytest.raises(OSError, match="Cannot allocate memory"):
            await pool.request(url + "/a", {})
    gc.collect()
    assert unraisables == []


# -- a small file's whole GET in one native call (`WirePool.get_to_file_blocking`) --

_CRC64 = crc_algorithm("crc64nvme")
_CRC32C = crc_algorithm("crc32c")
#: Two checksum fields, the stronger first, and no CRC without them.
_TABLE = (("x-amz-checksum-crc64nvme", 0), ("x-amz-checksum-crc32c", 1))


async def _get_to_file(
    pool: WirePool,
    url: str,
    path: Path,
    size: int,
    *,
    default: int = -1,
    timeout: float = 5.0,
    chunk: int = 64 << 10,
) -> WireFile | None:
    """`get_to_file_blocking` into `path` (created empty) from a worker thread."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    try:
        return await anyio.to_thread.run_sync(
            lambda: pool.get_to_file_blocking(
                url,
                {"x-test": "1"},
                fd=fd,
                size=size,
                table=recvfile.checksum_table(_TABLE, default),
                chunk=chunk,
                path=path,
                timeout=timeout,
                attempt=Attempt(),
            )
        )
    finally:
        os.close(fd)


@needs_native
@pytest.mark.parametrize("size", [1, 100, 70_000, 1 << 20])
@pytest.mark.parametrize("cut", [0, 1, 30, 10_000])
async def test_get_to_file_writes_the_body_and_its_crc(
    tmp_path: Path, size: int, cut: int
) -> None:
    """The head and body arrive in pieces cut anywhere (within the head, at its
    blank line, in the body); the file holds the body, the CRC is the first
    checksum field's of the table (not the order of the head's fields), the
    headers are parsed, and the connection goes back to the pool and is reused."""
    data = os.urandom(size)
    extra = 'x-amz-checksum-crc32c: c\r\nX-Amz-Checksum-CRC64NVME: a\r\nETag: "e"\r\n'
    whole = _ok(data, extra)
    requests: list[bytes] = []

    def script(request: bytes, n: int) -> list[bytes]:
        requests.append(request)
        return [whole[:cut], whole[cut:]] if cut else [whole]

    async with scripted(script) as url, aclosing(WirePool()) as pool:
        for _ in range(2):
            got = await _get_to_file(pool, f"{url}/k?q=1", tmp_path / "f", size)
            assert got is not None
            assert (tmp_path / "f").read_bytes() == data
            assert (got.status, got.received) == (200, size)
            assert (got.crc_kind, got.crc) == (0, _CRC64.update(data, 0))
            assert got.headers["etag"] == '"e"'
            assert sum(len(c) for c in pool._idle.values()) == 1
        assert len(requests) == 2  # one connection, two requests
        assert requests[0].startswith(b"GET /k?q=1 HTTP/1.1\r\n")
        assert b"\r\nx-test: 1\r\n" in requests[0]


@needs_native
@pytest.mark.parametrize(
    ("extra", "default", "kind"),
    [
        ("x-amz-checksum-crc32c: c\r\n", -1, 1),
        ("", -1, -1),
        ("", 1, 1),
        ("x-amz-checksum-crc32: c\r\nx-amz-checksum-crc64nvmeX: a\r\n", -1, -1),
    ],
)
async def test_get_to_file_crc_from_the_fields_or_the_default(
    tmp_path: Path, extra: str, default: int, kind: int
) -> None:
    """The CRC is that of the table's first field present (a name must match
    whole; fields not in the table do not count), else the default."""
    data = os.urandom(5000)
    async with (
        scripted(lambda req, n: [_ok(data, extra)]) as url,
        aclosing(WirePool()) as pool,
    ):
        got = await _get_to_file(pool, url, tmp_path / "f", len(data), default=default)
        assert got is not None
        expected = {-1: 0, 0: _CRC64.update(data, 0), 1: _CRC32C.update(data, 0)}
        assert (got.crc_kind, got.crc) == (kind, expected[kind])


@needs_native
@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 4\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/2 200 OK\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * (20 << 10) + b"\r\n\r\n",
    ],
    ids=[
        "404",
        "another-length",
        "two-lengths",
        "bad-length",
        "chunked",
        "no-length",
        "interim",
        "bad-status",
        "http2",
        "long-head",
    ],
)
async def test_get_to_file_declines_what_is_not_plain(
    tmp_path: Path, head: bytes
) -> None:
    """Anything but a 200 with one Content-Length of the size expected: None,
    nothing written, the connection closed (the caller asks again)."""
    async with (
        scripted(lambda req, n: [head + b"hello"]) as url,
        aclosing(WirePool()) as pool,
    ):
        assert await _get_to_file(pool, url, tmp_path / "f", 5) is None
        assert (tmp_path / "f").read_bytes() == b""
        assert not any(pool._idle.values())


@needs_native
async def test_get_to_file_malformed_field_after_the_body(tmp_path: Path) -> None:
    """A field line Python's parser refuses fails the GET, after the body."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n bad\r\n\r\n"
    async with (
        scripted(lambda req, n: [head + b"hello"]) as url,
        aclosing(WirePool()) as pool,
    ):
        with pytest.raises(WireError, match="malformed"):
            await _get_to_file(pool, url, tmp_path / "f", 5)
        assert not any(pool._idle.values())


@needs_native
async def test_get_to_file_cut_short_or_unanswered(tmp_path: Path) -> None:
    """A body that ends early, or no response at all, on a new connection: a
    WireError (not retried), the connection dropped."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
    async with (
        scripted(lambda req, n: [head, b"x" * 500], close=True) as url,
        aclosing(WirePool()) as pool,
    ):
        with pytest.raises(WireError, match="mid-response"):
            await _get_to_file(pool, url, tmp_path / "f", 100_000)
        assert not any(pool._idle.values())
    async with (
        scripted(lambda req, n: [], close=True) as url,
        aclosing(WirePool()) as pool,
    ):
        with pytest.raises(WireError, match="before responding"):
            await _get_to_file(pool, url, tmp_path / "f", 5)


@needs_native
async def test_get_to_file_stale_connection_and_connection_close(
    tmp_path: Path,
) -> None:
    """A pooled connection the server has closed is replaced once, the GET sent
    again; a response saying Connection: close is not pooled."""
    async with (
        scripted(lambda req, n: [_ok(b"%05d" % n)], close=True) as url,
        aclosing(WirePool()) as pool,
    ):
        for n in (1, 2):
            assert await _get_to_file(pool, url, tmp_path / "f", 5) is not None
            assert (tmp_path / "f").read_bytes() == b"%05d" % n
    async with (
        scripted(lambda req, n: [_ok(b"hello", "Connection: close\r\n")]) as url,
        aclosing(WirePool()) as pool,
    ):
        assert await _get_to_file(pool, url, tmp_path / "f", 5) is not None
        assert not any(pool._idle.values())


@needs_native
async def test_get_to_file_times_out(tmp_path: Path) -> None:
    """No byte within the timeout (the larger of the call's and the pool's)."""
    async with (
        scripted(lambda req, n: []) as url,
        aclosing(WirePool(read_timeout=0.2)) as pool,
    ):
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await _get_to_file(pool, url, tmp_path / "f", 5, timeout=0.1)
        assert 0.15 < time.monotonic() - started < 5


async def test_get_to_file_not_over_tls(
    tls_pair: tuple[ssl.SSLContext, str], tmp_path: Path
) -> None:
    """Under TLS nothing is sent: None, for the caller to send it the usual way."""
    server, bundle = tls_pair
    requests: list[bytes] = []

    def script(request: bytes, n: int) -> list[bytes]:
        requests.append(request)
        return []

    async with (
        scripted(script, tls=server) as url,
        aclosing(WirePool(verify=bundle)) as pool,
    ):
        assert await _get_to_file(pool, url, tmp_path / "f", 5) is None
        assert requests == []


def test_connect_and_refusal() -> None:
    """A listening port connects; a closed one raises the connect's failure."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with wire._open_socket("127.0.0.1", port, 2.0) as sock:
            assert sock.getpeername() == ("127.0.0.1", port)
    with pytest.raises(ConnectionRefusedError):
        wire._open_socket("127.0.0.1", port, 2.0)


def test_an_ascii_host_needs_no_idna_codec() -> None:
    """The first connection imports no codec (5-6 ms before the first request)."""
    script = textwrap.dedent(
        """
        import socket, sys
        from storage_init.backends._wire import _open_socket
        with socket.create_server(("127.0.0.1", 0)) as server:
            _open_socket("localhost", server.getsockname()[1], 2.0).close()
        print("encodings.idna" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
