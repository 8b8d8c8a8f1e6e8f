"""Every coord test runs on both backends: memory and the real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from modelplane.coord import Coord
from tests.coord.helpers import Backend


@pytest.fixture(params=["memory", "redis"])
def coord_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture
async def backend(coord_url: str) -> AsyncIterator[Backend]:
    backend = Backend(coord_url)
    try:
        yield backend
    finally:
        await backend.aclose()


@pytest.fixture
def coord(backend: Backend) -> Coord:
    return backend.connect()
