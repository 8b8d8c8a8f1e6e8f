"""The TTL cache, on both backends; LRU by bytes and exact expiry on the memory one."""

from __future__ import annotations

from modelplane.coord import Coord
from modelplane.coord.memory import MemoryCoord
from tests.coord.helpers import Backend, eventually


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_set_get_overwrite_delete(coord: Coord) -> None:
    cache = coord.cache
    assert await cache.get("k") is None
    await cache.set("k", b"\x00one\xff", 60)
    assert await cache.get("k") == b"\x00one\xff"
    await cache.set("k", b"two", 60)
    assert await cache.get("k") == b"two"
    await cache.delete("k")
    await cache.delete("never-set")
    assert await cache.get("k") is None


async def test_entries_expire_by_ttl(coord: Coord) -> None:
    await coord.cache.set("short", b"v", 0.1)
    await coord.cache.set("long", b"v", 60)
    assert await coord.cache.get("short") == b"v"

    async def gone() -> bool:
        return await coord.cache.get("short") is None

    await eventually(gone, what="expiry of a 100 ms entry")
    assert await coord.cache.get("long") == b"v"


async def test_a_zero_ttl_stores_nothing_and_drops_the_old_value(coord: Coord) -> None:
    await coord.cache.set("k", b"old", 60)
    await coord.cache.set("k", b"new", 0)
    assert await coord.cache.get("k") is None


async def test_oversized_entries_are_not_stored(backend: Backend) -> None:
    cache = backend.connect(cache_max_entry_bytes=100).cache
    await cache.set("fits", b"x" * 100, 60)
    await cache.set("too-big", b"x" * 101, 60)
    assert await cache.get("fits") == b"x" * 100
    assert await cache.get("too-big") is None


async def test_memory_cache_evicts_least_recently_used_by_bytes() -> None:
    coord = MemoryCoord(cache_max_bytes=300, cache_max_entry_bytes=200)
    cache = coord.cache
    for key in "abc":
        await cache.set(key, key.encode() * 100, 60)
    assert await cache.get("a")  # a is now the most recently used
    await cache.set("d", b"d" * 100, 60)
    assert await cache.get("b") is None
    assert [await cache.get(k) is not None for k in "acd"] == [True, True, True]
    assert cache.size == 300
    # One 200-byte entry pushes out the two least recently used (c, then a).
    await cache.get("d")
    await cache.set("e", b"e" * 200, 60)
    assert [await cache.get(k) is not None for k in "acde"] == [False, False, True, True]
    assert cache.size == 300
    await cache.set("d", b"d", 60)  # overwriting frees the old value's bytes
    assert cache.size == 201


async def test_memory_cache_expiry_follows_its_clock() -> None:
    clock = Clock()
    cache = MemoryCoord(clock=clock).cache
    await cache.set("k", b"v", 10)
    clock.now += 9.99
    assert await cache.get("k") == b"v"
    clock.now += 0.01
    assert await cache.get("k") is None
    assert cache.size == 0
