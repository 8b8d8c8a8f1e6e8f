"""Queries for governance: rate limits of keys and teams, budgets, and usage records.

Limits and budgets are small collections read whole into the gateway's in-process
snapshots (each write bumps its revision). Usage records are only ever inserted, in
batches, under ids chosen by the writer, so a batch retried after an unclear failure
(a commit whose answer was lost) never counts a request twice.
"""

from __future__ import annotations

import operator
from collections.abc import Collection, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, case, func, select

from modelplane.store.db import Database, aware, utc_now
from modelplane.store.models import BudgetRow, LimitRow, UsageRow
from modelplane.store.records import Budget, Usage
from modelplane.store.revisions import bump

GroupBy = Literal["team", "key", "endpoint", "route", "day"]
GROUPS: tuple[GroupBy, ...] = ("team", "key", "endpoint", "route", "day")


class LimitRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def all(self) -> dict[tuple[str, str], dict[str, Any]]:
        async with self.db.session() as s:
            rows = (await s.scalars(select(LimitRow))).all()
            return {(r.scope, r.subject): dict(r.spec) for r in rows}

    async def get(self, scope: str, subject: str) -> dict[str, Any] | None:
        async with self.db.session() as s:
            row = await s.get(LimitRow, (scope, subject))
            return dict(row.spec) if row else None

    async def put(self, scope: str, subject: str, spec: dict[str, Any] | None) -> None:
        """Set (or, with ``None``, remove) the limits of one key or team."""
        async with self.db.session() as s:
            row = await s.get(LimitRow, (scope, subject), with_for_update=True)
            if spec is None:
                if row is None:
                    return
                await s.delete(row)
            elif row is None:
                s.add(LimitRow(scope=scope, subject=subject, spec=spec, updated_at=utc_now()))
            else:
                row.spec, row.updated_at = spec, utc_now()
            await bump(s, "limits")


def _budget(r: BudgetRow) -> Budget:
    return Budget(
        r.scope,
        r.subject,
        r.period,
        r.soft_usd,
        r.hard_usd,
        aware(r.created_at) or utc_now(),
        aware(r.updated_at) or utc_now(),
    )


class BudgetRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def all(self) -> list[Budget]:
        async with self.db.session() as s:
            rows = (await s.scalars(select(BudgetRow))).all()
            return [_budget(r) for r in rows]

    async def get(self, scope: str, subject: str) -> Budget | None:
        async with self.db.session() as s:
            row = await s.get(BudgetRow, (scope, subject))
            return _budget(row) if row else None

    async def put(
        self,
        scope: str,
        subject: str,
        *,
        period: str,
        soft_usd: float | None,
        hard_usd: float | None,
    ) -> tuple[Budget, bool]:
        """Create or replace; returns the budget and whether it was created."""
        now = utc_now()
        async with self.db.session() as s:
            row = await s.get(BudgetRow, (scope, subject), with_for_update=True)
            created = row is None
            if row is None:
                row = BudgetRow(
                    scope=scope,
                    subject=subject,
                    period=period,
                    soft_usd=soft_usd,
                    hard_usd=hard_usd,
                    created_at=now,
                    updated_at=now,
                )
                s.add(row)
            else:
                row.period, row.soft_usd, row.hard_usd = period, soft_usd, hard_usd
                row.updated_at = now
            await s.flush()
            await bump(s, "budgets")
            return _budget(row), created

    async def delete(self, scope: str, subject: str) -> bool:
        async with self.db.session() as s:
            row = await s.get(BudgetRow, (scope, subject))
            if row is None:
                return False
            await s.delete(row)
            await bump(s, "budgets")
            return True


@dataclass(frozen=True, slots=True)
class Totals:
    """What one group of usage records adds up to."""

    group: str | None
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    avg_latency_ms: float


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


_USAGE_COLUMNS = tuple(f.name for f in fields(Usage))
"""The usage table's columns, in ``Usage``'s field order, which its rows follow too."""
_usage_values = operator.attrgetter(*_USAGE_COLUMNS)
_INSERT = (
    f"INSERT INTO usage ({', '.join(_USAGE_COLUMNS)}) VALUES ({{}}) ON CONFLICT (id) DO NOTHING"
)
_INSERT_PG = _INSERT.format(", ".join(f"${i}" for i in range(1, len(_USAGE_COLUMNS) + 1)))
_INSERT_SQLITE = _INSERT.format(", ".join("?" * len(_USAGE_COLUMNS)))


def _sqlite_time(at: datetime) -> str:
    """UTC as SQLAlchemy stores a ``DateTime`` in SQLite, so that it reads it back."""
    return _utc(at).strftime("%Y-%m-%d %H:%M:%S.%f")


_AT, _REQUEST_ID, _ROUTE = (_USAGE_COLUMNS.index(c) for c in ("at", "request_id", "route"))


