"""The least any Python proxy can add: a TCP relay for ``bench/gateway.py --reference``.

Each client connection gets its own connection to the upstream, and bytes are copied
both ways as they arrive: no HTTP parsing, no auth, no routing, no pooling. It runs on
uvloop (as ``modelplane serve`` does) when installed. Whatever it adds to a request's
latency on a machine is what its event loop, its two sockets and the wake-ups between
them cost there, which no Python gateway can go below.

Run: ``.venv/bin/python bench/relay.py --port 9001 --upstream 127.0.0.1:9000``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib


class _Side(asyncio.Protocol):
    """One end of a relayed pair: what it receives goes out through ``peer``."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.pending.append(data)  # the upstream connection is still opening

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


class _Client(_Side):
    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self.host, self.port = host, port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        asyncio.get_running_loop().create_task(self._open())

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(_Side, self.host, self.port)
        except OSError:
            if self.transport is not None:
                self.transport.close()
            return
        upstream.peer, self.peer = self, upstream
        for data in self.pending:
            upstream.transport.write(data)  # type: ignore[union-attr]
        self.pending.clear()


async def serve(port: int, upstream: str) -> None:
    host, _, up_port = upstream.rpartition(":")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Client(host, int(up_port)), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="host:port")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        try:
            import uvloop
        except ImportError:
            asyncio.run(serve(args.port, args.upstream))
        else:
            uvloop.run(serve(args.port, args.upstream))


if __name__ == "__main__":
    main()
