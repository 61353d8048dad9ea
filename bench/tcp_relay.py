"""A plain TCP relay to a port on 127.0.0.1: ``bench.chaos`` forwards to loopback servers through it, and
``bench.mint`` runs it as a second RPC front end over the local chain, in a process of its own so that it can
be killed mid-run, as an RPC node dies.

    python -m bench.tcp_relay LISTEN_PORT UPSTREAM_PORT
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from contextlib import suppress

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def relay_to(target: int) -> Handler:
    """A connection handler for ``asyncio.start_server`` that pipes both ways to 127.0.0.1:``target``."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))

    return handle


async def serve(listen: int, upstream: int) -> None:
    async with await asyncio.start_server(relay_to(upstream), "127.0.0.1", listen) as listening:
        await listening.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), int(sys.argv[2])))