def _row(r: Usage, postgres: bool) -> tuple[Any, ...]:
    """One record as the driver inserts it: its time as the dialect stores it, and the
    two free-text columns cut to their width."""
    values = list(_usage_values(r))
    values[_AT] = _utc(r.at) if postgres else _sqlite_time(r.at)
    values[_REQUEST_ID] = r.request_id[:128]
    values[_ROUTE] = r.route[:200]
    return tuple(values)


WRITE_CHUNK = 50
"""Usage rows per ``executemany`` (see ``UsageRepo.add_many``)."""


class UsageRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add_many(self, records: Sequence[Usage]) -> None:
        """Insert a batch, in one transaction; records whose id is already stored are
        skipped.

        Written as plain rows through the driver's ``executemany``: SQLAlchemy's
        per-row parameter processing cost ~25 µs a record, a sizeable share of the
        gateway's CPU per request on a small machine (bench/README.md), for a table
        whose column types need no conversion beyond the one done here. Rows go in
        chunks of ``WRITE_CHUNK``: building rows takes the event loop, and SQLite's
        ``executemany`` holds the interpreter lock in its thread between rows, so one
        500-row statement (a flush at 1,000 requests/s) stalled every request in
        flight for several ms; between chunks the requests go on."""
        if not records:
            return
        postgres = self.db.dialect == "postgresql"
        insert = _INSERT_PG if postgres else _INSERT_SQLITE
        async with self.db.session() as s:
            conn = await s.connection()
            for start in range(0, len(records), WRITE_CHUNK):
                rows = [_row(r, postgres) for r in records[start : start + WRITE_CHUNK]]
                await conn.exec_driver_sql(insert, rows)

    async def cost_since(self, scope: str, subject: str, since: datetime) -> float:
        """What a key or team spent from ``since`` on (what a budget starts from)."""
        column = UsageRow.key_id if scope == "key" else UsageRow.team_id
        async with self.db.session() as s:
            total = await s.scalar(
                select(func.coalesce(func.sum(UsageRow.cost_usd), 0.0)).where(
                    column == subject, UsageRow.at >= _utc(since)
                )
            )
            return float(total or 0.0)

    def _day(self) -> ColumnElement[Any]:
        if self.db.dialect == "postgresql":
            return func.to_char(func.timezone("UTC", UsageRow.at), "YYYY-MM-DD")
        return func.substr(UsageRow.at, 1, 10)  # SQLite stores 'YYYY-MM-DD HH:MM:SS…' (UTC)

    async def totals(
        self,
        group_by: GroupBy | None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        team_ids: Collection[str | None] | None = None,
    ) -> list[Totals]:
        """Usage added up per group (or overall, with ``group_by`` None), over records
        from ``since`` (inclusive) to ``until`` (exclusive), of the teams ``team_ids``
        (None: every team; ``None`` inside it: records of callers outside any team)."""
        c = UsageRow.metadata.tables[UsageRow.__tablename__].c
        columns: dict[str, ColumnElement[Any]] = {
            "team": c.team_id,
            "key": c.key_id,
            "endpoint": c.endpoint,
            "route": c.route,
        }
        group = None
        if group_by is not None:
            group = self._day() if group_by == "day" else columns[group_by]
        query = select(
            func.count(),
            func.coalesce(func.sum(case((UsageRow.status >= 400, 1), else_=0)), 0),
            func.coalesce(func.sum(UsageRow.prompt_tokens), 0),
            func.coalesce(func.sum(UsageRow.completion_tokens), 0),
            func.coalesce(func.sum(UsageRow.cost_usd), 0.0),
            func.coalesce(func.avg(UsageRow.latency_ms), 0.0),
        )
        if since is not None:
            query = query.where(UsageRow.at >= _utc(since))
        if until is not None:
            query = query.where(UsageRow.at < _utc(until))
        if team_ids is not None:
            ids = [t for t in team_ids if t is not None]
            matches = [UsageRow.team_id.in_(ids)] if ids else []
            if None in team_ids:
                matches.append(UsageRow.team_id.is_(None))
            if not matches:
                return []
            query = query.where(matches[0] if len(matches) == 1 else matches[0] | matches[1])
        if group is not None:
            query = query.add_columns(group.label("g")).group_by(group).order_by(group)
        async with self.db.session() as s:
            rows = (await s.execute(query)).all()
        return [
            Totals(
                None if group is None or row[6] is None else str(row[6]),
                int(row[0]),
                int(row[1]),
                int(row[2]),
                int(row[3]),
                float(row[4]),
                float(row[5]),
            )
            for row in rows
        ]

    async def all(self) -> list[Usage]:
        """Every record, oldest first (tests and exports of small installations)."""
        async with self.db.session() as s:
            rows = (await s.scalars(select(UsageRow).order_by(UsageRow.at))).all()
            return [
                Usage(
                    **{c: getattr(r, c) for c in _USAGE_COLUMNS} | {"at": aware(r.at) or utc_now()}
                )
                for r in rows
            ]
