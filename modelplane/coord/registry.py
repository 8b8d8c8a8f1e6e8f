"""Open a :class:`Coord` from a URL: the scheme names the backend, which is imported
only when used (so the memory backend never needs the ``redis`` package).

``None`` or ``memory://`` → :class:`~modelplane.coord.memory.MemoryCoord`;
``redis://``, ``rediss://`` (TLS) and ``unix://`` →
:class:`~modelplane.coord.redis.RedisCoord`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from modelplane.plugins import Registry

from .base import Coord

BACKENDS: Registry[Any] = Registry("coordination backend", group="modelplane.coord")
"""URL scheme → the backend's class; each has a ``from_url`` taking the keyword
arguments of :func:`create`."""
for _scheme, _path in (
    ("memory", "modelplane.coord.memory:MemoryCoord"),
    ("redis", "modelplane.coord.redis:RedisCoord"),
    ("rediss", "modelplane.coord.redis:RedisCoord"),
    ("unix", "modelplane.coord.redis:RedisCoord"),
):
    BACKENDS.register(_scheme, _path)


def create(
    url: str | None = None,
    *,
    prefix: str = "mp:",
    cache_max_bytes: int = 64 << 20,
    cache_max_entry_bytes: int = 1 << 20,
) -> Coord:
    """The coordination backend for ``url``. ``prefix`` namespaces the Redis keys and
    channels (several deployments can share one server); ``cache_max_bytes`` bounds the
    memory cache (Redis is bounded by its own ``maxmemory``); entries over
    ``cache_max_entry_bytes`` are not cached by either."""
    scheme = urlsplit(url).scheme if url else "memory"
    if scheme not in BACKENDS:
        known = ", ".join(f"{name}://" for name in BACKENDS.names())
        raise ValueError(f"unknown coordination backend '{scheme}://'; use one of {known}")
    backend = BACKENDS.get(scheme)
    coord: Coord = backend.from_url(
        url or "memory://",
        prefix=prefix,
        cache_max_bytes=cache_max_bytes,
        cache_max_entry_bytes=cache_max_entry_bytes,
    )
    return coord
