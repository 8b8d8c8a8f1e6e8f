"""Clients of one coordination backend for a test, on memory or on the real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from modelplane.coord import Coord, create


class Backend:
    """``connect()`` gives a client of one shared state: the same memory coord each
    time, or a new Redis client under a prefix unique to the test (so parallel runs do
    not collide), whose keys are deleted by ``aclose()``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.kind = "memory" if url.startswith("memory") else "redis"
        self.prefix = f"mp-test-{uuid.uuid4().hex[:12]}:"
        self._clients: list[Coord] = []

    def connect(self, **options: Any) -> Coord:
        if self.kind == "memory" and self._clients:
            return self._clients[0]
        coord = create(self.url, prefix=self.prefix, **options)
        self._clients.append(coord)
        return coord

    async def aclose(self) -> None:
        for coord in self._clients:
            await coord.close()
        if self.kind == "redis":
            raw = aioredis.Redis.from_url(self.url)
            try:
                keys = [key async for key in raw.scan_iter(match=f"{self.prefix}*")]
                if keys:
                    await raw.delete(*keys)
            finally:
                await raw.aclose()


async def eventually(
    check: Callable[[], Awaitable[Any]], within: float = 5.0, what: str = "condition"
) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``within`` seconds."""
    got: Any = None
    try:
        async with asyncio.timeout(within):
            while True:
                got = await check()
                if got:
                    return got
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"{what} not reached within {within}s (last: {got!r})") from None
