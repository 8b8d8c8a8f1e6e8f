"""Coordination between server processes: a TTL cache, rate-limit counters and
concurrency gauges, and pub/sub for invalidation. ``memory`` for one process, ``redis``
for many; see :mod:`modelplane.coord.base` for the contract."""

from .base import Cache, Coord, CoordError, Counters, PubSub, Slot, Subscription, Window
from .registry import create

__all__ = [
    "Cache",
    "Coord",
    "CoordError",
    "Counters",
    "PubSub",
    "Slot",
    "Subscription",
    "Window",
    "create",
]
