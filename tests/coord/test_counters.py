"""Sliding-window counters and concurrency gauges, on both backends; the window
arithmetic exactly, on the memory backend with a clock the test moves."""

from __future__ import annotations

import asyncio
import math

import pytest

from modelplane.coord import Coord
from modelplane.coord.memory import MemoryCoord
from tests.coord.helpers import Backend, eventually

FOREVER = 1e6
"""A window so long (windows are aligned to the epoch) that no test run crosses one."""


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_incr_adds_up_within_a_window(coord: Coord) -> None:
    counters = coord.counters
    assert (await counters.incr("k", 1, FOREVER)).count == 1
    assert (await counters.incr("k", 2, FOREVER)).count == 3
    got = await counters.incr("k", 3, FOREVER)
    assert got.count == 6 and got.allowed and got.retry_after_s == 0
    assert 0 < got.reset_s <= FOREVER
    assert (await counters.incr("other", 1, FOREVER)).count == 1


async def test_counts_fall_once_their_windows_pass(coord: Coord) -> None:
    first = await coord.counters.incr("k", 5, 0.2)
    assert first.count == 5 and 0 < first.reset_s <= 0.2

    async def emptied() -> bool:
        return (await coord.counters.incr("k", 0, 0.2)).count == 0

    await eventually(emptied, what="two 200 ms windows passing")


async def test_a_limit_refuses_without_adding(coord: Coord) -> None:
    counters = coord.counters
    for i in range(5):
        assert (await counters.incr("k", 1, FOREVER, limit=5)).count == i + 1
    refused = await counters.incr("k", 1, FOREVER, limit=5)
    assert not refused.allowed and refused.count == 5
    assert 0 < refused.retry_after_s <= 2 * FOREVER
    assert (await counters.incr("k", 0, FOREVER)).count == 5
    too_big = await counters.incr("fresh", 6, FOREVER, limit=5)
    assert not too_big.allowed and too_big.count == 0 and too_big.retry_after_s == math.inf


async def test_concurrent_increments_from_two_clients_are_atomic(backend: Backend) -> None:
    one, two = backend.connect(), backend.connect()
    counts = await asyncio.gather(
        *(c.counters.incr("k", 1, FOREVER) for _ in range(100) for c in (one, two))
    )
    assert sorted(w.count for w in counts) == list(range(1, 201))
    limited = await asyncio.gather(
        *(c.counters.incr("l", 1, FOREVER, limit=50) for _ in range(100) for c in (one, two))
    )
    assert sum(w.allowed for w in limited) == 50
    assert (await one.counters.incr("l", 0, FOREVER)).count == 50


async def test_window_must_be_positive(coord: Coord) -> None:
    with pytest.raises(ValueError):
        await coord.counters.incr("k", 1, 0)


async def test_sliding_window_weighs_the_previous_window() -> None:
    clock = Clock()
    counters = MemoryCoord(clock=clock).counters
    clock.now = 5.0  # halfway through window 0 of [0, 10)
    got = await counters.incr("k", 10, 10)
    assert (got.count, got.reset_s) == (10, 5.0)
    clock.now = 12.5  # a quarter into window 1: 3/4 of the previous 10 still count
    got = await counters.incr("k", 1, 10)
    assert (got.count, got.reset_s) == (9, 7.5)  # ceil(7.5 + 1)
    clock.now = 25.0  # window 2: only window 1's 1 counts, half of it
    assert (await counters.incr("k", 0, 10)).count == 1  # ceil(0.5)
    clock.now = 30.0
    assert (await counters.incr("k", 0, 10)).count == 0


async def test_retry_after_is_when_the_amount_would_fit() -> None:
    clock = Clock()
    counters = MemoryCoord(clock=clock).counters
    clock.now = 1.0
    assert (await counters.incr("k", 10, 10, limit=10)).allowed
    clock.now = 2.0
    refused = await counters.incr("k", 1, 10, limit=10)
    # Room for 1 when window 0's 10 decays to 9: 10% into window 1, at t=11.
    assert not refused.allowed and refused.retry_after_s == pytest.approx(9.0)
    clock.now = 10.9
    assert not (await counters.incr("k", 1, 10, limit=10)).allowed
    clock.now = 11.0
    assert (await counters.incr("k", 1, 10, limit=10)).allowed
    # Still in window 1, previous=10 and current=1: room for 5 more when the
    # previous window's share is down to 4, at 60% of window 1 (t=16).
    refused = await counters.incr("k", 5, 10, limit=10)
    assert refused.retry_after_s == pytest.approx(5.0)
    clock.now = 16.0
    assert (await counters.incr("k", 5, 10, limit=10)).allowed


