"""Shared fixtures: databases (SQLite and the real PostgreSQL), servers, Redis URL.

PostgreSQL tests use ``MODELPLANE_TEST_POSTGRES_URL`` (default: the local server) and
get a fresh database each; they skip when the server is absent, unless
``MODELPLANE_REQUIRE_SERVICES=1`` (CI), where absence fails the run.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Server

PG_URL = os.environ.get("MODELPLANE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_SERVICES = os.environ.get("MODELPLANE_REQUIRE_SERVICES") == "1"


async def _pg(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _pg_database() -> Iterator[str]:
    name = f"mp_test_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_pg(f'CREATE DATABASE "{name}"'))
    except (TimeoutError, OSError) as exc:
        if REQUIRE_SERVICES:
            pytest.fail(
                f"PostgreSQL is required (MODELPLANE_REQUIRE_SERVICES=1) but "
                f"unreachable at {PG_URL}: {exc}"
            )
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}")
    base = PG_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each test using this runs twice: on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'modelplane.db'}"
    else:
        yield from _pg_database()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def shared_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One server with the bundled model (1 replica), shared by a module's tests; the
    module runs once on SQLite and once on PostgreSQL."""
    home = tmp_path_factory.mktemp("home")
    if request.param == "sqlite":
        yield from _serve(home, f"sqlite:///{home / 'modelplane.db'}")
    else:
        for url in _pg_database():
            yield from _serve(home, url)


def _serve(home: Path, database_url: str) -> Iterator[Server]:
    server = Server(home, database_url).start()
    try:
        resp = server.http.post(
            "/api/endpoints", json={"name": "smollm2", "model": "smollm2", "replicas": 1}
        )
        assert resp.status_code == 201, resp.text
        server.wait_ready("smollm2", 1)
        yield server
    finally:
        server.close()


REDIS_URL = os.environ.get("MODELPLANE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The real Redis (``MODELPLANE_TEST_REDIS_URL``); tests using it skip when it is
    absent, unless ``MODELPLANE_REQUIRE_SERVICES=1``, where they fail."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        if REQUIRE_SERVICES:
            pytest.fail(f"Redis is required (MODELPLANE_REQUIRE_SERVICES=1) but failed: {exc}")
        pytest.skip(f"Redis not reachable at {REDIS_URL}")
    finally:
        client.close()
    return REDIS_URL
