"""A TCP proxy on 127.0.0.1 that injects faults into what a real server sends back.

It runs its own event loop in a daemon thread, so that both in-process async tests
and CLI subprocesses can go through it. Faults apply to the server-to-client byte
stream of each connection, counted from the connection's first byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class Faults:
    """What to do to each proxied connection.

    Attributes:
        flip_at: flip the byte at this offset of the response stream (once per
            connection), or None.
        max_flips: stop flipping after this many connections.
    """

    flip_at: int | None = None
    max_flips: int = 1_000_000
    flips: int = 0


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
        self._server: asyncio.Server | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        # Connections still open when the test ends are dropped with the loop.
        for task in asyncio.all_tasks(self._loop):
            task.cancel()
        self._loop.run_until_complete(asyncio.sleep(0))

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, down: bool
    ) -> None:
        seen = 0
        flipped = False
        try:
            while data := await reader.read(65536):
                flip_at = self.faults.flip_at
                if (
                    down
                    and not flipped
                    and flip_at is not None
                    and seen <= flip_at < seen + len(data)
                    and self.faults.flips < self.faults.max_flips
                ):
                    buf = bytearray(data)
                    buf[flip_at - seen] ^= 0xFF
                    data = bytes(buf)
                    flipped = True
                    self.faults.flips += 1
                seen += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pipe(reader, up_writer, down=False),
            self._pipe(up_reader, writer, down=True),
        )

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()

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