async def test_gauge_holds_at_most_limit_slots(backend: Backend) -> None:
    one, two = backend.connect(), backend.connect()
    a = await one.counters.acquire("g", 2)
    b = await two.counters.acquire("g", 2)
    assert a and b and a != b
    assert await one.counters.acquire("g", 2) is None
    assert await one.counters.acquire("other", 1)
    await two.counters.release(a)
    await two.counters.release(a)  # twice is harmless
    c = await one.counters.acquire("g", 2)
    assert c and await two.counters.acquire("g", 2) is None


async def test_concurrent_acquires_never_exceed_the_limit(backend: Backend) -> None:
    one, two = backend.connect(), backend.connect()
    slots = await asyncio.gather(
        *(c.counters.acquire("g", 10) for _ in range(25) for c in (one, two))
    )
    assert sum(s is not None for s in slots) == 10


async def test_a_slot_never_released_frees_itself(coord: Coord) -> None:
    assert await coord.counters.acquire("g", 1, ttl_s=0.1)
    assert await coord.counters.acquire("g", 1) is None

    async def freed() -> bool:
        slot = await coord.counters.acquire("g", 1, ttl_s=0.1)
        return slot is not None

    await eventually(freed, what="a 100 ms slot expiring")


async def test_negative_amounts_give_back_but_never_below_zero(coord: Coord) -> None:
    counters = coord.counters
    assert (await counters.incr("k", 10, FOREVER, limit=10)).count == 10
    assert (await counters.incr("k", -4, FOREVER)).count == 6
    assert (await counters.incr("k", 4, FOREVER, limit=10)).allowed
    assert (await counters.incr("k", -50, FOREVER)).count == 0


async def test_totals_add_up_across_clients(backend: Backend) -> None:
    one, two = backend.connect(), backend.connect()
    got = await asyncio.gather(
        *(c.counters.add("spend", 3, ttl_s=60) for _ in range(50) for c in (one, two))
    )
    assert sorted(got) == list(range(3, 301, 3))
    assert await one.counters.totals(["spend", "missing"]) == [300, None]
    assert await two.counters.add("spend", -100, ttl_s=60) == 200
    assert await one.counters.totals([]) == []


async def test_a_seed_only_fills_a_missing_total(backend: Backend) -> None:
    one, two = backend.connect(), backend.connect()
    assert await one.counters.seed("t", 42, ttl_s=60) == 42
    assert await two.counters.seed("t", 7, ttl_s=60) == 42  # seeded already
    assert await two.counters.add("t", 1, ttl_s=60) == 43
    await one.counters.add("u", 5, ttl_s=60)
    assert await one.counters.seed("u", 100, ttl_s=60) == 5  # added first


async def test_a_total_left_alone_expires(coord: Coord) -> None:
    await coord.counters.add("t", 1, ttl_s=0.1)

    async def gone() -> bool:
        return (await coord.counters.totals(["t"])) == [None]

    await eventually(gone, what="a 100 ms total expiring")


async def test_incr_many_adds_all_or_nothing(backend: Backend) -> None:
    one, two = backend.connect(), backend.connect()
    got = await one.counters.incr_many(["a", "b"], [1, 10], FOREVER, [3, None])
    assert [(w.count, w.allowed) for w in got] == [(1, True), (10, True)]
    await one.counters.incr_many(["a", "b"], [2, 10], FOREVER, [3, None])
    refused = await two.counters.incr_many(["b", "a"], [10, 1], FOREVER, [None, 3])
    assert [(w.count, w.allowed) for w in refused] == [(20, True), (3, False)]
    assert refused[1].retry_after_s > 0
    assert (await one.counters.incr("b", 0, FOREVER)).count == 20  # nothing was added
    back = await two.counters.incr_many(["a", "b"], [-3, -50], FOREVER, [None, None])
    assert [w.count for w in back] == [0, 0]
    assert await one.counters.incr_many([], [], FOREVER, []) == []


async def test_concurrent_incr_many_never_exceed_any_limit(backend: Backend) -> None:
    one, two = backend.connect(), backend.connect()
    got = await asyncio.gather(
        *(
            c.counters.incr_many(["x", "y"], [1, 2], FOREVER, [40, 60])
            for _ in range(50)
            for c in (one, two)
        )
    )
    assert sum(all(w.allowed for w in ws) for ws in got) == 30  # y's 60 binds first
    assert (await one.counters.incr("x", 0, FOREVER)).count == 30
