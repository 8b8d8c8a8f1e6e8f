"""The shared part of the fake providers: an aiohttp server on loopback that records
every request it receives."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import CIMultiDictProxy

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Received:
    method: str
    raw_path: str
    query: dict[str, str]
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Fake:
    """An aiohttp server on 127.0.0.1 that records each request in ``received``; a
    subclass answers in ``handle``, according to ``scenario``."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.scenario = "ok"
        self.url = ""
        self.app = web.Application(middlewares=[self._record])
        self.app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner: web.AppRunner | None = None

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()
        self.received.append(
            Received(request.method, request.raw_path, dict(request.query), request.headers, body)
        )
        return await handler(request)

    @property
    def last(self) -> Received:
        return self.received[-1]

    async def start(self) -> Fake:
        self._runner = web.AppRunner(self.app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    async def stream(
        self, request: web.Request, content_type: str, pieces: Iterable[bytes], *, cut: bool = False
    ) -> web.StreamResponse:
        """Write ``pieces`` split at awkward places; ``cut`` drops the connection instead of
        ending the body."""
        resp = web.StreamResponse(headers={"content-type": content_type})
        await resp.prepare(request)
        for piece in pieces:
            half = max(1, len(piece) // 3)
            await resp.write(piece[:half])
            await resp.write(piece[half:])
        if cut:
            assert request.transport is not None
            request.transport.close()
            return resp
        await resp.write_eof()
        return resp
