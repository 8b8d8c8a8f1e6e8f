"""Pub/sub for invalidation, on both backends."""

from __future__ import annotations

import asyncio

import pytest

from modelplane.coord import Coord, Subscription
from tests.coord.helpers import Backend, eventually


async def _next(sub: Subscription) -> bytes:
    async with asyncio.timeout(5):
        return await anext(aiter(sub))


async def test_every_subscriber_gets_every_message_in_order(backend: Backend) -> None:
    one, two = backend.connect(), backend.connect()
    async with await one.pubsub.subscribe("keys") as a, await two.pubsub.subscribe("keys") as b:
        await one.pubsub.publish("keys", b"revoked:1")
        await two.pubsub.publish("keys", b"revoked:2")
        for sub in (a, b):
            assert [await _next(sub), await _next(sub)] == [b"revoked:1", b"revoked:2"]


async def test_only_the_subscribed_channel_is_delivered(coord: Coord) -> None:
    async with await coord.pubsub.subscribe("a") as sub:
        await coord.pubsub.publish("b", b"not for a")
        await coord.pubsub.publish("a", b"for a")
        assert await _next(sub) == b"for a"


async def test_publishing_without_subscribers_is_fine(coord: Coord) -> None:
    await coord.pubsub.publish("nobody", b"x")


async def test_a_closed_subscription_ends_and_receives_nothing(backend: Backend) -> None:
    coord = backend.connect()
    sub = await coord.pubsub.subscribe("c")
    await sub.aclose()
    await sub.aclose()
    await coord.pubsub.publish("c", b"late")
    with pytest.raises(StopAsyncIteration):
        await _next(sub)

    async def unsubscribed() -> bool:
        return await _subscribers(backend, coord, "c") == 0

    await eventually(unsubscribed, what="the server dropping the subscription")


async def test_closing_under_a_waiting_reader_ends_its_iteration(coord: Coord) -> None:
    sub = await coord.pubsub.subscribe("c")
    received: list[bytes] = []
    first = asyncio.Event()

    async def read() -> None:
        async for message in sub:
            received.append(message)
            first.set()

    reader = asyncio.create_task(read())
    await coord.pubsub.publish("c", b"one")
    async with asyncio.timeout(5):
        await first.wait()
    await sub.aclose()
    async with asyncio.timeout(5):
        await reader  # ends quietly, no error
    assert received == [b"one"]


async def test_closing_the_coord_ends_its_subscriptions(backend: Backend) -> None:
    coord = backend.connect()
    sub = await coord.pubsub.subscribe("c")
    await coord.close()
    with pytest.raises(StopAsyncIteration):
        await _next(sub)


async def _subscribers(backend: Backend, coord: Coord, channel: str) -> int:
    if backend.kind == "memory":
        from modelplane.coord.memory import MemoryCoord

        assert isinstance(coord, MemoryCoord)
        return coord.pubsub.subscribers(channel)
    import redis.asyncio as aioredis

    raw = aioredis.Redis.from_url(backend.url)
    try:
        [(_, count)] = await raw.pubsub_numsub(backend.prefix + channel)
        return int(count)
    finally:
        await raw.aclose()
