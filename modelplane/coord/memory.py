"""The single-process backend: plain dicts on the event loop (no locks: no operation
awaits halfway). It is what a laptop runs; several server processes each get their
own, so limits and the cache are then per process."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self

from . import window as sliding
from .base import Slot, Window

Clock = Callable[[], float]

_SWEEP_EVERY = 1024
"""Counters and gauges drop their stale keys once every this many calls."""


class MemoryCache:
    """An LRU bounded by the total size of the stored values, whose entries also
    expire by TTL (checked when read; expired entries left unread are evicted by the
    LRU like any other)."""

    def __init__(self, *, max_bytes: int, max_entry_bytes: int, clock: Clock) -> None:
        self.max_bytes = max_bytes
        self.max_entry_bytes = min(max_entry_bytes, max_bytes)
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._size = 0

    @property
    def size(self) -> int:
        """Total bytes of the stored values."""
        return self._size

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires = entry
        if expires <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self._drop(key)
        if ttl_s <= 0 or len(value) > self.max_entry_bytes:
            return
        self._entries[key] = (bytes(value), self._clock() + ttl_s)
        self._size += len(value)
        while self._size > self.max_bytes:
            self._drop(next(iter(self._entries)))

    async def delete(self, key: str) -> None:
        self._drop(key)

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._size -= len(entry[0])


class MemoryCounters:
    def __init__(self, *, clock: Clock) -> None:
        self._clock = clock
        self._windows: dict[str, sliding.State] = {}
        self._gauges: dict[str, dict[str, float]] = {}
        self._totals: dict[str, tuple[int, float]] = {}
        self._calls = 0

    async def incr(
        self, key: str, amount: int, window_s: float, *, limit: int | None = None
    ) -> Window:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self._maybe_sweep()
        now = self._clock()
        state = sliding.roll(self._windows.get(key), window_s, now)
        self._windows[key] = state
        elapsed = now - state.index * window_s
        allowed = sliding.admit(state.previous, state.current, elapsed, window_s, amount, limit)
        if allowed:
            state.current = max(0, state.current + amount)
        return sliding.result(
            state.previous, state.current, elapsed, window_s, amount, limit, allowed
        )

    async def incr_many(
        self,
        keys: Sequence[str],
        amounts: Sequence[int],
        window_s: float,
        limits: Sequence[int | None],
    ) -> list[Window]:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        # Checked once here: ``zip(strict=True)`` parses its keyword on every call.
        if not len(keys) == len(amounts) == len(limits):
            raise ValueError("keys, amounts and limits must be as long as each other")
        self._maybe_sweep()
        now = self._clock()
        windows = self._windows
        # One pass to roll and check every counter, one to count and answer (this runs
        # for every governed request: no intermediate lists beyond these).
        states: list[sliding.State] = []
        fits: list[bool] = []
        for key, amount, limit in zip(keys, amounts, limits):  # noqa: B905
            state = windows[key] = sliding.roll(windows.get(key), window_s, now)
            states.append(state)
            elapsed = now - state.index * window_s
            fits.append(
                sliding.admit(state.previous, state.current, elapsed, window_s, amount, limit)
            )
        count = all(fits)
        out: list[Window] = []
        for state, amount, limit, fit in zip(states, amounts, limits, fits):  # noqa: B905
            if count:
                current = state.current + amount
                state.current = current if current > 0 else 0
            elapsed = now - state.index * window_s
            out.append(
                sliding.result(state.previous, state.current, elapsed, window_s, amount, limit, fit)
            )
        return out

    async def acquire(self, key: str, limit: int, *, ttl_s: float = 600.0) -> Slot | None:
        self._maybe_sweep()
        now = self._clock()
        holders = self._gauges.setdefault(key, {})
        for token in [t for t, expires in holders.items() if expires <= now]:
            del holders[token]
        if len(holders) >= limit:
            return None
        token = secrets.token_hex(8)
        holders[token] = now + ttl_s
        return Slot(key, token)

    async def release(self, slot: Slot) -> None:
        holders = self._gauges.get(slot.key)
        if holders is not None:
            holders.pop(slot.token, None)
            if not holders:
                del self._gauges[slot.key]

    async def add(self, key: str, amount: int, *, ttl_s: float) -> int:
        self._maybe_sweep()
        total = (self._total(key) or 0) + amount
        self._totals[key] = (total, self._clock() + ttl_s)
        return total

    async def seed(self, key: str, value: int, *, ttl_s: float) -> int:
        total = self._total(key)
        if total is None:
            self._totals[key] = (value, self._clock() + ttl_s)
            return value
        return total

    async def totals(self, keys: Sequence[str]) -> list[int | None]:
        return [self._total(key) for key in keys]

    def _total(self, key: str) -> int | None:
        entry = self._totals.get(key)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            del self._totals[key]
            return None
        return entry[0]

    def _maybe_sweep(self) -> None:
        self._calls += 1
        if self._calls % _SWEEP_EVERY:
            return
        now = self._clock()
        for key, state in list(self._windows.items()):
            if now >= (state.index + 2) * state.window:
                del self._windows[key]
        for key, holders in list(self._gauges.items()):
            if all(expires <= now for expires in holders.values()):
                del self._gauges[key]
        for key, (_, expires) in list(self._totals.items()):
            if expires <= now:
                del self._totals[key]


class MemorySubscription:
    def __init__(self, hub: MemoryPubSub, channel: str) -> None:
        self._hub = hub
        self._channel = channel
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._closed = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        message = await self._queue.get()
        if message is None:
            raise StopAsyncIteration
        return message

    def _deliver(self, message: bytes | None) -> None:
        self._queue.put_nowait(message)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._hub._unsubscribe(self._channel, self)
            self._deliver(None)  # wakes a reader blocked in __anext__

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class MemoryPubSub:
    def __init__(self) -> None:
        self._channels: dict[str, set[MemorySubscription]] = {}

    async def publish(self, channel: str, message: bytes) -> None:
        for sub in list(self._channels.get(channel, ())):
            sub._deliver(bytes(message))

    async def subscribe(self, channel: str) -> MemorySubscription:
        sub = MemorySubscription(self, channel)
        self._channels.setdefault(channel, set()).add(sub)
        return sub

    def subscribers(self, channel: str) -> int:
        return len(self._channels.get(channel, ()))

    def _unsubscribe(self, channel: str, sub: MemorySubscription) -> None:
        subs = self._channels.get(channel)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._channels[channel]

    def close(self) -> None:
        for subs in list(self._channels.values()):
            for sub in list(subs):
                sub._closed = True
                sub._deliver(None)
        self._channels.clear()


class MemoryCoord:
    """Everything in this process. ``clock`` (seconds, monotonic) is injectable so
    tests can move time."""

    def __init__(
        self,
        *,
        cache_max_bytes: int = 64 << 20,
        cache_max_entry_bytes: int = 1 << 20,
        clock: Clock = time.monotonic,
    ) -> None:
        self._cache = MemoryCache(
            max_bytes=cache_max_bytes, max_entry_bytes=cache_max_entry_bytes, clock=clock
        )
        self._counters = MemoryCounters(clock=clock)
        self._pubsub = MemoryPubSub()

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str, cache_max_bytes: int, cache_max_entry_bytes: int
    ) -> MemoryCoord:
        """For :func:`~modelplane.coord.create`; nothing is shared, so no prefix."""
        return cls(cache_max_bytes=cache_max_bytes, cache_max_entry_bytes=cache_max_entry_bytes)

    @property
    def cache(self) -> MemoryCache:
        return self._cache

    @property
    def counters(self) -> MemoryCounters:
        return self._counters

    @property
    def pubsub(self) -> MemoryPubSub:
        return self._pubsub

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._pubsub.close()
