"""The revision watcher: one loop and one query a pass keep every cache of a process
current with writes made through any process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event

from modelplane.config import Settings
from modelplane.control.secrets import SecretService
from modelplane.control.snapshot import Snapshot
from modelplane.control.teams import TeamService
from modelplane.control.watcher import Watcher
from modelplane.identity import Caller
from modelplane.store.db import Database
from tests.helpers import until

ADMIN = Caller("key:test", "admin")
MASTER = "test master secret"


class Broken:
    """A subscriber whose every refresh fails."""

    watches = ("teams",)

    def __init__(self) -> None:
        self.calls = 0

    async def refresh(self, revisions: tuple[int, ...]) -> None:
        self.calls += 1
        raise RuntimeError("this cache cannot load")


@pytest.fixture
async def databases(database_url: str) -> AsyncIterator[tuple[Database, Database]]:
    """Two handles on one database: this process's, and another server process's."""
    url = Settings(database_url=database_url).sqlalchemy_url
    here, there = Database(url), Database(url)
    await here.migrate()
    try:
        yield here, there
    finally:
        await here.close()
        await there.close()


def statements(db: Database) -> list[str]:
    """Every SQL statement ``db`` runs from now on, as a list that grows."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    return seen


async def test_a_write_through_another_process_reaches_every_cache(
    databases: tuple[Database, Database],
) -> None:
    here, there = databases
    teams, secrets, broken = TeamService(here), SecretService(here, MASTER), Broken()
    await teams.start()
    await secrets.start()
    watcher = Watcher(here, interval_s=0.05)
    watcher.subscribe(teams, broken, secrets)
    watcher.start()
    try:
        await TeamService(there).create(ADMIN, "research")
        await SecretService(there, MASTER).put(ADMIN, "openai", "sk-1")
        await until(
            lambda: teams.id_of("research") and secrets.get("openai") == "sk-1",
            "both caches to see the other process's writes",
        )
        # The failing cache does not hold the others up, and is offered the change again.
        await until(lambda: broken.calls >= 3, "the failing cache to be retried")
        await SecretService(there, MASTER).put(ADMIN, "openai", "sk-2")
        await until(lambda: secrets.get("openai") == "sk-2", "the next change")
    finally:
        await watcher.close()
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "revision watcher"]


async def test_one_query_a_pass_reads_every_revision(databases: tuple[Database, Database]) -> None:
    here, there = databases
    teams, secrets = TeamService(here), SecretService(here, MASTER)
    await teams.start()
    await secrets.start()
    watcher = Watcher(here)
    watcher.subscribe(teams, secrets)
    await watcher.poll()  # the first pass offers each cache what it already has
    ran = statements(here)

    await watcher.poll()
    assert len(ran) == 1 and "FROM revisions WHERE revisions.name IN" in ran[0]

    # Another process adds a team: one query for the revisions, then only the teams.
    await TeamService(there).create(ADMIN, "research")
    ran.clear()
    await watcher.poll()
    assert teams.id_of("research") is not None
    assert "FROM revisions" in ran[0]
    assert len(ran) == 2 and "FROM teams" in ran[1]

    # A write through this process shows at once; the watcher's next pass reloads nothing.
    await secrets.put(ADMIN, "openai", "sk-1")
    assert secrets.get("openai") == "sk-1"
    ran.clear()
    await watcher.poll()
    assert len(ran) == 1 and "FROM revisions" in ran[0]


class Slow(Snapshot):
    """A snapshot whose first load reads the collection, then stalls until released."""

    collection = "teams"

    def __init__(self) -> None:
        super().__init__(None)  # type: ignore[arg-type]
        self.source = ["a"]
        self.held: list[str] = []
        self.stalled = asyncio.Event()
        self.release = asyncio.Event()

    async def load(self) -> None:
        read = list(self.source)
        if not self.stalled.is_set():
            self.stalled.set()
            await self.release.wait()
        self.held = read


async def test_a_slow_load_of_an_older_state_never_replaces_a_newer_one() -> None:
    # Two writes through one process each reload: the first reload's load is slow.
    snap = Slow()
    first = asyncio.ensure_future(snap.refresh((1,)))
    await snap.stalled.wait()
    snap.source = ["a", "b"]  # the second write
    second = asyncio.ensure_future(snap.refresh((2,)))  # runs before the first resumes
    snap.release.set()
    await asyncio.gather(first, second)
    assert snap.held == ["a", "b"]
