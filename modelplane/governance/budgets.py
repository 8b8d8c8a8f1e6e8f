"""Budgets: what a key or a team may spend per day, per month (calendar, UTC) or in
total, with a soft threshold (reported, and logged once) and a hard stop (requests are
refused with 429 ``insufficient_quota`` until the period ends).

Spend is kept in plain totals of the coordination backend (in nano-dollars, so cheap
models still add up), one per budget and period, so every server process sharing
Redis agrees on it. A total missing when it is read (a fresh in-memory backend after a
restart, a flushed Redis, a new budget) is seeded from the usage table: the sum of the
costs recorded in the current period.

Admission never waits on the backend: each process keeps the spend of every budget in
memory, refreshed once per ``refresh_interval_s`` and whenever it adds spend itself. A
hard stop therefore reaches the other processes within that interval, and requests
already in flight when a budget runs out still finish (a budget can be overshot by
what they cost).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from modelplane.coord import CoordError, Counters
from modelplane.errors import BudgetExceeded
from modelplane.store.governance import UsageRepo
from modelplane.store.records import Budget

log = logging.getLogger(__name__)

PERIODS = ("day", "month", "total")
NANO = 1_000_000_000
_TOTAL_TTL_S = 10 * 365 * 86400.0
_ADJECTIVE = {"day": "daily", "month": "monthly", "total": "total"}


def nano(usd: float) -> int:
    return round(usd * NANO)


def period_bounds(period: str, now: datetime) -> tuple[datetime, datetime | None]:
    """The current period's start and end (None: never ends), in UTC."""
    now = now.astimezone(UTC)
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    if period == "month":
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        year, month = divmod(start.month, 12)
        return start, start.replace(year=start.year + year, month=month + 1)
    return datetime(1970, 1, 1, tzinfo=UTC), None


@dataclass(frozen=True, slots=True)
class BudgetRule:
    """A budget and how to name its owner to a client (``team 'research'``)."""

    budget: Budget
    label: str


@dataclass(frozen=True, slots=True)
class _Current:
    """A budget's current period: its total's key, when it ends, its thresholds."""

    rule: BudgetRule
    key: str
    start: datetime
    end: datetime | None
    end_ts: float
    hard: int | None
    soft: int | None


@dataclass(frozen=True, slots=True)
class Status:
    spent_usd: float
    period_start: datetime
    resets_at: datetime | None
    soft_exceeded: bool
    hard_exceeded: bool


def _current(rule: BudgetRule, now: datetime) -> _Current:
    b = rule.budget
    start, end = period_bounds(b.period, now)
    return _Current(
        rule,
        f"spend:{b.scope}:{b.subject}:{b.period}:{start:%Y%m%d}",
        start,
        end,
        end.timestamp() if end else math.inf,
        None if b.hard_usd is None else nano(b.hard_usd),
        None if b.soft_usd is None else nano(b.soft_usd),
    )


