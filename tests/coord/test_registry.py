"""Opening a backend by URL, lazily, and Redis errors translated without secrets."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import pytest

from modelplane.coord import CoordError, create
from modelplane.coord.memory import MemoryCoord
from modelplane.coord.redis import RedisCoord


async def test_the_scheme_picks_the_backend() -> None:
    assert isinstance(create(None), MemoryCoord)
    assert isinstance(create("memory://"), MemoryCoord)
    for url in ("redis://127.0.0.1:1/0", "rediss://127.0.0.1:1", "unix:///tmp/nope.sock"):
        coord = create(url)
        assert isinstance(coord, RedisCoord)
        await coord.close()
    with pytest.raises(ValueError, match="unknown coordination backend 'mongodb://'"):
        create("mongodb://x")


def test_the_memory_backend_does_not_import_redis() -> None:
    code = (
        "import sys, modelplane.coord as c; c.create(None); "
        "assert 'redis' not in sys.modules, 'redis imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_an_unreachable_server_is_a_coord_error_without_the_password() -> None:
    coord = create("redis://:s3cret-pw@127.0.0.1:1/0")
    try:
        calls: list[Callable[[], Awaitable[object]]] = [
            coord.ping,
            lambda: coord.cache.get("k"),
            lambda: coord.counters.incr("k", 1, 1),
            lambda: coord.pubsub.subscribe("c"),
        ]
        for call in calls:
            with pytest.raises(CoordError) as info:
                await call()
            assert "s3cret-pw" not in str(info.value)
            assert "redis://127.0.0.1:1/0" in str(info.value)
            assert info.value.status == 503
    finally:
        await coord.close()


async def test_a_wrong_password_is_a_coord_error_without_the_password(redis_url: str) -> None:
    parts = urlsplit(redis_url)
    # A user that does not exist: Redis accepts any password for a default user
    # without one.
    netloc = f"mp-nobody:wr0ng-pw@{parts.hostname}:{parts.port or 6379}"
    coord = create(urlunsplit(parts._replace(netloc=netloc)))
    try:
        with pytest.raises(CoordError) as info:
            await coord.ping()
        assert "wr0ng-pw" not in str(info.value)
    finally:
        await coord.close()
