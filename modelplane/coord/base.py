"""The coordination contract: what server processes share besides the database.

A :class:`Coord` bundles three small parts, each with a ``memory`` implementation (one
process) and a ``redis`` one (any number of processes on any number of machines):

- :class:`Cache`: bytes under a key for a while (TTL), e.g. gateway responses.
- :class:`Counters`: sliding-window counters for rate limits, concurrency gauges
  whose slots free themselves if their holder dies, and plain totals (spend).
- :class:`PubSub`: fire-and-forget messages, e.g. "key 42 was revoked, drop it".

Every failure of the backing service surfaces as one :class:`CoordError`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self

from modelplane.errors import ModelplaneError

from .window import Window

__all__ = ["Cache", "Coord", "CoordError", "Counters", "PubSub", "Slot", "Subscription", "Window"]


class CoordError(ModelplaneError):
    """The coordination service (Redis) failed or cannot be reached. The message names
    the server without its password and says what to check."""

    status = 503
    type = "service_unavailable_error"
    code = "coord_unavailable"


@dataclass(frozen=True, slots=True)
class Slot:
    """One held slot of a concurrency gauge; give it back with :meth:`Counters.release`."""

    key: str
    token: str = field(repr=False)


class Cache(Protocol):
    """Bytes under a key, each entry with its own time to live. A cache may drop any
    entry at any time (memory pressure, eviction); entries larger than the configured
    ``max_entry_bytes`` are silently not stored."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def delete(self, key: str) -> None: ...


class Counters(Protocol):
    async def incr(
        self, key: str, amount: int, window_s: float, *, limit: int | None = None
    ) -> Window:
        """Add ``amount`` to the sliding-window counter ``key`` and return the count over
        the last ``window_s`` seconds. With ``limit``, the amount is added only if the
        count would stay within it; otherwise nothing changes, ``allowed`` is false and
        ``retry_after_s`` says when it would fit. A negative amount gives back what was
        added earlier (the current window's total never falls below 0)."""
        ...

    async def incr_many(
        self,
        keys: Sequence[str],
        amounts: Sequence[int],
        window_s: float,
        limits: Sequence[int | None],
    ) -> list[Window]:
        """:meth:`incr` on several counters at once, all or nothing (one atomic step, one
        round trip with Redis): the amounts are added only if every one fits within its
        limit. Otherwise nothing changes, and the counters without room say so
        (``allowed`` false); the others report the count they had."""
        ...

    async def acquire(self, key: str, limit: int, *, ttl_s: float = 600.0) -> Slot | None:
        """Take one of ``limit`` slots of the gauge ``key``, or None when all are held.
        A slot not released within ``ttl_s`` frees itself (its holder is presumed dead),
        so pick ``ttl_s`` above the longest request the gauge guards."""
        ...

    async def release(self, slot: Slot) -> None:
        """Give a slot back; releasing twice or after it expired is harmless."""
        ...

    async def add(self, key: str, amount: int, *, ttl_s: float) -> int:
        """Add ``amount`` to the plain total ``key`` (no window: it only grows, or
        shrinks by negative amounts) and return the new total. A missing total starts
        at 0; a total left unchanged for ``ttl_s`` seconds is dropped."""
        ...

    async def seed(self, key: str, value: int, *, ttl_s: float) -> int:
        """Set the plain total ``key`` to ``value`` unless it exists (another process
        seeded or added first), and return the total it has now."""
        ...

    async def totals(self, keys: Sequence[str]) -> list[int | None]:
        """The plain totals ``keys``, in order; None for a missing one."""
        ...


class Subscription(Protocol):
    """Messages of one channel, from the moment ``subscribe`` returned until ``aclose``.
    Also an async context manager that closes it. After a :class:`CoordError` from
    iteration the subscription is dead: messages may have been missed, so the consumer
    should treat what it derived from them as stale and subscribe again."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def __anext__(self) -> bytes: ...

    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class PubSub(Protocol):
    """At-most-once delivery to the subscribers present when a message is published."""

    async def publish(self, channel: str, message: bytes) -> None: ...

    async def subscribe(self, channel: str) -> Subscription:
        """Subscribe to ``channel``; messages published after this returns are delivered."""
        ...


class Coord(Protocol):
    @property
    def cache(self) -> Cache: ...

    @property
    def counters(self) -> Counters: ...

    @property
    def pubsub(self) -> PubSub: ...

    async def ping(self) -> None:
        """Raise :class:`CoordError` unless the backing service answers."""
        ...

    async def close(self) -> None:
        """Release connections; idempotent. Open subscriptions end."""
        ...
