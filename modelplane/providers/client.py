"""The pooled aiohttp session of a translating provider.

Each provider owns one (the OpenAI-compatible one also its ``http1`` pool), so that
the gateway hands a provider only a request and its timeouts, and a plugin provider
is free to talk to its upstream however it likes. The session is opened on first use,
inside the running event loop, and closed with the provider.
"""

from __future__ import annotations

import asyncio

import aiohttp

from modelplane.providers.base import Timeouts


class Client:
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._session
        if session is None or session.closed or self._loop is not loop:
            session = self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None),  # each request brings its own
                connector=aiohttp.TCPConnector(limit=1000, limit_per_host=0, keepalive_timeout=30),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
            self._loop = loop
        return session

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def client_timeout(timeouts: Timeouts) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(
        total=None, sock_connect=timeouts.connect_s, sock_read=timeouts.read_s
    )
