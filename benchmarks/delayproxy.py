"""A TCP proxy on 127.0.0.1 that delivers the server's bytes a fixed delay late.

    python -m benchmarks.delayproxy UPSTREAM_HOST:PORT DELAY_SECONDS

It prints the port it listens on, then forwards each connection: requests at
once, every read from the server `DELAY_SECONDS` after it arrived (in order, and
without throttling: reads keep arriving meanwhile). So each response starts a
round trip late, as from a store in another building, while a long body streams at
the server's pace. The harness puts it in front of SeaweedFS for the "away"
workload: on loopback a small GET costs no round trip, and the tool that waits on
fewer of them at once would not show.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time

#: Bytes per read from either side.
_READ = 256 * 1024


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy client bytes upstream as they come."""
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(_READ):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(Exception):
        writer.close()


async def _deliver_late(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
) -> None:
    """Copy server bytes to the client, each read `delay` s after it arrived."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def receive() -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(_READ):
                queue.put_nowait((time.monotonic() + delay, data))
        queue.put_nowait((time.monotonic() + delay, b""))

    receiving = asyncio.create_task(receive())
    try:
        while True:
            due, data = await queue.get()
            if (wait := due - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        receiving.cancel()
        with contextlib.suppress(Exception):
            writer.close()


async def _serve(upstream: tuple[str, int], delay: float) -> None:
    async def handle(
        client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*upstream)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            _forward(client_reader, server_writer),
            _deliver_late(server_reader, client_writer, delay),
        )

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    host, port = sys.argv[1].rsplit(":", 1)
    delay = float(sys.argv[2])
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve((host, int(port)), delay))


if __name__ == "__main__":
    main()