class Spend:
    def __init__(
        self,
        counters: Counters,
        repo: UsageRepo,
        rules: Callable[[], Mapping[tuple[str, str], BudgetRule]],
        *,
        refresh_interval_s: float = 1.0,
        unwritten: Callable[[str, str, datetime], float] | None = None,
    ) -> None:
        self.counters = counters
        self.repo = repo
        self.rules = rules
        self.unwritten = unwritten
        """The cost this process recorded for a key or team since a time but has not
        written to the usage table yet (seeds count it too)."""
        self.refresh_interval_s = refresh_interval_s
        self._seen: object = None
        self._current: dict[tuple[str, str], _Current] = {}
        self._spent: dict[str, int] = {}
        self._warned: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="budget spend")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def check(self, key_id: str | None, team_id: str | None) -> None:
        """Raise :class:`BudgetExceeded` if the hard budget of the key or of the team is
        spent. No I/O: reads this process's copy of the spend."""
        self._sync()
        if not self._current:
            return
        now = time.time()
        for scope, subject in (("key", key_id), ("team", team_id)):
            cur = self._current.get((scope, subject)) if subject else None
            if cur is None or cur.hard is None or now >= cur.end_ts:
                continue
            spent = self._spent.get(cur.key, 0)
            if spent >= cur.hard:
                raise BudgetExceeded(_refusal(cur, spent))

    def tracks(self, key_id: str | None, team_id: str | None) -> bool:
        """Whether the key or the team has a budget (whose spend requests change)."""
        self._sync()
        current = self._current
        return bool(current) and (("key", key_id) in current or ("team", team_id) in current)

    async def add(self, owners: Iterable[tuple[str, str | None]], cost_usd: float) -> None:
        """Add one request's cost to the budgets of its key and team (those that exist)."""
        amount = nano(cost_usd)
        if amount <= 0:
            return
        self._sync()
        for scope, subject in owners:
            if subject is None:
                continue
            cur = self._current.get((scope, subject))
            if cur is None:
                continue
            if time.time() >= cur.end_ts:
                cur = _current(cur.rule, datetime.now(UTC))
                self._current[(scope, subject)] = cur
            try:
                if cur.key not in self._spent:  # never read here: seed it before adding
                    await self._read([cur])
                total = await self.counters.add(cur.key, amount, ttl_s=self._ttl(cur))
            except CoordError as exc:
                log.warning("spend of %s not counted: %s", cur.rule.label, exc.message)
                continue
            self._spent[cur.key] = total
            self._crossed(cur, total)

    async def status(self, rule: BudgetRule) -> Status:
        """A budget's spend in its current period, read from the backend."""
        cur = _current(rule, datetime.now(UTC))
        spent = (await self._read([cur]))[cur.key]
        return Status(
            spent / NANO,
            cur.start,
            cur.end,
            cur.soft is not None and spent >= cur.soft,
            cur.hard is not None and spent >= cur.hard,
        )

    async def refresh(self) -> None:
        """Re-read every budget's spend (seeding missing totals from the usage table)."""
        self._sync(force=True)
        current = list(self._current.values())
        spent = await self._read(current)
        self._spent = spent
        for cur in current:
            self._crossed(cur, spent[cur.key])

    async def _read(self, current: list[_Current]) -> dict[str, int]:
        keys = [cur.key for cur in current]
        values = await self.counters.totals(keys)
        out: dict[str, int] = {}
        for cur, value in zip(current, values, strict=True):
            if value is None:
                b = cur.rule.budget
                cost = await self.repo.cost_since(b.scope, b.subject, cur.start)
                if self.unwritten is not None:
                    cost += self.unwritten(b.scope, b.subject, cur.start)
                value = await self.counters.seed(cur.key, nano(cost), ttl_s=self._ttl(cur))
            out[cur.key] = value
        return out

    def _sync(self, *, force: bool = False) -> None:
        rules = self.rules()
        if rules is self._seen and not force:
            return
        now = datetime.now(UTC)
        self._current = {k: _current(rule, now) for k, rule in rules.items()}
        self._seen = rules

    def _ttl(self, cur: _Current) -> float:
        if cur.end is None:
            return _TOTAL_TTL_S
        return max(60.0, cur.end_ts - time.time()) + 86400.0

    def _crossed(self, cur: _Current, spent: int) -> None:
        if cur.soft is None or spent < cur.soft or cur.key in self._warned:
            return
        self._warned.add(cur.key)
        b = cur.rule.budget
        log.warning(
            "%s has spent $%.2f, past the soft threshold ($%.2f) of its %s budget%s",
            cur.rule.label,
            spent / NANO,
            b.soft_usd,
            _ADJECTIVE[b.period],
            f" (hard stop at ${b.hard_usd:.2f})" if b.hard_usd is not None else "",
        )

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval_s)
            try:
                await self.refresh()
            except Exception:
                log.exception("reading budget spend failed; enforcing the last known spend")


def _refusal(cur: _Current, spent: int) -> str:
    b = cur.rule.budget
    assert b.hard_usd is not None
    head = (
        f"{cur.rule.label} has spent ${spent / NANO:.2f} of its ${b.hard_usd:.2f} "
        f"{_ADJECTIVE[b.period]} budget; requests are refused"
    )
    if cur.end is None:
        return f"{head} until an admin raises it"
    when = f"{cur.end:%Y-%m-%d}" if b.period == "month" else f"{cur.end:%Y-%m-%d %H:%M} UTC"
    return f"{head} until {when} (ask an admin to raise it)"
