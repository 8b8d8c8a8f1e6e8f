"""Limits, budgets and usage records on SQLite and on the real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from modelplane.config import Settings
from modelplane.store.db import Database
from modelplane.store.governance import BudgetRepo, LimitRepo, UsageRepo
from modelplane.store.records import Usage
from modelplane.store.revisions import revision


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(Settings(database_url=database_url).sqlalchemy_url)
    await database.migrate()
    yield database
    await database.close()


async def test_limits_are_set_replaced_and_removed(db: Database) -> None:
    repo = LimitRepo(db)
    r0 = await revision(db, "limits")
    await repo.put("key", "k1", {"rpm": 5})
    await repo.put("key", "k1", {"rpm": 6, "tpm": 100})
    await repo.put("team", "t1", {"concurrency": 2})
    assert await repo.all() == {
        ("key", "k1"): {"rpm": 6, "tpm": 100},
        ("team", "t1"): {"concurrency": 2},
    }
    await repo.put("key", "k1", None)
    await repo.put("key", "missing", None)  # removing nothing changes nothing
    assert await repo.get("key", "k1") is None
    assert await revision(db, "limits") == r0 + 4


async def test_budgets_are_put_and_deleted(db: Database) -> None:
    repo = BudgetRepo(db)
    budget, created = await repo.put("team", "t1", period="month", soft_usd=5, hard_usd=10)
    assert created and budget.hard_usd == 10 and budget.created_at.tzinfo is not None
    budget, created = await repo.put("team", "t1", period="day", soft_usd=None, hard_usd=3)
    assert not created and (budget.period, budget.soft_usd) == ("day", None)
    assert [b.subject for b in await repo.all()] == ["t1"]
    assert await repo.delete("team", "t1") and not await repo.delete("team", "t1")
    assert await repo.get("team", "t1") is None


def _usage(
    i: int, at: datetime, team: str | None, key: str, endpoint: str | None, status: int = 200
) -> Usage:
    return Usage(
        f"id{i}", at, f"req{i}", key, team, "route", endpoint, status, i, 2 * i, i / 100, 10.0 * i,
        False, False,
    )  # fmt: skip


async def test_usage_is_inserted_once_and_added_up(db: Database) -> None:
    repo = UsageRepo(db)
    day1 = datetime(2026, 3, 1, 23, 59, tzinfo=UTC)
    day2 = datetime(2026, 3, 2, 2, 1, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    records = [
        _usage(1, day1, "ta", "k1", "e1"),
        _usage(2, day1, "ta", "k2", "e2", status=500),
        _usage(3, day2, "tb", "k3", "e1"),
        _usage(4, day2, None, "admin", None, status=429),
    ]
    await repo.add_many(records)
    await repo.add_many(records[:2])  # a retried batch
    # Every field reads back as written (times in UTC, to the microsecond).
    assert sorted(await repo.all(), key=lambda u: u.id) == records

    overall = (await repo.totals(None))[0]
    assert (overall.requests, overall.errors) == (4, 2)
    assert (overall.prompt_tokens, overall.completion_tokens) == (10, 20)
    assert overall.cost_usd == pytest.approx(0.1) and overall.avg_latency_ms == 25.0

    by_team = {t.group: t.requests for t in await repo.totals("team")}
    assert by_team == {"ta": 2, "tb": 1, None: 1}
    by_day = {t.group: t.requests for t in await repo.totals("day")}
    assert by_day == {"2026-03-01": 2, "2026-03-02": 2}
    by_endpoint = {t.group: t.prompt_tokens for t in await repo.totals("endpoint")}
    assert by_endpoint == {"e1": 4, "e2": 2, None: 4}
    assert [t.group for t in await repo.totals("key", team_ids=["ta"])] == ["k1", "k2"]
    assert (await repo.totals(None, team_ids=[None]))[0].requests == 1
    assert await repo.totals("team", team_ids=[]) == []
    since = await repo.totals(None, since=day2 - timedelta(seconds=30))
    assert since[0].requests == 2
    until = await repo.totals(None, until=day2 - timedelta(seconds=30))
    assert until[0].requests == 2

    assert await repo.cost_since("team", "ta", day1 - timedelta(days=1)) == pytest.approx(0.03)
    assert await repo.cost_since("team", "ta", day2) == 0
    assert await repo.cost_since("key", "k3", day1) == pytest.approx(0.03)
