"""The database handle: an async engine, sessions, and migrations at start."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

MIGRATIONS = Path(__file__).parent / "migrations"

_open: ContextVar[tuple[Database, AsyncSession] | None] = ContextVar(
    "modelplane_transaction", default=None
)
"""The transaction ``Database.transaction()`` holds open for the current task."""


def utc_now() -> datetime:
    """The time rows are stamped with: everything stored is UTC."""
    return datetime.now(UTC)


def aware(dt: datetime | None) -> datetime | None:
    """A stored time as UTC: SQLite hands datetimes back without their zone."""
    return dt.replace(tzinfo=UTC) if dt is not None and dt.tzinfo is None else dt


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.engine: AsyncEngine = create_async_engine(url, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction: committed on success, rolled back on error. Inside
        ``transaction()``, that transaction's session, committed when it ends."""
        held = _open.get()
        if held is not None and held[0] is self:
            yield held[1]
            return
        async with self.sessions() as s, s.begin():
            yield s

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """One transaction for every ``session()`` opened inside the block (by any
        repository): all of their writes commit together, or none does. This is how a
        change and its audit event are written."""
        if (held := _open.get()) is not None and held[0] is self:
            yield
            return
        async with self.session() as s:
            token = _open.set((self, s))
            try:
                yield
            finally:
                _open.reset(token)

    async def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent, safe to race on PG)."""
        async with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # Several servers starting together: one migrates, the others wait.
                await conn.execute(text("SELECT pg_advisory_xact_lock(727274)"))
            await conn.run_sync(_upgrade)

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()


def _upgrade(conn: Connection) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")
