"""Revision counters, one per collection. Every write to a collection bumps its counter
in the same transaction, and caches in every process compare counters to learn that
they must reload (``control/watcher.py``)."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from modelplane.store.db import Database
from modelplane.store.models import RevisionRow


async def bump(s: AsyncSession, name: str) -> None:
    """Count a write to collection ``name``, inside the transaction that writes it."""
    res = await s.execute(
        update(RevisionRow).where(RevisionRow.name == name).values(value=RevisionRow.value + 1)
    )
    if getattr(res, "rowcount", 0) == 0:
        s.add(RevisionRow(name=name, value=1))


async def revision(db: Database, name: str) -> int:
    async with db.session() as s:
        value = await s.scalar(select(RevisionRow.value).where(RevisionRow.name == name))
        return int(value or 0)


async def revisions(db: Database, names: tuple[str, ...]) -> tuple[int, ...]:
    """Several collections' revisions in one query, in the order of ``names``."""
    async with db.session() as s:
        rows = (
            await s.execute(
                select(RevisionRow.name, RevisionRow.value).where(RevisionRow.name.in_(names))
            )
        ).all()
    found = {name: int(value) for name, value in rows}
    return tuple(found.get(n, 0) for n in names)
