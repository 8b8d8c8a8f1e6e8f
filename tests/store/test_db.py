"""Migrations and repositories on SQLite and on the real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from modelplane.config import Settings
from modelplane.store.accounts import AccountRepo
from modelplane.store.db import MIGRATIONS, Database
from modelplane.store.repos import (
    DuplicateName,
    EndpointRepo,
    InUse,
    KeyRepo,
    TeamRepo,
)
from modelplane.store.revisions import revision, revisions


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


async def test_accounts_keys_and_teams_hold_together(db: Database) -> None:
    team = await TeamRepo(db).add("red")
    accounts, keys = AccountRepo(db), KeyRepo(db)
    before = await revisions(db, ("keys", "accounts"))
    alice = await accounts.add(
        kind="user", name="alice", email="a@x.test", team_id=team.id, role="member", created_by="t"
    )
    assert not alice.disabled and alice.label == "user:alice"
    with pytest.raises(DuplicateName):  # one namespace for users and service accounts
        await accounts.add(
            kind="service", name="alice", email=None, team_id=team.id, role="member", created_by="t"
        )
    with pytest.raises(DuplicateName):
        await accounts.add(
            kind="user",
            name="bob",
            email="a@x.test",
            team_id=team.id,
            role="member",
            created_by="t",
        )
    disabled = await accounts.update("alice", {"disabled": True})
    assert disabled is not None and disabled.disabled_at is not None
    key = await keys.add(
        name="k", prefix="mp-abc", key_hash="e" * 64, role="member", expires_at=None,
        team_id=team.id, account_id=alice.id,
    )  # fmt: skip
    assert key.account_id == alice.id
    k, a = await revisions(db, ("keys", "accounts"))
    assert (k, a) == (before[0] + 1, before[1] + 2)
    with pytest.raises(InUse):  # a team with accounts stays
        await TeamRepo(db).delete(team.id)
    assert [t.name for t in await TeamRepo(db).all()] == ["red"]
    ((was, now),) = await keys.revoke_account(alice.id)
    assert was.revoked_at is None and now.revoked_at is not None
    assert await keys.revoke_account(alice.id) == []
    assert await accounts.delete(alice.id)
    unlinked = await keys.get(key.id)
    assert unlinked is not None and unlinked.account_id is None
    assert await TeamRepo(db).delete(team.id)


def _alembic(conn: Connection, action: str, target: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    getattr(command, action)(cfg, target)


async def test_the_accounts_migration_goes_down_and_up_again(db: Database) -> None:
    def schema(c: Connection) -> tuple[set[str], set[str]]:
        i = inspect(c)
        return set(i.get_table_names()), {col["name"] for col in i.get_columns("api_keys")}

    key = await KeyRepo(db).add(
        name="k", prefix="mp-abc", key_hash="d" * 64, role="member", expires_at=None
    )
    async with db.engine.begin() as conn:
        await conn.run_sync(_alembic, "downgrade", "0005")
    async with db.engine.connect() as conn:
        tables, columns = await conn.run_sync(schema)
    assert "accounts" not in tables and "account_id" not in columns
    await db.migrate()
    async with db.engine.connect() as conn:
        tables, columns = await conn.run_sync(schema)
    assert "accounts" in tables and "account_id" in columns
    assert await KeyRepo(db).get(key.id) == key  # keys survive the round trip


async def test_the_endpoint_spec_migration_keeps_existing_endpoints(db: Database) -> None:
    async with db.engine.begin() as conn:
        await conn.run_sync(_alembic, "downgrade", "0006")
        # A row as a server before 0007 wrote it.
        await conn.execute(
            text(
                "INSERT INTO endpoints (id, name, engine, provider, model, replicas, options, "
                "team_id, shared_with, generation, created_at, updated_at) VALUES ('e1', 'old', "
                "'llamacpp', NULL, 'smollm2', 2, :options, NULL, '[\"*\"]', 3, :at, :at)"
            ),
            {"options": '{"n_ctx": 512, "limits": {"rpm": 7}}', "at": datetime.now(UTC)},
        )
    await db.migrate()
    ep = await EndpointRepo(db).get("old")
    assert ep is not None and ep.replicas == 2 and ep.generation == 3
    assert ep.options == {"n_ctx": 512, "limits": {"rpm": 7}}
    assert (ep.resources, ep.autoscaling, ep.adapters) == ({}, None, [])
    assert ep.spec.gateway.limits.rpm == 7 and ep.engine_options() == {"n_ctx": 512}
    scaled = await EndpointRepo(db).update(
        "old", {"autoscaling": {"min_replicas": 1, "max_replicas": 4}}
    )
    assert scaled is not None and scaled.generation == 3  # bounds do not roll replicas
    assert scaled.spec.autoscaling is not None and scaled.spec.autoscaling.max_replicas == 4
    sized = await EndpointRepo(db).update("old", {"resources": {"cpu": 2}})
    assert sized is not None and sized.generation == 4 and sized.spec.resources.cpu == 2
