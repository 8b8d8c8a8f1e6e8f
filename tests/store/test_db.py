"""Migrations and repositories on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from modelplane.config import Settings
from modelplane.store.db import Database
from modelplane.store.repos import DuplicateName, EndpointRepo, KeyRepo, revision


@pytest.fixture
async def db(database_url: str) -> Database:
    url = Settings(database_url=database_url).sqlalchemy_url
    database = Database(url)
    await database.migrate()
    yield database  # type: ignore[misc]
    await database.close()


async def test_migrations_create_the_schema_and_are_idempotent(db: Database) -> None:
    await db.migrate()  # a second start changes nothing
    async with db.engine.connect() as conn:
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert {"api_keys", "endpoints", "revisions", "alembic_version"} <= tables


async def test_endpoint_crud_and_revisions(db: Database) -> None:
    repo = EndpointRepo(db)
    r0 = await revision(db, "endpoints")
    ep = await repo.add(
        name="a", engine="llamacpp", model="smollm2", replicas=2, options={"n_ctx": 512}
    )
    assert ep.generation == 1 and ep.options == {"n_ctx": 512}
    assert await revision(db, "endpoints") == r0 + 1
    with pytest.raises(DuplicateName):
        await repo.add(name="a", engine="llamacpp", model="x", replicas=1, options={})
    # Scaling keeps the generation; a new spec bumps it (replicas are rolled).
    scaled = await repo.update("a", {"replicas": 3})
    assert scaled is not None and scaled.generation == 1 and scaled.replicas == 3
    respec = await repo.update("a", {"options": {"n_ctx": 1024}})
    assert respec is not None and respec.generation == 2
    assert [e.name for e in await repo.all()] == ["a"]
    assert await repo.delete("a")
    assert await repo.get("a") is None
    assert not await repo.delete("a")


async def test_keys_are_stored_hashed(db: Database) -> None:
    repo = KeyRepo(db)
    k = await repo.add(name="k", prefix="mp-abc", key_hash="f" * 64, role="member", expires_at=None)
    assert k.created_at.tzinfo is not None
    revoked = await repo.revoke(k.id)
    assert revoked is not None and revoked.revoked_at is not None
    assert await repo.revoke("missing") is None
