"""Small ASGI helpers shared by the server and the engine server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.types import Receive

T = TypeVar("T")


async def until_disconnect(receive: Receive, work: Awaitable[T]) -> tuple[bool, T | None]:
    """Run ``work`` unless the client goes away first, in which case ``work`` is
    cancelled (which frees a model replica generating for nobody).

    Returns ``(True, result)`` when the work finished, ``(False, None)`` when the client
    left. Call it only after the request body has been read.
    """
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        return False, None
    return True, task.result()
