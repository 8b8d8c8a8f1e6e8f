"""Budget periods and spend: seeded from the usage table, shared through Redis by
several processes, refused past the hard stop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from modelplane.config import Settings
from modelplane.errors import BudgetExceeded
from modelplane.governance.budgets import BudgetRule, Spend, period_bounds
from modelplane.store.db import Database
from modelplane.store.governance import UsageRepo
from modelplane.store.records import Budget, Usage
from tests.coord.helpers import Backend


def test_periods_are_calendar_days_and_months_in_utc() -> None:
    at = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)
    assert period_bounds("day", at) == (
        datetime(2026, 12, 31, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert period_bounds("month", at) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert period_bounds("month", datetime(2026, 2, 10, tzinfo=UTC))[1] == datetime(
        2026, 3, 1, tzinfo=UTC
    )
    assert period_bounds("total", at) == (datetime(1970, 1, 1, tzinfo=UTC), None)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(Settings(database_url=f"sqlite:///{tmp_path / 'b.db'}").sqlalchemy_url)
    await database.migrate()
    yield database
    await database.close()


def _budget(period: str = "month", soft: float | None = None, hard: float | None = 1.0) -> Budget:
    now = datetime.now(UTC)
    return Budget("team", "t1", period, soft, hard, now, now)


def _spent(usd: float, at: datetime) -> Usage:
    return Usage(f"u{usd}{at}", at, "r", None, "t1", "m", "m", 200, 1, 1, usd, 1.0, False, False)


async def test_spend_is_seeded_from_the_usage_table_and_shared(
    db: Database, redis_url: str
) -> None:
    now = datetime.now(UTC)
    last_year = datetime(now.year - 1, 1, 1, tzinfo=UTC)
    await UsageRepo(db).add_many([_spent(0.25, now), _spent(0.5, now), _spent(9, last_year)])
    rules = {("team", "t1"): BudgetRule(_budget(soft=0.5, hard=1.0), "team 'a'")}
    backend = Backend(redis_url)
    try:
        one = Spend(backend.connect().counters, UsageRepo(db), lambda: rules)
        two = Spend(backend.connect().counters, UsageRepo(db), lambda: rules)
        await one.refresh()  # seeds the total: this month's 0.75, not last year's 9
        status = await one.status(rules["team", "t1"])
        assert status.spent_usd == pytest.approx(0.75)
        assert status.soft_exceeded and not status.hard_exceeded
        one.check("team", "t1")
        await two.add([("team", "t1"), ("key", None)], 0.25)  # another process spends
        with pytest.raises(BudgetExceeded):
            two.check("team", "t1")
        one.check("team", "t1")  # not refreshed yet: still its old copy
        await one.refresh()
        with pytest.raises(BudgetExceeded, match=r"team 'a' has spent \$1\.00 of its \$1\.00"):
            one.check("team", "t1")
        one.check("key", "anyone")  # no budget, no check
    finally:
        await backend.aclose()


async def test_a_budget_added_later_counts_what_was_spent_before(db: Database) -> None:
    rules: dict[tuple[str, str], BudgetRule] = {}
    spend = Spend(Backend("memory://").connect().counters, UsageRepo(db), lambda: rules)
    await spend.add([("team", "t1")], 5.0)  # no budget yet: nothing to add to
    await UsageRepo(db).add_many([_spent(5.0, datetime.now(UTC))])
    rules = {("team", "t1"): BudgetRule(_budget("total", hard=5.0), "team 'a'")}
    with pytest.raises(BudgetExceeded, match="until an admin raises it"):
        await spend.refresh()
        spend.check("team", "t1")
