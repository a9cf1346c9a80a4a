"""A TCP proxy on 127.0.0.1 that injects faults into a real server's traffic.

It runs its own event loop in a daemon thread, so that both in-process async tests
and CLI subprocesses can go through it. Offsets count the server-to-client bytes
of each connection from its first byte (headers included); each fault strikes at
most once per connection and at most `Faults.budget` times in all.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

_RANGE = re.compile(rb"\r\n[Rr]ange: bytes=(\d+)-(\d*)")
_REQUEST_LINE = re.compile(
    rb"(?:^|\r\n)((?:GET|HEAD|PUT|POST|DELETE) \S+) HTTP/1\.1\r\n"
)
_SLOWDOWN_BODY = (
    b"<?xml version='1.0'?><Error><Code>SlowDown</Code>"
    b"<Message>Reduce your request rate.</Message></Error>"
)
_SLOWDOWN = (
    b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
    % (len(_SLOWDOWN_BODY), _SLOWDOWN_BODY)
)


@dataclass
class Faults:
    """What to do to proxied connections.

    Attributes:
        flip_at: flip the byte at this offset of the response stream.
        reset_at: abort the connection (TCP RST) after this many bytes.
        truncate_at: close the connection cleanly (FIN) after this many bytes.
        stall_at: stop forwarding after this many bytes, until the client gives up.
        slowdown: answer this many requests with 503 SlowDown instead of forwarding.
        refuse: refuse this many connections outright (as a closed port would).
        delay: seconds each read from the server waits before it is forwarded: every
            response comes a round trip late, as from a distant store.
        budget: how many connections may be hit by flip/reset/truncate/stall.
        injected: how many faults were injected (all kinds).
        ranges: the (start, end) of every ranged request seen, in order.
        requests: the method and target of every request seen, in order (as
            text; a request line split across two reads is missed).
        connections: connections accepted.
    """

    flip_at: int | None = None
    reset_at: int | None = None
    truncate_at: int | None = None
    stall_at: int | None = None
    slowdown: int = 0
    refuse: int = 0
    delay: float = 0.0
    budget: int = 1_000_000
    injected: int = 0
    ranges: list[tuple[int, int | None]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    connections: int = 0

    def _take(self) -> bool:
        if self.budget <= 0:
            return False
        self.budget -= 1
        self.injected += 1
        return True


class FaultProxy:
    """Forward 127.0.0.1:<port> to `upstream` ("host:port"), applying `faults`."""

    def __init__(self, upstream: str, faults: Faults) -> None:
        host, port = upstream.rsplit(":", 1)
        self._upstream = (host, int(port))
        self.faults = faults
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._listener: socket.socket | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._sockets: set[socket.socket] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        self._sockets.add(listener)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._loop.add_reader(listener.fileno(), self._accept, listener)
        self._ready.set()
        self._loop.run_forever()
        # Connections still open when the test ends are closed before the loop is,
        # so that no transport is left for the garbage collector to complain about.
        for writer in self._writers:
            writer.transport.abort()
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        for _ in range(3):  # the transports' close callbacks
            self._loop.run_until_complete(asyncio.sleep(0))
        for sock in self._sockets:
            sock.close()  # a no-op for those their transports closed

    async def _upload(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while data := await reader.read(65536):
                for start, end in _RANGE.findall(data):
                    self.faults.ranges.append((int(start), int(end) if end else None))
                self.faults.requests += (
                    line.decode() for line in _REQUEST_LINE.findall(data)
                )
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _download(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        faults = self.faults
        seen = 0
        struck = False
        try:
            while data := await reader.read(65536):
                end = seen + len(data)
                for at, kind in (
                    (faults.flip_at, "flip"),
                    (faults.reset_at, "reset"),
                    (faults.truncate_at, "truncate"),
                    (faults.stall_at, "stall"),
                ):
                    if struck or at is None or not seen <= at < end:
                        continue
                    if not faults._take():
                        continue
                    struck = True
                    cut = at - seen
                    if kind == "flip":
                        buf = bytearray(data)
                        buf[cut] ^= 0xFF
                        data = bytes(buf)
                        continue
                    writer.write(data[:cut])
                    await writer.drain()
                    if kind == "reset":
                        sock = writer.get_extra_info("socket")
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        writer.transport.abort()
                    elif kind == "stall":
                        await asyncio.sleep(3600)
                    writer.close()
                    return
                seen = end
                if faults.delay:
                    await asyncio.sleep(faults.delay)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def _accept(self, listener: socket.socket) -> None:
        """Accept the connections waiting (a reader callback of the listener).

        Each socket is tracked the moment `accept` returns it, and closed at the
        end whatever its handler reached. Two ways to leak one came before this:
        asyncio's server accepts in tasks of its own, which a teardown could
        cancel between the accept and the transport; and ``loop.sock_accept``,
        cancelled at `stop` while its reader callback was already queued, accepts
        anyway and drops the socket (its future is cancelled) for the garbage
        collector, whose ResourceWarning then failed whichever test it ran in.
        Connections a client closed just before `stop` wait in the backlog, so
        that last case came up in CI.
        """
        while True:
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(False)
            self._sockets.add(conn)
            self._handlers.add(self._loop.create_task(self._serve(conn)))

    async def _serve(self, conn: socket.socket) -> None:
        reader, writer = await asyncio.open_connection(sock=conn)
        self._writers.add(writer)
        await self._handle(reader, writer)

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        faults = self.faults
        faults.connections += 1
        if faults.refuse > 0:
            faults.refuse -= 1
            faults.injected += 1
            writer.transport.abort()
            return
        if faults.slowdown > 0:
            faults.slowdown -= 1
            faults.injected += 1
            with contextlib.suppress(Exception):
                request = await reader.readuntil(b"\r\n\r\n")
                # A response to HEAD has no body (the client would take it as a
                # protocol error, not a 503).
                head_only = request.startswith(b"HEAD ")
                writer.write(
                    _SLOWDOWN.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
                    if head_only
                    else _SLOWDOWN
                )
                await writer.drain()
            writer.close()
            return
        # The upstream socket is ours from the start: a handler cancelled while it
        # connects would otherwise leave it to the garbage collector (a
        # ResourceWarning that failed an unrelated test, once in CI).
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        upstream.setblocking(False)
        self._sockets.add(upstream)
        try:
            await asyncio.get_running_loop().sock_connect(upstream, self._upstream)
            up_reader, up_writer = await asyncio.open_connection(sock=upstream)
        except OSError:
            upstream.close()
            writer.close()
            return
        self._writers.add(up_writer)
        loop = asyncio.get_running_loop()
        pipes = {
            loop.create_task(self._upload(reader, up_writer)),
            loop.create_task(self._download(up_reader, writer)),
        }
        self._handlers |= pipes
        await asyncio.gather(*pipes)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        async def close() -> None:
            assert self._listener is not None
            self._loop.remove_reader(self._listener.fileno())
            # Connections still open (a stalled body sleeps for an hour) are
            # broken off and their handlers cancelled: nothing outlives the proxy.
            for writer in self._writers:
                writer.transport.abort()
            for task in self._handlers:
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def fault_proxy(upstream_url: str, faults: Faults) -> Iterator[FaultProxy]:
    """Run a FaultProxy in front of `upstream_url` for the duration of the block."""
    proxy = FaultProxy(upstream_url.split("://", 1)[1], faults)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
